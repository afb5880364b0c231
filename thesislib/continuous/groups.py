"""Coupled channel groups of a network, found automatically with torch-pruning's DependencyGraph.

A *group* is a set of tensor axes that must keep the same number of channels, in the same order:
the output axis of a convolution, the BatchNorm after it, the input axis of the next layer and,
through residual additions, every other layer writing into or reading from the same stream.
Resampling a group to ``m`` channels resamples all its member axes together.

**Why torch-pruning's DependencyGraph and not torch.fx.** The DependencyGraph traces the autograd
graph of one forward pass, so it sees the operations that really ran (residual adds, ``torch.cat``,
``flatten``, reshapes, elementwise multiplications of squeeze-excitation) whatever Python control
flow produced them, and it already knows how channels propagate through convolutions (including
depthwise ones, whose input and output channels are coupled), BatchNorm, LayerNorm, Linear layers
and free parameters such as a ViT's ``cls_token``/``pos_embed``. torch.fx symbolic tracing breaks
on data-dependent shapes and many transformer forwards (TorchIntegral's issue #25) and would need
all of that channel bookkeeping re-implemented. Where the DependencyGraph is wrong or too coarse
we do not trust it blindly:

* attention blocks (``thesislib.models.vit.Attention`` and ``nn.MultiheadAttention``) are
  registered as leaf modules with a customised pruner, so the graph only couples their input
  (``qkv``/``in_proj_weight`` columns) and output (``proj``/``out_proj`` rows) with the residual
  stream; the inner axes (heads, per-head dimension) become their own groups here
  (:func:`attention_groups`);
* a group is kept only if every member axis has exactly the group's size and the group has at
  least one consumer and does not reach the network output. This rejects channel mappings that
  are not one-to-one (``PixelShuffle``, which the graph couples 1:1 although ``r^2`` channels
  become one; a ``flatten`` over space before a Linear layer; a ``torch.cat`` of several groups)
  -- such groups simply stay discrete (listed in ``ContinuousNet.discrete_groups`` with the reason);
* a module type we cannot represent raises a ``ValueError`` naming it and its path, unless the
  caller asks to keep it discrete. Free parameters of container modules (a ViT's ``cls_token``,
  ``pos_embed``) are taken as the graph reports them: sampled along the axis it couples.

Depthwise convolutions (``groups == in == out``) are per-channel operations: their weights are
``"producer"`` members of the group of their input (sampled, no quadrature: nothing is summed over
channels) and ``groups`` follows the width. A grouped convolution
with ``1 < g < channels`` groups makes the groups it touches *blocked*: their ``g * c`` channels are
``g`` blocks of one continuous axis of ``c`` control points (the same permutation and resampling in
every block), so the convolution keeps ``g`` groups of ``width`` channels each; its own weight's
input axis (``c`` per group) is a plain member. Grouped transposed convolutions are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from thesislib.dependency import dependency_graph

ROLES = ("producer", "consumer", "norm")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SUPPORTED_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                   "Linear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm",
                   "thesislib.models.vit.Attention", "MultiheadAttention (self-attention layout, no bias_k/v)",
                   "PReLU(num_parameters=1)")


@dataclass(frozen=True)
class GroupMember:
    """One axis of one tensor in a channel group.

    ``module_name``/``param_name`` address the tensor in the original network (``param_name`` is
    ``"weight"``, ``"bias"``, ``"running_mean"``, ...); ``dim`` is the channel axis of the tensor as
    returned by :meth:`ContinuousNet.group_tensors`; ``role`` is ``"producer"`` (output channels:
    sampled), ``"consumer"`` (input channels summed over: sampled with quadrature weights) or
    ``"norm"`` (per-channel parameters such as BatchNorm's: sampled). ``view`` is empty for plain
    tensors; for attention it names the view of the tensor whose ``dim`` is meant: ``"q"``, ``"k"``,
    ``"v"`` (that third of ``qkv``'s rows as ``[heads, head_dim, *rest]``) or ``"proj"``
    (``proj.weight`` as ``[out, heads, head_dim]``). ``blocks > 1`` (groups touching a grouped
    convolution with that many groups): the tensor's axis holds ``blocks`` consecutive copies of the
    group's axis (``[blocks, size]``), each resampled alike; :meth:`ContinuousNet.group_tensors`
    returns such a tensor with that axis as ``[size, blocks]`` so ``dim`` still indexes channels.
    """

    module_name: str
    param_name: str
    dim: int
    role: str
    view: str = ""
    blocks: int = 1

    @property
    def path(self) -> str:
        return f"{self.module_name}.{self.param_name}" if self.module_name else self.param_name


@dataclass
class ChannelGroup:
    """Coupled axes resampled together: ``size`` control points (the original channel count),
    ``width`` current samples."""

    name: str
    size: int
    width: int
    members: list[GroupMember] = field(default_factory=list)


@dataclass
class AttrRule:
    """A module attribute that follows a group's width (``kind``: ``"int"``, ``"tuple"``)."""

    module_name: str
    attr: str
    group: str
    kind: str = "int"
    factor: int = 1


def is_vit_attention(module: nn.Module) -> bool:
    """``thesislib.models.vit.Attention``-like: ``qkv``/``proj`` Linear layers, ``num_heads``, ``head_dim``."""
    return (isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "proj", None), nn.Linear)
            and isinstance(getattr(module, "num_heads", None), int) and isinstance(getattr(module, "head_dim", None), int)
            and module.qkv.out_features == 3 * module.num_heads * module.head_dim
            and module.proj.in_features == module.num_heads * module.head_dim)


