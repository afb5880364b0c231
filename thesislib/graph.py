"""The channel-group model of thesislib: coupled channel axes traced once, used by every method.

A *channel group* is a set of tensor axes that must keep the same channels: the output axis of a
convolution, the BatchNorm after it, the input axis of the next layer and, through residual
additions, every other layer writing into or reading from the same stream. ``thesislib.continuous``
samples a group's axes (one continuous axis per group), ``thesislib.pruning`` removes channels from
them; both read the groups from this module and add only their own policy.

**Tracing.** Groups come from torch-pruning's ``DependencyGraph`` (Fang et al., "DepGraph: Towards
Any Structural Pruning", CVPR 2023), which traces the autograd graph of one forward pass: it sees
the operations that really ran (residual adds, ``torch.cat``, ``flatten``, squeeze-excitation
products) whatever Python control flow produced them, and knows how channels propagate through
convolutions, norms, Linear layers and free parameters (a ViT's ``cls_token``). torch.fx symbolic
tracing breaks on data-dependent shapes and many transformer forwards. :func:`dependency_graph`
works around three faults of torch-pruning 1.6:

* in-place activations (``nn.ReLU(inplace=True)`` right after a convolution, as in SRCNN) replace
  the output's ``grad_fn`` that torch-pruning maps back to the convolution, so the graph silently
  loses those layers; tracing runs with ``inplace=False`` (restored afterwards, also on errors);
* a reshape whose channel count it infers as 0 (ShuffleNet's channel shuffle) ends the build in a
  ``ZeroDivisionError``; such a reshape gets no index mapping, and every group through it, or through
  a reshape that splits an activation's channel axis (which torch-pruning maps as the identity), is
  marked as not one-to-one (:attr:`ChannelGroup.reason`);
* an example input the network cannot run raises a ``ValueError`` saying so, not an error from
  inside the trace.

**Members.** One :class:`Member` is one axis of one tensor (module path, parameter name, axis,
:class:`Role`, attention view, grouped-convolution blocks) with ``local``, the indices along the
axis that belong to each root channel (a Linear after a flatten owns several input columns per
channel). Attention blocks (``thesislib.models.vit.Attention``-like modules, recognised by
:func:`is_vit_attention`, and ``nn.MultiheadAttention``, :func:`is_mha`) are leaves of the trace;
their inner axes (heads, per-head dimension) are groups of their own built by
:func:`attention_group`. Spectral normalisation is found by :func:`spectral_norms`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize


class Role(str, Enum):
    """How a tensor axis takes part in a channel group.

    ``PRODUCER``: output channels (sampled / removed); ``CONSUMER``: input channels summed over (sampled
    with quadrature weights / removed, the target of reconstruction); ``NORM``: per-channel parameters
    and statistics (BatchNorm, LayerNorm, free parameters) that follow the group.
    """

    PRODUCER = "producer"
    CONSUMER = "consumer"
    NORM = "norm"


ROLES: tuple[Role, ...] = tuple(Role)


def keep_count(ratio: float, size: int) -> int:
    """Channels kept of ``size`` at kept ratio ``ratio``: ``max(1, round(ratio * size))``, the one rule of
    ``ContinuousNet.resample``, ``prune`` and the width multipliers."""
    return max(1, round(ratio * size))


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SUPPORTED_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                   "Linear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm",
                   "thesislib.models.vit.Attention", "MultiheadAttention (self-attention layout, no bias_k/v)",
                   "PReLU(num_parameters=1)")


def within(name: str, prefixes: Iterable[str]) -> bool:
    """Whether module path ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == k or name.startswith(k + ".") for k in prefixes)


