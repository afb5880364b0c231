"""Coupled channel groups and their physical removal.

Groups are found by torch-pruning's :class:`~torch_pruning.DependencyGraph` (Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023): every Conv/Linear output channel axis together with every
tensor axis that must shrink with it (BatchNorm/LayerNorm, the inputs of consuming layers, residual
additions).  Each group is turned into a :class:`ChannelGroup` whose members say, for every *root*
channel ``c`` (``0 <= c < size``), which indices of which tensor axis belong to it, so that the
importance, reconstruction and merging code never touches torch-pruning internals.

Removal goes through the same DependencyGraph (``DG.get_pruning_group(...).prune()``) except where
torch-pruning 1.6.1 is wrong, which this module works around:

* attention: the DependencyGraph cannot follow ``qkv -> reshape -> attention -> proj`` and leaves the
  ``num_heads``/``head_dim`` attributes stale.  :class:`thesislib.models.vit.Attention` blocks get a
  hand-made per-block head-dimension group (the same number of dimensions kept in every head; q, k and
  v rows of ``qkv`` and the columns of ``proj`` removed together) and their attributes are updated;
  the softmax scale is frozen at ``1/sqrt(original head_dim)`` so that removing dimensions does not
  also rescale the logits;
* in-place activations (``nn.ReLU(inplace=True)`` right after a convolution, as in SRCNN) replace the
  output's ``grad_fn`` that torch-pruning's tracer maps back to the convolution, so the graph silently
  loses those layers and finds no group at all; tracing runs with ``inplace=False`` (restored after);
* ``torch.nn.utils.parametrizations.spectral_norm``: torch-pruning crashes on parametrised weights
  (``KeyError: attribute 'weight' already exists``).  The parametrisation is taken off (keeping the
  normalised weight ``W/σ``), the layer is pruned as a plain layer and spectral_norm is registered
  again; since spectral normalisation is scale invariant this equals pruning ``original`` and
  re-normalising, and the pruned layer keeps ``σ(W) ≈ 1``.

Groups that touch an ignored layer's *output* channels are not prunable (the classifier's logits, the
SR tail, a ViT's residual stream through ``patch_embed``, convolutions feeding ``nn.PixelShuffle``,
whose channel mapping torch-pruning 1.6.1 gets wrong).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import parametrize

from thesislib.dependency import dependency_graph

ROLES = ("producer", "consumer", "norm")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass
class Member:
    """One tensor axis of a channel group.

    ``local[c]`` lists the indices along ``axis`` of this module's weight that belong to root channel ``c``
    (a Linear after a flatten owns several input columns per channel).
    """

    module: nn.Module
    name: str
    role: str  # "producer" | "consumer" | "norm"
    axis: int  # channel axis of ``module.weight``
    local: list[list[int]]

    def tensors(self) -> list[tuple[str, torch.Tensor, int]]:
        """(parameter or buffer name, tensor, channel axis) of every tensor of this member that the group cuts."""
        out: list[tuple[str, torch.Tensor, int]] = []
        if getattr(self.module, "weight", None) is not None:
            out.append(("weight", self.module.weight, self.axis))
        if self.role in ("producer", "norm") and getattr(self.module, "bias", None) is not None:
            out.append(("bias", self.module.bias, 0))
        if self.role == "norm" and isinstance(self.module, nn.modules.batchnorm._BatchNorm):
            if self.module.running_mean is not None:
                out += [("running_mean", self.module.running_mean, 0), ("running_var", self.module.running_var, 0)]
        return out

    def index(self, size: int, length: int, device: torch.device) -> torch.Tensor:
        """For each index along the axis (``length`` of them), its root channel; ``size`` for unmapped ones."""
        key = (size, length, str(device))
        cache = self.__dict__.setdefault("_index_cache", {})
        if key not in cache:
            flat = [i for idxs in self.local for i in idxs]
            owner = [c for c, idxs in enumerate(self.local) for _ in idxs]
            root = torch.full((length,), size, dtype=torch.long)
            root[torch.tensor(flat, dtype=torch.long)] = torch.tensor(owner, dtype=torch.long)
            cache[key] = root.to(device)
        return cache[key]

    def reduce(self, values: torch.Tensor, axis: int, size: int) -> torch.Tensor:
        """Sum ``values`` (shaped like one of this member's tensors) over everything but its channel axis,
        then over the local indices of each root channel: a ``[size]`` vector."""
        per_index = values.movedim(axis, 0).reshape(values.shape[axis], -1).sum(1)
        out = torch.zeros(size + 1, dtype=per_index.dtype, device=per_index.device)
        out.scatter_add_(0, self.index(size, per_index.numel(), per_index.device), per_index)
        return out[:size]


@dataclass
class ChannelGroup:
    """Coupled channels pruned together: ``size`` root channels, ``members`` the tensor axes they cut.

    ``partitions`` split the root channels into blocks that must keep the same count each (one per head
    for attention head dimensions; one block otherwise).
    """

    name: str
    size: int
    members: list[Member]
    partitions: list[list[int]]
    root: nn.Module | None = None  # torch-pruning root module (None for attention groups)
    root_handler: object = None
    attention: nn.Module | None = None

    def by_role(self, role: str) -> list[Member]:
        return [m for m in self.members if m.role == role]

    def kept_counts(self, ratio: float) -> list[int]:
        """Channels kept per partition: ``max(1, round(ratio * n))`` (the rule of ``cnet.resample``)."""
        return [max(1, round(ratio * len(p))) for p in self.partitions]


@dataclass
class Plan:
    """What a pruning method decided for one group: the channels kept and optionally, for merging, the
    channels folded into each kept one (``clusters[i]`` merges into ``keep[i]``)."""

    keep: list[int]
    clusters: list[list[int]] | None = None


@dataclass
class Structure:
    """A model, its DependencyGraph and its prunable channel groups."""

    model: nn.Module
    graph: tp.DependencyGraph
    groups: list[ChannelGroup] = field(default_factory=list)
    spectral: list[tuple[nn.Module, dict]] = field(default_factory=list)

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise ValueError(f"unknown group {name!r}; groups: {', '.join(g.name for g in self.groups)}")


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from thesislib.models.vit import Attention

    return [(n, m) for n, m in model.named_modules() if isinstance(m, Attention)]


def default_ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels are never pruned.

    The last Conv/Linear in module order (classifier head, SR tail), convolutions right before an
    ``nn.PixelShuffle`` inside a Sequential, and for ViTs the ``patch_embed`` (the residual stream,
    shared by cls token and positional embedding) and every attention ``qkv`` (handled separately).
    """
    ignored: list[nn.Module] = []
    last = None
    for m in model.modules():
        if isinstance(m, (nn.Linear,) + _CONV):
            last = m
        if isinstance(m, nn.Sequential):
            children = list(m.children())
            for a, b in zip(children, children[1:]):
                if isinstance(b, nn.PixelShuffle) and isinstance(a, _CONV):
                    ignored.append(a)
    if last is not None:
        ignored.append(last)
    attention = _attention_modules(model)
    if attention:
        for _, a in attention:
            ignored.append(a.qkv)
        embed = getattr(model, "patch_embed", None)
        if isinstance(embed, nn.Module):
            ignored.append(embed)
    return ignored


def strip_spectral_norm(model: nn.Module) -> list[tuple[nn.Module, dict]]:
    """Remove every ``spectral_norm`` parametrisation, keeping the normalised weight; return what to restore."""
    removed: list[tuple[nn.Module, dict]] = []
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations["weight"]:
                if type(p).__name__ != "_SpectralNorm":
                    raise ValueError(f"cannot prune {type(m).__name__} with a {type(p).__name__} parametrisation; "
                                     "only spectral_norm is supported")
            sn = m.parametrizations["weight"][0]
            removed.append((m, {"n_power_iterations": sn.n_power_iterations, "eps": sn.eps, "dim": sn.dim}))
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return removed


def restore_spectral_norm(removed: Iterable[tuple[nn.Module, dict]]) -> None:
    """Register spectral_norm again (power iteration re-estimates σ of the smaller weight)."""
    for m, kwargs in removed:
        torch.nn.utils.parametrizations.spectral_norm(m, **kwargs)


def _role(module: nn.Module, handler, graph: tp.DependencyGraph) -> tuple[str, int] | None:
    transposed = isinstance(module, _CONV) and getattr(module, "transposed", False)
    if isinstance(module, (nn.Linear,) + _CONV):
        if graph.is_out_channel_pruning_fn(handler):
            return "producer", 1 if transposed else 0
        if graph.is_in_channel_pruning_fn(handler):
            return "consumer", 0 if transposed else 1
        return None
    if isinstance(module, _NORMS):
        return "norm", 0
    return None


def _convert(group: tp.dependency.Group, graph: tp.DependencyGraph, names: dict) -> ChannelGroup | None:
    root_item = group[0]
    size = len(root_item.idxs)
    members: list[Member] = []
    for item in group.items:
        module = item.dep.target.module
        if not isinstance(module, nn.Module):
            continue
        role = _role(module, item.dep.handler, graph)
        if role is None:
            continue
        if isinstance(module, _CONV) and module.groups != 1:
            return None  # grouped / depthwise convolutions: not supported by these baselines
        local: list[list[int]] = [[] for _ in range(size)]
        for i, r in zip(item.idxs, item.root_idxs):
            if r is None:
                continue
            local[r].append(int(i))
        length = module.weight.shape[role[1]] if getattr(module, "weight", None) is not None else None
        if length is not None and any(i >= length for idxs in local for i in idxs):
            return None  # an index mapping torch-pruning got wrong (e.g. through PixelShuffle)
        members.append(Member(module, names.get(module, type(module).__name__), role[0], role[1], local))
    if not any(m.role == "producer" for m in members):
        return None
    name = names.get(root_item.dep.target.module, "group")
    return ChannelGroup(name=name, size=size, members=members, partitions=[list(range(size))],
                        root=root_item.dep.target.module, root_handler=root_item.dep.handler)


ATTENTION_UNITS = ("head_dim", "heads")


def _attention_group(name: str, attn: nn.Module, unit: str) -> ChannelGroup:
    """Hand-made group of one attention block: per-head dimensions (``unit="head_dim"``, the same count kept
    in every head) or whole heads (``unit="heads"``); q, k, v rows of ``qkv`` and ``proj`` columns together."""
    heads, hd = attn.num_heads, attn.head_dim
    inner = heads * hd
    if unit == "head_dim":
        cols = [[c] for c in range(inner)]
        partitions = [list(range(h * hd, (h + 1) * hd)) for h in range(heads)]
    else:
        cols = [list(range(h * hd, (h + 1) * hd)) for h in range(heads)]
        partitions = [list(range(heads))]
    rows = [[part * inner + c for part in range(3) for c in cs] for cs in cols]
    qkv = Member(attn.qkv, f"{name}.qkv", "producer", 0, rows)
    proj = Member(attn.proj, f"{name}.proj", "consumer", 1, cols)
    return ChannelGroup(name=f"{name}.{unit}", size=len(cols), members=[qkv, proj], partitions=partitions,
                        attention=attn)


def analyse(model: nn.Module, example_inputs, ignored_layers: Sequence[nn.Module] | None = None,
            attention: str = "head_dim") -> Structure:
    """Build the DependencyGraph of ``model`` (in place: spectral_norm is stripped) and list its prunable groups.

    ``attention`` chooses what attention blocks lose: per-head dimensions (``"head_dim"``) or whole heads.
    """
    if attention not in ATTENTION_UNITS:
        raise ValueError(f"attention must be one of {ATTENTION_UNITS}, got {attention!r}")
    spectral = strip_spectral_norm(model)
    ignored = list(default_ignored_layers(model) if ignored_layers is None else ignored_layers)
    ignored += [a.qkv for _, a in _attention_modules(model) if a.qkv not in ignored]
    graph = dependency_graph(model, example_inputs)  # traces with in-place activations disabled
    names = {m: n for n, m in model.named_modules()}
    groups: list[ChannelGroup] = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Linear,) + _CONV):
        converted = _convert(group, graph, names)
        if converted is not None:
            groups.append(converted)
    user_ignored = list(ignored_layers or [])
    for name, attn in _attention_modules(model):
        if not any(attn is m or attn.proj is m for m in user_ignored):
            groups.append(_attention_group(name, attn, attention))
    return Structure(model=model, graph=graph, groups=groups, spectral=spectral)