def is_mha(module: nn.Module) -> bool:
    """A ``nn.MultiheadAttention`` we can make continuous: packed q/k/v projection, no ``bias_k``/``bias_v``."""
    return (isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim and module.bias_k is None
            and module.in_proj_weight is not None)


def _is_depthwise(m: nn.Module) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _param_names(module: nn.Module) -> list[str]:
    """Direct parameter names of a module, seeing through parametrisations (``weight`` for spectral_norm)."""
    names = list(module._parameters)
    if parametrize.is_parametrized(module):
        names += list(module.parametrizations.keys())
    return [n for n in names if getattr(module, n, None) is not None]


def check_supported(net: nn.Module, keep_discrete: Iterable[str] = ()) -> None:
    """Raise a ValueError naming the first module with parameters we cannot represent."""
    keep = tuple(keep_discrete)
    attention_inner: set[str] = set()
    for name, m in net.named_modules():
        pre = f"{name}." if name else ""
        if is_vit_attention(m):
            attention_inner.update({f"{pre}qkv", f"{pre}proj"})
        kept = any(name == k or name.startswith(k + ".") for k in keep)
        if is_mha(m):
            attention_inner.update({name, f"{pre}out_proj"})
        elif isinstance(m, nn.MultiheadAttention) and not kept:
            raise ValueError(f"module {name!r} (MultiheadAttention) uses separate k/v dimensions or bias_k/bias_v, "
                             f"which cannot be represented continuously. Pass keep_discrete=({name!r},) to keep it discrete.")
    for name, m in net.named_modules():
        if any(name == k or name.startswith(k + ".") for k in keep) or name in attention_inner:
            continue
        if isinstance(m, parametrize.ParametrizationList) or ".parametrizations" in f".{name}":
            continue
        own = [p for p in m._parameters.values() if p is not None]
        if not own:
            continue
        ok = False
        if isinstance(m, _CONV + _CONVT):
            ok = m.groups == 1 or not isinstance(m, _CONVT) and (
                _is_depthwise(m) or m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0)
            if not ok:
                raise ValueError(
                    f"module {name!r} ({type(m).__name__}, groups={m.groups}) is a grouped transposed convolution "
                    f"(or a grouped convolution with a depth multiplier); only groups=1, grouped Conv and depthwise "
                    f"convolutions can be continuous. Pass keep_discrete=({name!r},) to keep it discrete.")
        elif isinstance(m, nn.LayerNorm):
            ok = len(m.normalized_shape) == 1
        elif isinstance(m, (nn.Linear,) + _BN):
            ok = True
        elif isinstance(m, nn.PReLU):
            ok = m.num_parameters == 1
        elif parametrize.is_parametrized(m):
            ok = False
        elif not any(True for _ in m.children()):
            ok = False
        else:
            ok = True  # a container holding free parameters (cls_token, pos_embed): handled as unwrapped
        if not ok:
            raise ValueError(
                f"module {name!r} of type {type(m).__name__} cannot be represented continuously; supported: "
                f"{', '.join(SUPPORTED_TYPES)}. Pass keep_discrete=({name!r},) to keep it (and the channel "
                f"groups it touches) discrete.")