# ---------------------------------------------------------------------------------------------- tracing
@contextmanager
def inplace_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily set ``inplace=False`` on every module of ``model`` that has ``inplace=True``."""
    modules = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in modules:
        m.inplace = False
    try:
        yield
    finally:
        for m in modules:
            m.inplace = True


def _install_reshape_guard() -> None:
    """torch-pruning's reshape index mapping (run in every ``build_dependency`` and ``get_pruning_group``)
    divides by an inferred channel count that can be 0 and maps a channel shuffle's views, or the token
    reshapes of a Swin window attention, as flattens (wrong, and with index lists that take minutes to
    build); guarded once per process here, a reshape of other than a 1-/2-/4-D tensor keeps no mapping
    (the rule torch-pruning applies itself when autograd saved the input sizes), and a channel shuffle
    or a failed mapping is recorded in its graph's ``unmapped_reshapes`` (:func:`trace` marks its groups)."""
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping
    if getattr(original, "thesislib_guard", False):
        return

    def guarded(graph, node):
        shapes = _shape_in_out(node.grad_fn)
        if shapes is not None and _splits_channel_axis(*shapes):
            graph.__dict__.setdefault("unmapped_reshapes", set()).add(node)
            return None  # a channel shuffle: torch-pruning's flatten mapping would be wrong (and explode)
        if shapes is not None and len(shapes[0]) not in (1, 2, 4):
            return None  # token reshapes: torch-pruning maps only 2-D/4-D tensors (its own rule when it sees the sizes)
        try:
            return original(graph, node)
        except ZeroDivisionError:
            graph.__dict__.setdefault("unmapped_reshapes", set()).add(node)
            return None

    guarded.thesislib_guard = True
    index_mapping.update_reshape_index_mapping = guarded

    flatten_call = index_mapping._FlattenIndexMapping.__call__

    def bounded(self, idxs):
        if not self.reverse and len(idxs) * self._stride > _MAX_FLATTEN_INDICES:
            raise ValueError(f"a flatten index mapping of {len(idxs)} x {self._stride} indices (torch-pruning reads "
                             f"a token reshape as a flatten)")
        return flatten_call(self, idxs)

    index_mapping._FlattenIndexMapping.__call__ = bounded


_MAX_FLATTEN_INDICES = 1 << 16  # a conv -> flatten -> Linear of channels x positions (VGG at 224 px: 25088)


def _inputs_tuple(example_inputs: Any) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def check_runs(model: nn.Module, example_inputs: Any) -> None:
    """``ValueError`` when ``model`` cannot run on ``example_inputs`` (too small an image, wrong channels)."""
    try:
        with torch.no_grad(), inplace_disabled(model):
            model(*_inputs_tuple(example_inputs))
    except Exception as err:  # noqa: BLE001 -- any failure of the user's forward is reported as bad input
        shapes = [tuple(t.shape) for t in _inputs_tuple(example_inputs) if isinstance(t, torch.Tensor)]
        raise ValueError(f"the network does not run on example_inputs of shape {shapes}: "
                         f"{type(err).__name__}: {err}. Pass an input the network accepts "
                         f"(e.g. a larger image or the right number of channels).") from err


def dependency_graph(model: nn.Module, example_inputs: Any, **kwargs: Any):
    """``tp.DependencyGraph().build_dependency(model, example_inputs, **kwargs)`` traced with in-place
    activations disabled, the reshape guard installed and torch-pruning's tracing warnings silenced; gradients
    are enabled for the trace (the graph is read from autograd)."""
    import torch_pruning as tp

    _install_reshape_guard()
    with inplace_disabled(model), warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, **kwargs)


# ---------------------------------------------------------------------------------------------- attention
def is_vit_attention(module: nn.Module) -> bool:
    """``thesislib.models.vit.Attention``-like: ``qkv``/``proj`` Linear layers, ``num_heads``, ``head_dim``
    (qkv rows ``[3, heads, head_dim]``, proj columns ``[heads, head_dim]``)."""
    return (isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "proj", None), nn.Linear)
            and isinstance(getattr(module, "num_heads", None), int) and isinstance(getattr(module, "head_dim", None), int)
            and module.qkv.out_features == 3 * module.num_heads * module.head_dim
            and module.proj.in_features == module.num_heads * module.head_dim)


def is_mha(module: nn.Module) -> bool:
    """A ``nn.MultiheadAttention`` we can represent: packed q/k/v projection, no ``bias_k``/``bias_v``."""
    return (isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim and module.bias_k is None
            and module.in_proj_weight is not None)