@torch.no_grad()
def apply_merge(group: ChannelGroup, plan: Plan) -> None:
    """Fold each cluster into its kept channel: producer and norm tensors averaged, consumer inputs summed."""
    if plan.clusters is None:
        return
    for member in group.members:
        for pname, tensor, axis in member.tensors():
            t = tensor.data.movedim(axis, 0)
            for keep, cluster in zip(plan.keep, plan.clusters):
                if len(cluster) <= 1:
                    continue
                for j in range(len(member.local[keep])):
                    rows = [member.local[c][j] for c in cluster]
                    block = t[rows]
                    t[member.local[keep][j]] = block.sum(0) if member.role == "consumer" else block.mean(0)


def _slice_linear(layer: nn.Linear, axis: int, keep: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data.index_select(axis, keep.to(layer.weight.device)).clone())
    if axis == 0:
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.data.index_select(0, keep.to(layer.bias.device)).clone())
        layer.out_features = keep.numel()
    else:
        layer.in_features = keep.numel()


def remove_channels(structure: Structure, group: ChannelGroup, keep: Sequence[int]) -> None:
    """Physically remove every root channel of ``group`` not in ``keep`` (modules edited in place)."""
    keep_sorted = sorted(set(int(k) for k in keep))
    drop = [c for c in range(group.size) if c not in set(keep_sorted)]
    if not drop:
        return
    if group.attention is not None:
        attn = group.attention
        counts = [sum(1 for k in keep_sorted if k in set(p)) for p in group.partitions]
        if len(set(counts)) != 1:
            raise ValueError(f"{group.name}: every head must keep the same number of dimensions, got {counts}")
        qkv, proj = group.members
        rows = []
        for part in range(3):
            for k in keep_sorted:
                width = len(qkv.local[k]) // 3
                rows += qkv.local[k][part * width:(part + 1) * width]
        _slice_linear(attn.qkv, 0, torch.tensor(rows))
        _slice_linear(attn.proj, 1, torch.tensor([c for k in keep_sorted for c in proj.local[k]]))
        if attn.scale is None:  # keep the logit scale of the trained model
            attn.scale = 1.0 / math.sqrt(attn.head_dim)
        if group.name.endswith(".heads"):
            attn.num_heads = len(keep_sorted)
        else:
            attn.head_dim = counts[0]
        return
    pruning_group = structure.graph.get_pruning_group(group.root, group.root_handler, drop)
    pruning_group.prune()


def channel_counts(model: nn.Module, example_inputs, ignored_layers=None, attention: str = "head_dim") -> dict[str, int]:
    """Current size of every prunable group of ``model`` (analysed on a copy)."""
    import copy

    s = analyse(copy.deepcopy(model), example_inputs, ignored_layers, attention)
    return {g.name: g.size for g in s.groups}