def _attention_pruner():
    """A torch-pruning pruner that makes an attention module a leaf with in = out = embedding dim."""
    from torch_pruning.pruner.function import BasePruningFunc

    class AttentionLeaf(BasePruningFunc):
        TARGET_MODULES = None

        def prune_out_channels(self, layer, idxs):  # never called: we only read the graph
            return layer

        def prune_in_channels(self, layer, idxs):
            return layer

        def get_out_channels(self, layer):
            return layer.embed_dim if isinstance(layer, nn.MultiheadAttention) else layer.proj.out_features

        def get_in_channels(self, layer):
            return layer.embed_dim if isinstance(layer, nn.MultiheadAttention) else layer.qkv.in_features

    return AttentionLeaf()


def _members_of(module: Any, name: str, is_out: bool, n: int, attn_modules: set) -> tuple[list[GroupMember], list[AttrRule]]:
    """Member axes and attribute rules of one DependencyGraph node in a group of size ``n``."""
    members: list[GroupMember] = []
    rules: list[AttrRule] = []
    if isinstance(module, _CONVT):
        if is_out:
            members.append(GroupMember(name, "weight", 1, "producer"))
            if module.bias is not None:
                members.append(GroupMember(name, "bias", 0, "producer"))
            rules.append(AttrRule(name, "out_channels", ""))
        else:
            members.append(GroupMember(name, "weight", 0, "consumer"))
            rules.append(AttrRule(name, "in_channels", ""))
    elif isinstance(module, _CONV):
        if _is_depthwise(module):
            members.append(GroupMember(name, "weight", 0, "producer"))
            if module.bias is not None:
                members.append(GroupMember(name, "bias", 0, "producer"))
            rules += [AttrRule(name, a, "") for a in ("in_channels", "out_channels", "groups")]
        elif is_out:
            members.append(GroupMember(name, "weight", 0, "producer"))
            if module.bias is not None:
                members.append(GroupMember(name, "bias", 0, "producer"))
            rules.append(AttrRule(name, "out_channels", ""))
        else:
            members.append(GroupMember(name, "weight", 1, "consumer"))
            rules.append(AttrRule(name, "in_channels", ""))
    elif isinstance(module, nn.Linear):
        if is_out:
            members.append(GroupMember(name, "weight", 0, "producer"))
            if module.bias is not None:
                members.append(GroupMember(name, "bias", 0, "producer"))
            rules.append(AttrRule(name, "out_features", ""))
        else:
            members.append(GroupMember(name, "weight", 1, "consumer"))
            rules.append(AttrRule(name, "in_features", ""))
    elif isinstance(module, _BN):
        for p in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, p, None) is not None:
                members.append(GroupMember(name, p, 0, "norm"))
        rules.append(AttrRule(name, "num_features", ""))
    elif isinstance(module, nn.LayerNorm):
        for p in ("weight", "bias"):
            if getattr(module, p, None) is not None:
                members.append(GroupMember(name, p, 0, "norm"))
        rules.append(AttrRule(name, "normalized_shape", "", kind="tuple"))
    elif module in attn_modules and is_vit_attention(module):
        pre = f"{name}." if name else ""
        if is_out:
            members.append(GroupMember(f"{pre}proj", "weight", 0, "producer"))
            if module.proj.bias is not None:
                members.append(GroupMember(f"{pre}proj", "bias", 0, "producer"))
            rules.append(AttrRule(f"{pre}proj", "out_features", ""))
        else:
            members.append(GroupMember(f"{pre}qkv", "weight", 1, "consumer"))
            rules.append(AttrRule(f"{pre}qkv", "in_features", ""))
    elif isinstance(module, nn.MultiheadAttention) and module in attn_modules:
        pre = f"{name}." if name else ""
        if is_out:
            members.append(GroupMember(f"{pre}out_proj", "weight", 0, "producer"))
            if module.out_proj.bias is not None:
                members.append(GroupMember(f"{pre}out_proj", "bias", 0, "producer"))
            rules.append(AttrRule(f"{pre}out_proj", "out_features", ""))
        else:
            members.append(GroupMember(name, "in_proj_weight", 1, "consumer"))
            rules += [AttrRule(name, a, "") for a in ("embed_dim", "kdim", "vdim")]
    elif isinstance(module, nn.Module) and not list(module.parameters()) and not list(module.buffers()):
        pass  # a torch-pruning pseudo-op (elementwise, reshape, concat ...) or a parameter-free layer
    else:
        raise _Unsupported(f"{name or type(module).__name__} ({type(module).__name__})")
    return members, rules