@dataclass(frozen=True)
class AttentionBlock:
    """One multi-head attention module: ``kind`` ``"vit"`` (:func:`is_vit_attention`, free heads and
    head dimension) or ``"mha"`` (:func:`is_mha`, ``heads * head_dim`` = the embedding width)."""

    name: str
    kind: str
    num_heads: int
    head_dim: int
    module: nn.Module = field(compare=False, repr=False)

    @property
    def prefix(self) -> str:
        return f"{self.name}." if self.name else ""

    @property
    def qkv(self) -> tuple[str, str, str | None]:
        """(module path, weight name, bias name or None) of the packed q/k/v projection."""
        if self.kind == "vit":
            return f"{self.prefix}qkv", "weight", "bias" if self.module.qkv.bias is not None else None
        return self.name, "in_proj_weight", "in_proj_bias" if self.module.in_proj_bias is not None else None

    @property
    def proj(self) -> str:
        """Module path of the output projection."""
        return f"{self.prefix}proj" if self.kind == "vit" else f"{self.prefix}out_proj"


def attention_blocks(model: nn.Module, keep_discrete: Iterable[str] = ()) -> list[AttentionBlock]:
    """Every attention block of ``model`` (outside ``keep_discrete``), in module order."""
    keep = tuple(keep_discrete)
    out = []
    for name, m in model.named_modules():
        if within(name, keep):
            continue
        if is_vit_attention(m):
            out.append(AttentionBlock(name, "vit", m.num_heads, m.head_dim, m))
        elif is_mha(m):
            out.append(AttentionBlock(name, "mha", m.num_heads, m.head_dim, m))
    return out


ATTENTION_AXES = ("heads", "head_dim")


def attention_group(block: AttentionBlock, axis: str, per_head: bool = False) -> "ChannelGroup":
    """The group of one attention axis, named ``<block>.<axis>``: q, k, v rows of the packed projection
    (producers, views ``"q"``, ``"k"``, ``"v"`` shaped ``[heads, head_dim, ...]``) and the output
    projection's columns (consumer, view ``"proj"`` shaped ``[out, heads, head_dim]``).

    ``axis="heads"``: ``num_heads`` root channels (whole heads); ``axis="head_dim"``: ``head_dim`` root
    channels, each the same dimension in every head. ``per_head=True`` (``head_dim`` only): the
    ``num_heads * head_dim`` dimensions as root channels ``h * head_dim + d`` with one partition per
    head, so every head keeps the same count of its own dimensions (``dim`` is then the head axis of
    the view: the channel axis is the view's head and head-dim axes flattened).
    """
    if axis not in ATTENTION_AXES:
        raise ValueError(f"attention axis must be one of {ATTENTION_AXES}, got {axis!r}")
    if per_head and axis != "head_dim":
        raise ValueError("per_head applies to the head_dim axis only")
    heads, hd = block.num_heads, block.head_dim
    inner = heads * hd
    if axis == "heads":
        cols = [[h * hd + d for d in range(hd)] for h in range(heads)]
        partitions = [list(range(heads))]
    elif per_head:
        cols = [[c] for c in range(inner)]
        partitions = [list(range(h * hd, (h + 1) * hd)) for h in range(heads)]
    else:
        cols = [[h * hd + d for h in range(heads)] for d in range(hd)]
        partitions = [list(range(hd))]
    vdim = 0 if axis == "heads" or per_head else 1  # the axis in a [heads, head_dim, ...] view
    qkv, weight, bias = block.qkv
    vit = block.kind == "vit"
    qkv_module = block.module.qkv if vit else block.module
    proj_module = block.module.proj if vit else block.module.out_proj
    members = []
    for s, view in enumerate("qkv"):
        rows = tuple(tuple(s * inner + c for c in cs) for cs in cols)
        for pname in (weight, bias):
            if pname is not None:
                members.append(Member(qkv, pname, vdim, Role.PRODUCER, view, local=rows, module=qkv_module))
    members.append(Member(block.proj, "weight", vdim + 1, Role.CONSUMER, "proj", local=tuple(map(tuple, cols)),
                          module=proj_module))
    return ChannelGroup(f"{block.prefix}{axis}", len(cols), members, partitions=partitions, attention=block)