class _Unsupported(Exception):
    pass


@dataclass
class GroupSearch:
    """What :func:`find_groups` found: continuous groups, attribute rules, and groups left discrete."""

    groups: list[ChannelGroup]
    rules: list[AttrRule]
    discrete: dict[str, str]


def find_groups(net: nn.Module, example_inputs: Any, keep_discrete: Iterable[str] = ()) -> GroupSearch:
    """Channel groups of ``net`` (traced once on ``example_inputs`` in eval mode, no state changes)."""
    from torch_pruning import ops as tp_ops

    keep = tuple(keep_discrete)
    check_supported(net, keep)
    was_training = net.training
    net.eval()
    attn_modules = {m for m in net.modules() if is_vit_attention(m) or is_mha(m)}
    leaf = _attention_pruner()
    customized = {t: leaf for t in {type(m) for m in attn_modules}}
    dg = dependency_graph(net, example_inputs, customized_pruners=customized or None, verbose=False)
    net.train(was_training)
    names = {m: n for n, m in net.named_modules()}
    unwrapped_dim = {id(u.parameters): u.pruning_dim for u in dg.unwrapped_parameters}
    keep_modules = {m for n, m in net.named_modules() if any(n == k or n.startswith(k + ".") for k in keep)}

    groups: list[ChannelGroup] = []
    rules: list[AttrRule] = []
    discrete: dict[str, str] = {}
    for g in dg.get_all_groups(root_module_types=(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                                                  nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
                                + tuple(type(m) for m in attn_modules)):
        root = g[0].dep.target.module
        gname = names.get(root, "?")
        n = dg.get_out_channels(root)
        members: list[GroupMember] = []
        grules: list[AttrRule] = []
        reason = ""
        for dep, idxs in g:
            mod = dep.target.module
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            if isinstance(mod, tp_ops._OutputOp):
                reason = "its channels are (part of) the network output"
                break
            if len(idxs) != n or list(idxs) != list(range(n)):
                reason = f"{names.get(mod, type(mod).__name__)} maps channels non-trivially"
                break
            if mod in keep_modules:
                reason = f"{names[mod]!r} is kept discrete"
                break
            if isinstance(mod, nn.Parameter):
                pname = dg._param_to_name[mod]
                dim = unwrapped_dim.get(id(mod), mod.dim() - 1)
                mod_name, _, attr = pname.rpartition(".")
                members.append(GroupMember(mod_name, attr, dim, "norm"))
                continue
            try:
                ms, rs = _members_of(mod, names.get(mod, ""), is_out, n, attn_modules)
            except _Unsupported as e:
                reason = f"unsupported member {e}"
                break
            for m in ms:
                if m not in members:
                    members.append(m)
            for r in rs:
                r.group = gname
                if r not in grules:
                    grules.append(r)
        blocks = 1
        if not reason:
            grouped = {names.get(dep.target.module): dep.target.module.groups for dep, _ in g
                       if isinstance(dep.target.module, _CONV) and dep.target.module.groups > 1
                       and not _is_depthwise(dep.target.module)}
            if len(set(grouped.values())) > 1:
                reason = f"grouped convolutions with different numbers of groups share it: {grouped}"
            elif grouped:
                blocks = next(iter(grouped.values()))
                if n % blocks:
                    reason = f"{n} channels do not split into {blocks} groups"
                else:
                    members = [m if (m.module_name in grouped and m.param_name == "weight" and m.role == "consumer")
                               else GroupMember(m.module_name, m.param_name, m.dim, m.role, m.view, blocks)
                               for m in members]
                    grules = [AttrRule(r.module_name, r.attr, r.group, r.kind, blocks) for r in grules]
        size = n // blocks
        if not reason:
            if not any(m.role == "consumer" for m in members):
                reason = "no layer sums over its channels (no consumer)"
            else:
                for m in members:
                    t = _get_tensor(net, m)
                    if t is None or t.shape[m.dim] != m.blocks * size:
                        reason = f"{m.path} has {None if t is None else t.shape[m.dim]} channels, not {m.blocks * size}"
                        break
        if reason:
            discrete[gname] = reason
            continue
        groups.append(ChannelGroup(gname, size, size, members))
        rules += grules
    return GroupSearch(groups, rules, discrete)


def _get_tensor(net: nn.Module, member: GroupMember) -> torch.Tensor | None:
    module = net.get_submodule(member.module_name) if member.module_name else net
    if parametrize.is_parametrized(module, member.param_name):
        return getattr(module.parametrizations, member.param_name).original
    return getattr(module, member.param_name, None)


def attention_groups(net: nn.Module, keep_discrete: Iterable[str] = ()) -> tuple[list[ChannelGroup], list[AttrRule]]:
    """Head and head-dimension groups of every ViT attention block.

    ``<attn>.heads`` (size ``num_heads``): the head axis of the q, k, v rows (producers) and of
    ``proj``'s input (consumer, summed over heads). ``<attn>.head_dim`` (size ``head_dim``): the
    per-head axis of q (producer) and k (consumer: ``q . k`` sums over it, so k carries the
    quadrature weights and the logit scale stays that of the original ``head_dim``), of v
    (producer) and of ``proj``'s input (consumer). q/k and v/proj are two coupled pairs; they share
    one width because ``Attention`` uses one ``head_dim``.

    ``nn.MultiheadAttention`` gets only ``<mha>.head_dim``: its projections have ``embed_dim`` rows, so
    ``heads * head_dim`` must equal the embedding width; the number of heads stays and ``head_dim``
    follows the embedding group (``ContinuousNet`` links the two widths).
    """
    keep = tuple(keep_discrete)
    groups: list[ChannelGroup] = []
    for name, m in net.named_modules():
        if not is_vit_attention(m) or any(name == k or name.startswith(k + ".") for k in keep):
            continue
        pre = f"{name}." if name else ""
        qkv, proj = f"{pre}qkv", f"{pre}proj"
        heads: list[GroupMember] = []
        hdim: list[GroupMember] = []
        for sec, dim_role in (("q", "producer"), ("k", "consumer"), ("v", "producer")):
            heads.append(GroupMember(qkv, "weight", 0, "producer", sec))
            hdim.append(GroupMember(qkv, "weight", 1, dim_role, sec))
            if m.qkv.bias is not None:
                heads.append(GroupMember(qkv, "bias", 0, "producer", sec))
                hdim.append(GroupMember(qkv, "bias", 1, dim_role, sec))
        heads.append(GroupMember(proj, "weight", 1, "consumer", "proj"))
        hdim.append(GroupMember(proj, "weight", 2, "consumer", "proj"))
        groups.append(ChannelGroup(f"{pre}heads", m.num_heads, m.num_heads, heads))
        groups.append(ChannelGroup(f"{pre}head_dim", m.head_dim, m.head_dim, hdim))
    for name, m in net.named_modules():
        if not is_mha(m) or any(name == k or name.startswith(k + ".") for k in keep):
            continue
        pre = f"{name}." if name else ""
        hdim = []
        for sec, dim_role in (("q", "producer"), ("k", "consumer"), ("v", "producer")):
            hdim.append(GroupMember(name, "in_proj_weight", 1, dim_role, sec))
            if m.in_proj_bias is not None:
                hdim.append(GroupMember(name, "in_proj_bias", 1, dim_role, sec))
        hdim.append(GroupMember(f"{pre}out_proj", "weight", 2, "consumer", "proj"))
        groups.append(ChannelGroup(f"{pre}head_dim", m.head_dim, m.head_dim, hdim))
    return groups, []