def _attention_pruner():
    """A torch-pruning pruner that makes a vit-style attention block a leaf with in = out = embedding dim
    (its inner axes are :func:`attention_group`'s); removal slices ``qkv`` columns / ``proj`` rows."""
    from torch_pruning.pruner.function import BasePruningFunc

    class AttentionLeaf(BasePruningFunc):
        TARGET_MODULES = None

        def prune_out_channels(self, layer, idxs):
            keep = sorted(set(range(layer.proj.out_features)) - set(idxs))
            layer.proj.weight = self._prune_parameter_and_grad(layer.proj.weight, keep, 0)
            if layer.proj.bias is not None:
                layer.proj.bias = self._prune_parameter_and_grad(layer.proj.bias, keep, 0)
            layer.proj.out_features = len(keep)
            return layer

        def prune_in_channels(self, layer, idxs):
            keep = sorted(set(range(layer.qkv.in_features)) - set(idxs))
            layer.qkv.weight = self._prune_parameter_and_grad(layer.qkv.weight, keep, 1)
            layer.qkv.in_features = len(keep)
            return layer

        def get_out_channels(self, layer):
            return layer.proj.out_features

        def get_in_channels(self, layer):
            return layer.qkv.in_features

    return AttentionLeaf()


# ---------------------------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class Member:
    """One axis of one tensor in a channel group.

    ``module_name``/``param_name`` address the tensor in the network (``param_name`` is ``"weight"``,
    ``"bias"``, ``"running_mean"``, ...); ``dim`` is its channel axis (of the attention view when
    ``view`` is set); ``role`` a :class:`Role`. ``view`` is empty for plain tensors; for attention it
    names the view ``dim`` refers to: ``"q"``, ``"k"``, ``"v"`` (that third of the packed rows as
    ``[heads, head_dim, *rest]``) or ``"proj"`` (the output projection's weight as ``[out, heads,
    head_dim]``). ``blocks > 1`` (groups touching a grouped convolution with that many groups): the
    axis holds ``blocks`` consecutive copies of the group's axis. ``local[c]`` lists the indices along
    the physical axis :attr:`axis` that belong to root channel ``c`` (``None``: index ``c`` itself).
    ``free``: a parameter of no layer (torch-pruning's unwrapped parameters: ``cls_token``, ``pos_embed``).
    ``module`` is the module holding the tensor (not part of equality).
    """

    module_name: str
    param_name: str
    dim: int
    role: Role
    view: str = ""
    blocks: int = 1
    local: tuple[tuple[int, ...], ...] | None = None
    free: bool = False
    module: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> str:
        return f"{self.module_name}.{self.param_name}" if self.module_name else self.param_name

    @property
    def axis(self) -> int:
        """The channel axis of the physical tensor (``dim`` unless an attention view splits it)."""
        if self.view in ("q", "k", "v"):
            return 0
        if self.view == "proj":
            return 1
        return self.dim

    def tensor(self) -> torch.Tensor | None:
        """The tensor (``original`` of a parametrised one) in :attr:`module`."""
        if self.module is None:
            return None
        if parametrize.is_parametrized(self.module, self.param_name):
            return getattr(self.module.parametrizations, self.param_name).original
        return getattr(self.module, self.param_name, None)

    def indices(self, size: int) -> list[list[int]]:
        """``local`` as lists (the identity map ``[[0], [1], ...]`` when it is ``None``)."""
        return [[c] for c in range(size)] if self.local is None else [list(i) for i in self.local]

    def index(self, size: int, length: int, device: torch.device) -> torch.Tensor:
        """For each index along the axis (``length`` of them), its root channel; ``size`` for unmapped ones."""
        key = (size, length, str(device))
        cache = self.__dict__.setdefault("_index_cache", {})
        if key not in cache:
            local = self.indices(size)
            flat = [i for idxs in local for i in idxs]
            owner = [c for c, idxs in enumerate(local) for _ in idxs]
            root = torch.full((length,), size, dtype=torch.long)
            root[torch.tensor(flat, dtype=torch.long)] = torch.tensor(owner, dtype=torch.long)
            cache[key] = root.to(device)
        return cache[key]

    def reduce(self, values: torch.Tensor, axis: int, size: int) -> torch.Tensor:
        """Sum ``values`` (shaped like this member's tensor) over everything but ``axis``, then over the
        local indices of each root channel: a ``[size]`` vector."""
        per_index = values.movedim(axis, 0).reshape(values.shape[axis], -1).sum(1)
        out = torch.zeros(size + 1, dtype=per_index.dtype, device=per_index.device)
        out.scatter_add_(0, self.index(size, per_index.numel(), per_index.device), per_index)
        return out[:size]


@dataclass
class AttrRule:
    """A module attribute that follows a group's width (``kind``: ``"int"``, ``"tuple"``), times ``factor``."""

    module_name: str
    attr: str
    group: str
    kind: str = "int"
    factor: int = 1


@dataclass
class ChannelGroup:
    """Coupled channel axes: ``size`` root channels, ``members`` the tensor axes they cut.

    ``width`` is the current sample count (``thesislib.continuous``); ``partitions`` split the root
    channels into blocks that keep the same count each (one per head for per-head attention
    dimensions, one block otherwise). ``rules`` are the attributes that follow the width; ``modules``
    every module the group touches, ``outputs`` those whose output channels it is; ``conv_groups`` the grouped/depthwise convolutions among them
    (``{name: groups}``); ``reason`` says why the group is not one axis of the same channels everywhere
    (``""`` when it is); ``root``/``root_handler`` the torch-pruning root, ``attention`` the block of an
    attention group.
    """

    name: str
    size: int
    members: list[Member] = field(default_factory=list)
    width: int = 0
    partitions: list[list[int]] = field(default_factory=list)
    rules: list[AttrRule] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    conv_groups: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    root: nn.Module | None = field(default=None, repr=False)
    root_handler: Any = field(default=None, repr=False)
    attention: AttentionBlock | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.width:
            self.width = self.size
        if not self.partitions:
            self.partitions = [list(range(self.size))]

    def by_role(self, role: Role | str) -> list[Member]:
        return [m for m in self.members if m.role == role]

    def weights(self, role: Role | str) -> list[Member]:
        """One member per layer (and attention view) with ``role``: its weight (else its first tensor)."""
        seen: dict[tuple[str, str], Member] = {}
        for m in self.by_role(role):
            key = (m.module_name, m.view)
            if key not in seen or (m.param_name.endswith("weight") and not seen[key].param_name.endswith("weight")):
                seen[key] = m
        return list(seen.values())

    def kept_counts(self, ratio: float) -> list[int]:
        """Channels kept per partition: :func:`keep_count` of each partition's size."""
        return [keep_count(ratio, len(p)) for p in self.partitions]

    def with_blocks(self, blocks: int, grouped: Iterable[str]) -> "ChannelGroup":
        """The group as ``blocks`` copies of an axis of ``size / blocks`` control points (a grouped
        convolution with ``blocks`` groups touches it); the ``grouped`` convolutions' own input axes stay plain."""
        grouped = set(grouped)
        members = [m if (m.module_name in grouped and m.param_name == "weight" and m.role == Role.CONSUMER)
                   else replace(m, blocks=blocks) for m in self.members]
        rules = [replace(r, factor=blocks) for r in self.rules]
        return replace(self, size=self.size // blocks, width=self.size // blocks, members=members, rules=rules,
                       partitions=[])


def _is_depthwise(m: nn.Module) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _layer_members(module: nn.Module, name: str, is_out: bool, attn_leaves: set) -> tuple[list[Member], list[AttrRule]] | None:
    """Member axes (without index maps) and attribute rules of one traced module; ``None`` when its
    type has parameters this model does not describe."""
    def mem(p: str, dim: int, role: Role, owner: nn.Module = module, owner_name: str = name) -> Member:
        return Member(owner_name, p, dim, role, module=owner)

    def out_members(owner: nn.Module, owner_name: str, dim: int) -> list[Member]:
        ms = [mem("weight", dim, Role.PRODUCER, owner, owner_name)]
        if getattr(owner, "bias", None) is not None:
            ms.append(mem("bias", 0, Role.PRODUCER, owner, owner_name))
        return ms

    if isinstance(module, _CONVT):
        if is_out:
            return out_members(module, name, 1), [AttrRule(name, "out_channels", "")]
        return [mem("weight", 0, Role.CONSUMER)], [AttrRule(name, "in_channels", "")]
    if isinstance(module, _CONV):
        if _is_depthwise(module):
            return out_members(module, name, 0), [AttrRule(name, a, "") for a in ("in_channels", "out_channels", "groups")]
        if is_out:
            return out_members(module, name, 0), [AttrRule(name, "out_channels", "")]
        return [mem("weight", 1, Role.CONSUMER)], [AttrRule(name, "in_channels", "")]
    if isinstance(module, nn.Linear):
        if is_out:
            return out_members(module, name, 0), [AttrRule(name, "out_features", "")]
        return [mem("weight", 1, Role.CONSUMER)], [AttrRule(name, "in_features", "")]
    if isinstance(module, _BN):
        ms = [mem(p, 0, Role.NORM) for p in ("weight", "bias", "running_mean", "running_var")
              if getattr(module, p, None) is not None]
        return ms, [AttrRule(name, "num_features", "")]
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        ms = [mem(p, 0, Role.NORM) for p in ("weight", "bias") if getattr(module, p, None) is not None]
        if isinstance(module, nn.GroupNorm):
            return ms, [AttrRule(name, "num_channels", "")]
        return ms, [AttrRule(name, "normalized_shape", "", kind="tuple")]
    if module in attn_leaves:
        pre = f"{name}." if name else ""
        if is_out:
            return out_members(module.proj, f"{pre}proj", 0), [AttrRule(f"{pre}proj", "out_features", "")]
        return [mem("weight", 1, Role.CONSUMER, module.qkv, f"{pre}qkv")], [AttrRule(f"{pre}qkv", "in_features", "")]
    if is_mha(module):  # torch-pruning couples its input and output (both embed_dim): one item, both sides
        pre = f"{name}." if name else ""
        return ([mem("in_proj_weight", 1, Role.CONSUMER)] + out_members(module.out_proj, f"{pre}out_proj", 0),
                [AttrRule(name, a, "") for a in ("embed_dim", "kdim", "vdim")]
                + [AttrRule(f"{pre}out_proj", "out_features", "")])
    if isinstance(module, nn.Module) and not list(module.parameters()) and not list(module.buffers()):
        return [], []  # a torch-pruning pseudo-op (elementwise, reshape, concat ...) or a parameter-free layer
    return None


def _shape_in_out(grad_fn: Any) -> tuple[list[int], list[int]] | None:
    """Input and output shape of a traced reshape (from autograd metadata), ``None`` if unknown."""
    try:
        out = list(grad_fn._input_metadata[0].shape)
        sizes = getattr(grad_fn, "_saved_self_sizes", None)
        if sizes is None:
            prev, i = grad_fn.next_functions[0]
            sizes = prev._input_metadata[i].shape if prev is not None else None
        return (list(sizes), out) if sizes is not None else None
    except (AttributeError, IndexError, RuntimeError, TypeError):
        return None


def _splits_channel_axis(a: list[int], b: list[int]) -> bool:
    """``[n, c, *rest] -> [n, g, c / g, *rest]`` or back: the view of a channel shuffle."""
    if len(b) == len(a) + 1 and len(a) >= 3:
        return b[0] == a[0] and b[1] * b[2] == a[1] and b[1] > 1 and b[2] > 1 and b[3:] == a[2:]
    if len(a) == len(b) + 1 and len(b) >= 3:
        return _splits_channel_axis(b, a)
    return False


def _mixes_channels(graph: Any, dep: Any, channels: int, batch: int | None) -> bool:
    """A reshape whose channel correspondence is unknown: one torch-pruning could not map
    (:func:`_install_reshape_guard`), or one of an ``[batch, C, H, W]`` activation that splits or merges its
    channel axis without an index mapping (a channel shuffle, which torch-pruning maps as the identity)."""
    from torch_pruning import ops as tp_ops

    node = dep.target
    if node.type != tp_ops.OPTYPE.RESHAPE:
        return False
    if node in getattr(graph, "unmapped_reshapes", ()):
        return True
    shapes = _shape_in_out(node.grad_fn)
    if shapes is None or batch is None or any(f is not None for f in dep.index_mapping):
        return False
    a, b = shapes
    if not (a and b and a[0] == b[0] == batch):
        return False
    return (len(a) == 4 and a[1] == channels and (len(b) < 2 or b[1] != channels)
            or len(b) == 4 and b[1] == channels and (len(a) < 2 or a[1] != channels))


def _root_groups(dg: Any, roots: tuple[type, ...]) -> Iterator[tuple[nn.Module, Any, Exception | None]]:
    """torch-pruning's ``get_all_groups`` (one group per root layer's output channels, roots already in an
    earlier group skipped), except that a root whose group torch-pruning fails to build (an index mapping
    out of range after a channel shuffle) is yielded with its error instead of ending the search."""
    visited: set[int] = set()
    for m in list(dg.module2node.keys()):
        if not isinstance(m, roots) or any(m is i for i in dg.IGNORED_LAYERS_IN_TRACING) or id(m) in visited:
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except (IndexError, KeyError, ValueError, ZeroDivisionError, RuntimeError) as err:
            visited.add(id(m))
            yield m, None, err
            continue
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                visited.add(id(dep.target.module))
        yield m, group, None


@dataclass
class Trace:
    """One traced network: torch-pruning's graph, every group rooted at a Conv/Linear (or attention leaf)
    output in module order, and the attention blocks."""

    model: nn.Module
    graph: Any
    groups: list[ChannelGroup]
    attention: list[AttentionBlock]


def trace(model: nn.Module, example_inputs: Any) -> Trace:
    """Trace ``model`` once on ``example_inputs`` and describe every channel group (nothing filtered:
    :attr:`ChannelGroup.reason` says which groups are not one-to-one; policies decide the rest).

    The model is traced in its current mode; vit-style attention blocks are leaves.
    """
    from torch_pruning import ops as tp_ops

    check_runs(model, example_inputs)
    blocks = attention_blocks(model)
    leaves = {b.module for b in blocks if b.kind == "vit"}
    customized = {t: _attention_pruner() for t in {type(m) for m in leaves}}
    dg = dependency_graph(model, example_inputs, customized_pruners=customized or None, verbose=False)
    names = {m: n for n, m in model.named_modules()}
    unwrapped_dim = {id(u.parameters): u.pruning_dim for u in dg.unwrapped_parameters}
    roots = _CONV + _CONVT + (nn.Linear,) + tuple({type(m) for m in leaves})
    first = next((t for t in _inputs_tuple(example_inputs) if isinstance(t, torch.Tensor) and t.dim()), None)
    batch = first.shape[0] if first is not None else None
    groups: list[ChannelGroup] = []
    for root, g, err in _root_groups(dg, roots):
        if g is None:
            groups.append(ChannelGroup(names.get(root, "?"), dg.get_out_channels(root), root=root,
                                       reason=f"torch-pruning cannot follow its channels ({type(err).__name__}: {err})"))
            continue
        n = len(g[0].idxs)
        group = ChannelGroup(names.get(root, "?"), n, root=root, root_handler=g[0].dep.handler)
        reasons: list[str] = []
        for item in g.items:
            dep, idxs = item.dep, item.idxs
            mod = dep.target.module
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            if isinstance(mod, tp_ops._OutputOp):
                reasons.append("its channels are (part of) the network output")
                continue
            if len(idxs) != n or list(idxs) != list(range(n)):
                reasons.append(f"{names.get(mod, dep.target.name or type(mod).__name__)} maps channels non-trivially")
            if _mixes_channels(dg, dep, len(idxs), batch):
                reasons.append(f"a reshape ({dep.target.grad_fn.name()}) mixes the channels in a way torch-pruning "
                               f"cannot map (a channel shuffle)")
            local: list[list[int]] = [[] for _ in range(n)]
            for i, r in zip(item.idxs, item.root_idxs):
                if r is not None:
                    local[r].append(int(i))
            local_t = tuple(tuple(x) for x in local)
            identity = all(len(x) == 1 and x[0] == c for c, x in enumerate(local))
            if isinstance(mod, nn.Parameter):
                pname = dg._param_to_name[mod]
                mod_name, _, attr = pname.rpartition(".")
                owner = model.get_submodule(mod_name) if mod_name else model
                dim = unwrapped_dim.get(id(mod), mod.dim() - 1)
                group.members.append(Member(mod_name, attr, dim, Role.NORM, local=None if identity else local_t,
                                            free=True, module=owner))
                continue
            name = names.get(mod, "")
            described = _layer_members(mod, name, is_out, leaves)
            if described is None:
                reasons.append(f"unsupported member {name or type(mod).__name__} ({type(mod).__name__})")
                continue
            members, rules = described
            if members and name not in group.modules:
                group.modules.append(name)
            if members and is_out and name not in group.outputs:
                group.outputs.append(name)
            if isinstance(mod, _CONV) and mod.groups > 1:
                group.conv_groups[name] = mod.groups
            for m in members:
                m = replace(m, local=None if identity else local_t, module=m.module)
                if m not in group.members:
                    group.members.append(m)
            for r in rules:
                r.group = group.name
                if r not in group.rules:
                    group.rules.append(r)
        group.reason = reasons[0] if reasons else ""
        groups.append(group)
    return Trace(model, dg, groups, blocks)


# ---------------------------------------------------------------------------------------------- checks
def _param_names(module: nn.Module) -> list[str]:
    """Direct parameter names of a module, seeing through parametrisations (``weight`` for spectral_norm)."""
    names = list(module._parameters)
    if parametrize.is_parametrized(module):
        names += list(module.parametrizations.keys())
    return [n for n in names if getattr(module, n, None) is not None]


def check_supported(net: nn.Module, keep_discrete: Iterable[str] = ()) -> None:
    """Raise a ``ValueError`` naming the first module with parameters a channel group cannot describe
    (and the modules that can); modules inside ``keep_discrete`` are skipped."""
    keep = tuple(keep_discrete)
    attention_inner: set[str] = set()
    for name, m in net.named_modules():
        pre = f"{name}." if name else ""
        if is_vit_attention(m):
            attention_inner.update({f"{pre}qkv", f"{pre}proj"})
        if is_mha(m):
            attention_inner.update({name, f"{pre}out_proj"})
        elif isinstance(m, nn.MultiheadAttention) and not within(name, keep):
            raise ValueError(f"module {name!r} (MultiheadAttention) uses separate k/v dimensions or bias_k/bias_v, "
                             f"which cannot be represented continuously. Pass keep_discrete=({name!r},) to keep it discrete.")
    for name, m in net.named_modules():
        if within(name, keep) or name in attention_inner:
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


def width_attributes(model: nn.Module, group: ChannelGroup) -> list[AttrRule]:
    """Candidate attribute rules of ``group``: plain int attributes equal to its channel count on the
    modules holding its members and their ancestors (a forward that reshapes with a stored width, as
    torchvision's ``VisionTransformer.hidden_dim``). Candidates only: a policy keeps the one a forward
    at a smaller width needs."""
    blocks = max((m.blocks for m in group.members), default=1)
    channels = group.size * blocks
    names: list[str] = []
    for m in group.members:
        parts = m.module_name.split(".") if m.module_name else []
        for k in range(len(parts) + 1):
            name = ".".join(parts[:k])
            if name not in names:
                names.append(name)
    out = []
    for name in names:
        module = model.get_submodule(name) if name else model
        for attr, value in vars(module).items():
            if not attr.startswith("_") and type(value) is int and value == channels:
                out.append(AttrRule(name, attr, group.name, factor=blocks))
    return out


# ---------------------------------------------------------------------------------------------- spectral norm
@dataclass(frozen=True)
class SpectralNorm:
    """A ``torch.nn.utils.parametrizations.spectral_norm`` on ``module_name``'s weight."""

    module_name: str
    n_power_iterations: int
    eps: float
    dim: int
    module: nn.Module = field(compare=False, repr=False)


def spectral_norms(model: nn.Module) -> list[SpectralNorm]:
    """Every spectral-normalised weight of ``model``; ``ValueError`` for any other weight parametrisation."""
    out = []
    for name, m in model.named_modules():
        if not parametrize.is_parametrized(m, "weight"):
            continue
        plist = m.parametrizations["weight"]
        kinds = [type(p).__name__ for p in plist]
        if kinds != ["_SpectralNorm"]:
            raise ValueError(f"module {name!r} ({type(m).__name__}) has a parametrisation of 'weight' other than "
                             f"a single spectral_norm ({kinds}); only spectral_norm is supported")
        sn = plist[0]
        out.append(SpectralNorm(name, sn.n_power_iterations, sn.eps, sn.dim, m))
    return out


__all__ = [
    "Role", "ROLES", "keep_count", "Member", "ChannelGroup", "AttrRule", "Trace", "trace", "dependency_graph",
    "inplace_disabled", "check_runs", "check_supported", "width_attributes", "SUPPORTED_TYPES", "AttentionBlock",
    "attention_blocks", "attention_group", "is_vit_attention", "is_mha", "SpectralNorm", "spectral_norms",
    "within", "ATTENTION_AXES",
]
