"""ContinuousNet: a trained network whose channel axes are continuous (Integral Neural Networks).

``to_continuous(net, example_inputs)`` (Solodskikh et al., CVPR 2023) keeps the original module
graph and turns every coupled channel group (:mod:`thesislib.graph`) whose channels are one axis of
the same channels in every member into a continuous axis (the sampling policy of this module; the
other groups stay discrete, listed in ``discrete_groups`` with the reason):

1. the channels of each group are permuted to minimise the total variation of *all* the group's
   tensors (:mod:`.permutation`) -- a function-preserving reordering;
2. the (permuted) parameters and BatchNorm statistics of the original modules become the control
   points -- they stay the module's own ``nn.Parameter`` objects, so an optimizer built on
   ``cnet.parameters()`` keeps them forever;
3. a forward at widths ``{group: m}`` samples every member tensor with the axis operators of
   :mod:`.axis` (producers/norms: ``A`` or ``A L``; consumers: ``diag(s) A``, ``s`` the quadrature scale),
   once per forward (eval: cached until a parameter changes), and calls the original modules with
   the sampled tensors through :func:`torch.func.functional_call`; width-dependent attributes
   (``groups`` of depthwise convolutions, ``normalized_shape`` of LayerNorm, ``num_heads``/
   ``head_dim`` of attention, ``in/out_channels``...) are set to match. At full width all
   operators are the identity and the original forward runs unchanged.

BatchNorm is continuous too: its affine parameters and running statistics are sampled like
producers; :meth:`ContinuousNet.recalibrate` re-estimates the statistics at the current widths.
A ``spectral_norm`` parametrisation is kept: its ``original`` weight is the control tensor, its
power-iteration vectors ``u``/``v`` are sampled with the weight's axes and refined by power
iteration on the sampled weight, and the exported module keeps the parametrisation.

Notes. In train mode at a reduced width BatchNorm updates the running statistics of the *sampled*
copies, which are discarded: after INN training call :meth:`ContinuousNet.recalibrate` at the
widths you evaluate (at full width the stored statistics are updated as usual). Recalibrated
statistics belong to one set of widths and are not part of ``state_dict``. ``state_dict`` holds the
control points under the original names prefixed by ``net.``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from thesislib.graph import (AttrRule, ChannelGroup, Member, Role, attention_blocks, attention_group, check_supported,
                             is_mha, is_vit_attention, keep_count, spectral_norms, trace, width_attributes, within)
from thesislib.runtime import batch_inputs, check_finite, model_device
from thesislib.spectral import check_parametrisations, top_singular_vectors

from .attention import AttnSpec, member_view, sample_attention_axes
from .axis import INTERPOLATIONS, QUADRATURES, AxisOp, axis_op
from .permutation import channel_distances, total_variation, tv_order

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class _Slot:
    """One tensor of the original network that is sampled: its key and its continuous axes."""

    key: str
    axes: list[tuple[int, str, str, int]] = field(default_factory=list)  # (dim, group, role, blocks)
    attn: AttnSpec | None = None
    attn_sizes: tuple[int, int] = (0, 0)
    sn_v_shape: tuple[int, ...] | None = None  # spectral norm ``_v``: the weight shape without its ``dim``


@dataclass
class _AttnInfo:
    module_name: str
    heads: str | None          # None: nn.MultiheadAttention (fixed number of heads)
    head_dim: str
    num_heads: int
    head_dim_size: int
    scale: float | None
    embed: str | None = None   # nn.MultiheadAttention: the embedding group head_dim follows


@dataclass
class _SpectralInfo:
    module_name: str
    weight_key: str
    u_key: str
    v_key: str
    dim: int
    eps: float


@dataclass(frozen=True)
class NetState:
    """What :meth:`ContinuousNet.snapshot` saves and :meth:`ContinuousNet.restore` puts back (opaque to callers)."""

    widths: dict[str, int]
    antialias: bool
    overrides: dict[str, torch.Tensor]
    override_key: Any
    training: bool
    parameters: dict[str, torch.Tensor] | None = None


def _tensor_key(net: nn.Module, module_name: str, param_name: str) -> str:
    module = net.get_submodule(module_name) if module_name else net
    pre = f"{module_name}." if module_name else ""
    if parametrize.is_parametrized(module, param_name):
        return f"{pre}parametrizations.{param_name}.original"
    return f"{pre}{param_name}"


def _get(net: nn.Module, key: str) -> torch.Tensor:
    mod_name, _, attr = key.rpartition(".")
    module = net.get_submodule(mod_name) if mod_name else net
    return getattr(module, attr)


class ContinuousNet(nn.Module):
    """A network with continuous channel axes; see the module docstring and :func:`to_continuous`."""

    def __init__(self, net: nn.Module, groups: list[ChannelGroup], rules: list[AttrRule],
                 discrete: dict[str, str], interpolation: str = "cubic", quadrature: str = "trapezoid",
                 seed: int = 0) -> None:
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if quadrature not in QUADRATURES:
            raise ValueError(f"quadrature must be one of {QUADRATURES}, got {quadrature!r}")
        self.net = net
        self.interpolation = interpolation
        self.quadrature = quadrature
        self.discrete_groups: dict[str, str] = dict(discrete)
        self._groups: dict[str, ChannelGroup] = {g.name: g for g in groups}
        self._rules = rules
        self._antialias = True
        self._train_dist: Callable[[ChannelGroup, torch.Generator], int] | None = None
        self._seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._overrides: dict[str, torch.Tensor] = {}
        self._override_key: Any = None
        self._cache: tuple[Any, dict[str, torch.Tensor]] | None = None
        self._applied: Any = None
        self._attn: list[_AttnInfo] = []
        self._spectral: list[_SpectralInfo] = []
        self._slots: dict[str, _Slot] = {}
        self._view_owner: dict[tuple[str, str], _AttnInfo] = {}
        self._build_slots()

    # ------------------------------------------------------------------ construction
    def _build_slots(self) -> None:
        net = self.net
        for g in self._groups.values():
            for mem in g.members:
                if mem.view:
                    continue
                key = _tensor_key(net, mem.module_name, mem.param_name)
                self._slots.setdefault(key, _Slot(key)).axes.append((mem.dim, g.name, mem.role, mem.blocks))
        for name, m in net.named_modules():
            pre = f"{name}." if name else ""
            hdim = f"{pre}head_dim"
            if hdim not in self._groups or not (is_vit_attention(m) or is_mha(m)):
                continue
            sizes = (m.num_heads, m.head_dim)
            if is_vit_attention(m):
                heads = f"{pre}heads"
                info = _AttnInfo(name, heads, hdim, m.num_heads, m.head_dim, m.scale)
                qkv_mod, proj_mod, qkv_params = f"{pre}qkv", f"{pre}proj", (("weight", m.qkv.weight), ("bias", m.qkv.bias))
            else:
                heads = None
                embed = next((g.name for g in self._groups.values() for mem in g.members
                              if mem.module_name == name and mem.param_name == "in_proj_weight" and not mem.view), None)
                if embed is None:
                    raise ValueError(f"the embedding group of MultiheadAttention {name!r} is not continuous; "
                                     f"pass keep_discrete=({name!r},) to keep the attention discrete")
                info = _AttnInfo(name, None, hdim, m.num_heads, m.head_dim, None, embed)
                qkv_mod, proj_mod = name, f"{pre}out_proj"
                qkv_params = (("in_proj_weight", m.in_proj_weight), ("in_proj_bias", m.in_proj_bias))
            self._attn.append(info)
            # k carries the head-dimension quadrature weights of q . k (the sampling policy of .attention)
            qkv_spec = dict(sections=3, heads=heads, head_dim=hdim, head_roles=(Role.PRODUCER,) * 3,
                            dim_roles=(Role.PRODUCER, Role.CONSUMER, Role.PRODUCER), q_rescale=heads is None)
            for pname, tensor in qkv_params:
                if tensor is None:
                    continue
                key = _tensor_key(net, qkv_mod, pname)
                slot = self._slots.setdefault(key, _Slot(key))
                slot.attn, slot.attn_sizes = AttnSpec(dim=0, **qkv_spec), sizes
                self._view_owner[(qkv_mod, pname)] = info
            key = _tensor_key(net, proj_mod, "weight")
            slot = self._slots.setdefault(key, _Slot(key))
            slot.attn = AttnSpec(dim=1, sections=1, heads=heads, head_dim=hdim, head_roles=(Role.CONSUMER,),
                                 dim_roles=(Role.CONSUMER,))
            slot.attn_sizes = sizes
            self._view_owner[(proj_mod, "weight")] = info
        # spectral norm: sample u with the weight's ``dim`` axis and v with the other axes
        for sn_mod in spectral_norms(net):
            name = sn_mod.module_name
            pre = f"{name}." if name else ""
            wkey = f"{pre}parametrizations.weight.original"
            if wkey not in self._slots:
                continue
            info = _SpectralInfo(name, wkey, f"{pre}parametrizations.weight.0._u",
                                 f"{pre}parametrizations.weight.0._v", sn_mod.dim, sn_mod.eps)
            self._spectral.append(info)
            wslot = self._slots[wkey]
            if any(blocks > 1 for *_, blocks in wslot.axes):
                raise ValueError(f"spectral_norm on {name!r}, whose channels belong to a grouped-convolution group, "
                                 f"is not supported; pass keep_discrete=({name!r},) to keep it discrete")
            w = _get(net, wkey)
            other = [d for d in range(w.dim()) if d != sn_mod.dim]
            uslot = self._slots.setdefault(info.u_key, _Slot(info.u_key))
            vslot = self._slots.setdefault(info.v_key, _Slot(info.v_key))
            vslot.sn_v_shape = tuple(w.shape[d] for d in other)
            for dim, gname, _role, blocks in wslot.axes:
                if dim == sn_mod.dim:
                    uslot.axes.append((0, gname, Role.NORM, blocks))
                else:
                    vslot.axes.append((other.index(dim), gname, Role.NORM, blocks))

    # ------------------------------------------------------------------ groups
    @property
    def groups(self) -> list[ChannelGroup]:
        """The continuous channel groups (``width`` = the sample count set by :meth:`resample`)."""
        return list(self._groups.values())

    def _group(self, name: str) -> ChannelGroup:
        if name not in self._groups:
            raise ValueError(f"unknown group {name!r}; valid groups: {', '.join(self._groups)}")
        return self._groups[name]

    def _member_tensor(self, member: Member) -> torch.Tensor:
        t = _get(self.net, _tensor_key(self.net, member.module_name, member.param_name))
        if member.view:
            info = self._view_owner[(member.module_name, member.param_name)]
            return member_view(t, member.view, info.num_heads, info.head_dim_size)
        if member.blocks > 1:
            size = t.shape[member.dim] // member.blocks
            return t.unflatten(member.dim, (member.blocks, size)).transpose(member.dim, member.dim + 1)
        return t

    def group_tensors(self, name: str) -> list[tuple[Member, torch.Tensor]]:
        """Full-resolution control-point tensors of a group (permuted, smooth order), detached."""
        g = self._group(name)
        return [(m, self._member_tensor(m).detach()) for m in g.members]

    # ------------------------------------------------------------------ widths
    def _eval_widths(self) -> dict[str, int]:
        return {n: g.width for n, g in self._groups.items()}

    def _link(self, widths: dict[str, int]) -> dict[str, int]:
        """nn.MultiheadAttention: round its embedding width to a multiple of ``num_heads`` (at least
        ``num_heads``) and set its ``head_dim`` group to ``embedding width / num_heads``."""
        for a in self._attn:
            if a.embed is None:
                continue
            h = a.num_heads
            e = max(h, h * int(round(widths[a.embed] / h)))
            widths[a.embed] = e
            widths[a.head_dim] = e // h
        return widths

    def _draw_widths(self) -> dict[str, int]:
        widths = {}
        for n, g in self._groups.items():
            m = int(self._train_dist(g, self._generator))
            if m < 1:
                raise ValueError(f"the width distribution returned {m} for group {n!r}; widths must be >= 1")
            widths[n] = m
        return self._link(widths)

    def resample(self, ratio_or_dict: float | Mapping[str, int], antialias: bool = True) -> "ContinuousNet":
        """Set every group to :func:`thesislib.graph.keep_count` ``(ratio, size)`` samples, or the given ``{group: width}``.

        ``antialias=True`` low-passes each axis to the new Nyquist rate before sampling; ``False``
        samples the control-point interpolant directly. Widths may exceed ``size`` in the dict form
        (upsampling). Returns ``self``.
        """
        if isinstance(ratio_or_dict, Mapping):
            new = self._eval_widths()
            linked = {a.head_dim: a.embed for a in self._attn if a.embed is not None}
            for name, m in ratio_or_dict.items():
                self._group(name)
                if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                    raise ValueError(f"width of group {name!r} must be an int >= 1, got {m!r}")
                if name in linked:
                    raise ValueError(f"group {name!r} follows the width of {linked[name]!r} "
                                     f"(MultiheadAttention: heads * head_dim = embed_dim); resample that group instead")
                new[name] = m
        else:
            r = ratio_or_dict
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0 < r <= 1) or math.isnan(r):
                raise ValueError(f"resample ratio must be a number in (0, 1], got {r!r}; "
                                 f"or pass a dict {{group_name: width >= 1}}")
            new = {n: keep_count(r, g.size) for n, g in self._groups.items()}
        new = self._link(new)
        for name, m in new.items():
            self._groups[name].width = m
        self._antialias = bool(antialias)
        self._cache = None
        return self

    def train_widths(self, distribution: Callable[[ChannelGroup, torch.Generator], int] | tuple[float, float] | None
                     = (0.5, 1.0)) -> "ContinuousNet":
        """INN training (Solodskikh et al. 2023, Sec. 4.2): in train mode every forward draws a sample
        count per group. ``distribution`` is a ``(low, high)`` pair of ratios (uniform integer widths in
        ``[max(1, ceil(low * size)), round(high * size)]``), a callable ``(group, generator) -> width``,
        or ``None`` to train at the widths set by :meth:`resample`. Training samples naively (no
        low-pass); eval uses the widths and mode set by :meth:`resample`."""
        if distribution is None:
            self._train_dist = None
            return self
        if callable(distribution):
            self._train_dist = distribution
            return self
        try:
            low, high = (float(v) for v in distribution)
        except (TypeError, ValueError):
            raise ValueError(f"distribution must be a (low, high) ratio pair, a callable or None, got {distribution!r}")
        if not (0 < low <= high <= 1):
            raise ValueError(f"width ratios must satisfy 0 < low <= high <= 1, got ({low}, {high})")

        def uniform(group: ChannelGroup, gen: torch.Generator) -> int:
            lo = max(1, math.ceil(low * group.size))
            hi = max(lo, int(round(high * group.size)))
            return int(torch.randint(lo, hi + 1, (1,), generator=gen).item())

        self._train_dist = uniform
        return self

    # ------------------------------------------------------------------ state
    @property
    def widths(self) -> dict[str, int]:
        """``{group: current width}`` (a new dict); widths are set by :meth:`resample`."""
        return self._eval_widths()

    @property
    def full_widths(self) -> dict[str, int]:
        """``{group: size}``: each group's channel count at full width (its number of control points)."""
        return {n: g.size for n, g in self._groups.items()}

    def snapshot(self, parameters: bool = False) -> NetState:
        """The sampling state: widths, anti-aliasing flag, recalibrated BatchNorm statistics (with the widths
        they belong to) and train/eval mode; ``parameters=True`` adds a copy of ``state_dict`` (for code that
        trains or rewrites the control points). Put it back with :meth:`restore`."""
        return NetState(widths=self.widths, antialias=self._antialias, overrides=dict(self._overrides),
                        override_key=self._override_key, training=self.training,
                        parameters=copy.deepcopy(self.state_dict()) if parameters else None)

    def restore(self, state: NetState) -> "ContinuousNet":
        """Return to a :meth:`snapshot` of this network (widths first, then control points, overrides, mode)."""
        if not isinstance(state, NetState):
            raise ValueError(f"restore takes a NetState from ContinuousNet.snapshot(), got {type(state).__name__}")
        if set(state.widths) != set(self._groups):
            raise ValueError(f"this state belongs to another network: groups {sorted(state.widths)}, "
                             f"this network has {sorted(self._groups)}")
        for name, m in state.widths.items():  # a snapshot is consistent: no re-linking of attention widths
            self._groups[name].width = int(m)
        self._antialias = state.antialias
        self._cache = None
        if state.parameters is not None:
            self.load_state_dict(state.parameters)
        self._overrides = dict(state.overrides)
        self._override_key = state.override_key
        self.train(state.training)
        return self

    @contextlib.contextmanager
    def preserved(self, parameters: bool = False) -> Iterator["ContinuousNet"]:
        """``with cnet.preserved(): ...`` -- :meth:`snapshot` on entry, :meth:`restore` on exit (also when the
        body raises); ``parameters=True`` restores the control points too."""
        state = self.snapshot(parameters)
        try:
            yield self
        finally:
            self.restore(state)

    # ------------------------------------------------------------------ sampling
    def _ops(self, widths: Mapping[str, int], antialias: bool) -> dict[str, dict[str, AxisOp]]:
        ops = {}
        for name, g in self._groups.items():
            p = axis_op(g.size, widths[name], Role.PRODUCER, self.interpolation, self.quadrature, antialias)
            c = axis_op(g.size, widths[name], Role.CONSUMER, self.interpolation, self.quadrature, antialias)
            ops[name] = {Role.PRODUCER: p, Role.NORM: p, Role.CONSUMER: c}
        return ops

    def _sample(self, widths: Mapping[str, int], antialias: bool) -> dict[str, torch.Tensor]:
        ops = self._ops(widths, antialias)
        out: dict[str, torch.Tensor] = {}
        for key, slot in self._slots.items():
            t = _get(self.net, key)
            changed = False
            if slot.sn_v_shape is not None:
                t = t.reshape(slot.sn_v_shape)
            for dim, g, role, blocks in slot.axes:
                op = ops[g][role]
                if op.identity:
                    continue
                if blocks > 1:
                    t = op.apply(t.unflatten(dim, (blocks, op.n)), dim + 1).flatten(dim, dim + 1)
                else:
                    t = op.apply(t, dim)
                changed = True
            if slot.attn is not None:
                t_in = t
                t = sample_attention_axes(t, slot.attn, slot.attn_sizes, ops)
                changed = changed or t is not t_in
            if changed:
                out[key] = t.reshape(-1) if slot.sn_v_shape is not None else t
        if self._spectral:
            self._refine_spectral(out)
        return out

    @torch.no_grad()
    def _refine_spectral(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set ``u``/``v`` of each resampled spectral-normalised weight to its exact top singular vectors
        (SVD in float64; signs follow the interpolated ``u``), so that ``σ = uᵀWv`` is exact and one more
        power-iteration step leaves it unchanged (a few steps from the interpolated vectors do not converge
        when the top two singular values are close)."""
        for info in self._spectral:
            if info.weight_key not in tensors:
                continue
            start = tensors.get(info.u_key, _get(self.net, info.u_key))
            tensors[info.u_key], tensors[info.v_key] = top_singular_vectors(
                tensors[info.weight_key].detach(), info.dim, like=start)

    def _versions(self) -> tuple:
        return tuple((k, _get(self.net, k)._version, _get(self.net, k).data_ptr()) for k in self._slots)

    def _tensors(self, widths: Mapping[str, int], antialias: bool, use_overrides: bool = True) -> dict[str, torch.Tensor]:
        wkey = (tuple(sorted(widths.items())), antialias)
        if not torch.is_grad_enabled():
            key = (wkey, self._versions())
            if self._cache is not None and self._cache[0] == key:
                tensors = dict(self._cache[1])
            else:
                tensors = self._sample(widths, antialias)
                self._cache = (key, dict(tensors))
        else:
            tensors = self._sample(widths, antialias)
        if use_overrides and self._overrides and self._override_key == wkey:
            tensors.update(self._overrides)
        return tensors

    def _apply_attrs(self, widths: Mapping[str, int]) -> None:
        key = tuple(sorted(widths.items()))
        if self._applied == key:
            return
        for r in self._rules:
            m = self.net.get_submodule(r.module_name) if r.module_name else self.net
            value = widths[r.group] * r.factor
            setattr(m, r.attr, (value,) if r.kind == "tuple" else value)
        for a in self._attn:
            m = self.net.get_submodule(a.module_name) if a.module_name else self.net
            if a.heads is None:  # nn.MultiheadAttention: embed_dim/kdim/vdim are attribute rules
                m.head_dim = widths[a.head_dim]
                continue
            h, d = widths[a.heads], widths[a.head_dim]
            m.num_heads, m.head_dim = h, d
            m.qkv.out_features, m.proj.in_features = 3 * h * d, h * d
            if d == a.head_dim_size or a.scale is not None:
                m.scale = a.scale
            else:
                m.scale = a.head_dim_size ** -0.5
        self._applied = key

    def _current(self) -> tuple[dict[str, int], bool]:
        if self.training and self._train_dist is not None:
            return self._draw_widths(), False
        return self._eval_widths(), self._antialias

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        widths, antialias = self._current()
        self._apply_attrs(widths)
        tensors = self._tensors(widths, antialias)
        if not tensors:
            return self.net(*args, **kwargs)
        return functional_call(self.net, tensors, args, kwargs, strict=False)

    # ------------------------------------------------------------------ BatchNorm
    def recalibrate(self, loader: Iterable, batches: int = 20) -> "ContinuousNet":
        """Re-estimate every BatchNorm's running statistics at the current (eval) widths.

        Runs ``batches`` batches of ``loader`` (:func:`thesislib.runtime.batch_inputs`) with only the BatchNorm layers
        in train mode and ``momentum=None`` (cumulative average, fresh statistics); the result is
        used by eval forwards and :meth:`export` at these widths (until the next :meth:`resample`).
        Train/eval state and momenta are restored. Returns ``self``.
        """
        if batches < 1:
            raise ValueError(f"batches must be >= 1, got {batches}")
        widths, antialias = self._eval_widths(), self._antialias
        bns = [(n, m) for n, m in self.net.named_modules() if isinstance(m, _BN) and m.track_running_stats]
        if not bns:
            return self
        was_training = self.training
        self.eval()
        self._apply_attrs(widths)
        with torch.no_grad():
            base = self._tensors(widths, antialias, use_overrides=False)
        fresh: dict[str, torch.Tensor] = {}
        momenta = []
        for n, m in bns:
            pre = f"{n}." if n else ""
            rm = base.get(f"{pre}running_mean", m.running_mean)
            fresh[f"{pre}running_mean"] = torch.zeros_like(rm)
            fresh[f"{pre}running_var"] = torch.ones_like(rm)
            fresh[f"{pre}num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
            momenta.append(m.momentum)
            m.momentum = None
            m.train()
        device = model_device(self.net)
        seen = 0
        try:
            with torch.no_grad():
                for batch in loader:
                    if seen >= batches:
                        break
                    x = batch_inputs(batch)
                    functional_call(self.net, {**base, **fresh}, (x.to(device),), strict=False)
                    seen += 1
        finally:
            for (n, m), mom in zip(bns, momenta):
                m.momentum = mom
            self.train(was_training)
        if seen == 0:
            raise ValueError("recalibrate got an empty loader")
        self._overrides = fresh
        self._override_key = (tuple(sorted(widths.items())), antialias)
        return self

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def export(self) -> nn.Module:
        """A plain torch model at the current widths: a copy of the original network whose tensors
        are the sampled ones and whose attributes match -- really fewer channels, same outputs."""
        widths, antialias = self._eval_widths(), self._antialias
        self._apply_attrs(widths)
        tensors = self._tensors(widths, antialias)
        out = copy.deepcopy(self.net)
        for key, t in tensors.items():
            mod_name, _, attr = key.rpartition(".")
            module = out.get_submodule(mod_name) if mod_name else out
            if attr in module._parameters:
                old = module._parameters[attr]
                module._parameters[attr] = nn.Parameter(t.detach().clone().contiguous(), requires_grad=old.requires_grad)
            elif attr in module._buffers:
                module._buffers[attr] = t.detach().clone().contiguous()
            else:
                raise RuntimeError(f"cannot place tensor {key!r} in the exported model")
        out.train(self.training)
        return out

    # ------------------------------------------------------------------ diagnostics
    def total_variation(self, name: str, roles: tuple[str, ...] = (Role.PRODUCER, Role.CONSUMER)) -> float:
        """Total variation of a group's tensors with these roles in the current order (what
        :func:`to_continuous` minimises with its default ``permute_roles``)."""
        g = self._group(name)
        d = channel_distances([(t, m.dim) for m, t in self.group_tensors(name) if m.role in roles])
        return total_variation(d, range(g.size))

    def extra_repr(self) -> str:
        return (f"groups={len(self._groups)}, interpolation={self.interpolation!r}, quadrature={self.quadrature!r}, "
                f"discrete_groups={len(self.discrete_groups)}")


@torch.no_grad()
def _permute(cnet: ContinuousNet, group: ChannelGroup, perm: torch.Tensor) -> None:
    """Reorder a group's channels in place in every member tensor (and spectral-norm vectors)."""
    done: set[tuple[str, str]] = set()
    for m in group.members:
        t = cnet._member_tensor(m)
        idx = perm.to(t.device)
        t.copy_(t.index_select(m.dim, idx))
        done.add((m.module_name, m.param_name))
    for info in cnet._spectral:
        wslot = cnet._slots[info.weight_key]
        for dim, gname, _, blocks in wslot.axes:
            if gname != group.name:
                continue
            if dim == info.dim:
                u = _get(cnet.net, info.u_key)
                u.copy_(u.index_select(0, perm.to(u.device)))
            else:
                v = _get(cnet.net, info.v_key)
                shape = cnet._slots[info.v_key].sn_v_shape
                other = [d for d in range(len(shape) + 1) if d != info.dim]
                vv = v.view(shape)
                vv.copy_(vv.index_select(other.index(dim), perm.to(v.device)))


def _continuous_groups(net: nn.Module, example_inputs: Any,
                       keep: tuple[str, ...]) -> tuple[list[ChannelGroup], list[AttrRule], dict[str, str]]:
    """The sampling policy on :func:`thesislib.graph.trace`'s groups: a group becomes a continuous axis
    when every member holds the same channels one-to-one (none is the network output or kept discrete),
    some layer sums over it (a consumer) and every member tensor has its size; a group touching a grouped
    convolution with ``g`` groups becomes ``g`` blocks of one axis. Returns the groups (attention head and
    head-dimension groups appended), their attribute rules and ``{group: reason}`` of the discrete ones."""
    check_supported(net, keep)
    was_training = net.training
    net.eval()
    try:
        traced = trace(net, example_inputs)
    finally:
        net.train(was_training)
    groups: list[ChannelGroup] = []
    rules: list[AttrRule] = []
    discrete: dict[str, str] = {}
    for g in traced.groups:
        reason = g.reason
        kept = [n for n in g.modules if within(n, keep)]
        if not reason and kept:
            reason = f"{kept[0]!r} is kept discrete"
        if not reason:
            grouped = {n: k for n, k in g.conv_groups.items()
                       if not net.get_submodule(n).groups == net.get_submodule(n).in_channels
                       == net.get_submodule(n).out_channels}
            if len(set(grouped.values())) > 1:
                reason = f"grouped convolutions with different numbers of groups share it: {grouped}"
            elif grouped:
                blocks = next(iter(grouped.values()))
                if g.size % blocks:
                    reason = f"{g.size} channels do not split into {blocks} groups"
                else:
                    g = g.with_blocks(blocks, grouped)
        if not reason:
            if not g.by_role(Role.CONSUMER):
                reason = "no layer sums over its channels (no consumer)"
            for m in g.members if not reason else ():
                t = m.tensor()
                if t is None or t.shape[m.dim] != m.blocks * g.size:
                    reason = f"{m.path} has {None if t is None else t.shape[m.dim]} channels, not {m.blocks * g.size}"
                    break
        if reason:
            discrete[g.name] = reason
            continue
        groups.append(g)
        rules += g.rules
    for block in attention_blocks(net, keep):
        if block.kind == "vit":
            groups.append(attention_group(block, "heads"))
        elif not any(m.module_name == block.name and m.param_name == "in_proj_weight" for g in groups for m in g.members):
            discrete[f"{block.prefix}head_dim"] = (f"follows the embedding width of MultiheadAttention {block.name!r}, "
                                                   "whose group stays discrete")
            continue
        groups.append(attention_group(block, "head_dim"))
    return groups, rules, discrete


def _forward_error(cnet: ContinuousNet, example_inputs: Any, widths: Mapping[str, int]) -> Exception | None:
    """The exception a forward at ``widths`` raises (``None`` when it runs)."""
    cnet.resample(dict(widths))
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    try:
        with torch.no_grad():
            cnet(*inputs)
    except Exception as err:  # noqa: BLE001 -- any failure means this width is not representable
        return err
    return None


def _resizable(cnet: ContinuousNet, example_inputs: Any) -> ContinuousNet:
    """Check that every group can be resampled: a forward at half width per group (one forward when all
    pass). A group whose forward fails gets the attribute rule that makes it run (a module attribute equal
    to its channel count that the forward reads, :func:`thesislib.graph.width_attributes`), else it stays
    discrete with the error as the reason (and a MultiheadAttention head dimension following it too)."""
    linked = {a.head_dim for a in cnet._attn if a.embed is not None}
    free = [n for n in cnet._groups if n not in linked]
    was_training = cnet.training
    cnet.eval()
    bad: dict[str, str] = {}
    try:
        if _forward_error(cnet, example_inputs, {n: keep_count(0.5, cnet._groups[n].size) for n in free}) is None:
            return cnet
        for name in free:
            small = {name: keep_count(0.5, cnet._groups[name].size)}
            err = _forward_error(cnet, example_inputs, small)
            if err is None:
                continue
            known = {(r.module_name, r.attr) for r in cnet._rules}
            for rule in width_attributes(cnet.net, cnet._groups[name]):
                if (rule.module_name, rule.attr) in known:
                    continue
                cnet._rules.append(rule)
                cnet._applied = None
                if _forward_error(cnet, example_inputs, small) is None:
                    err = None
                    break
                cnet._rules.remove(rule)
                cnet._applied = None
            if err is not None:
                bad[name] = f"resampling it breaks the forward ({type(err).__name__}: {err})"
    finally:
        cnet.resample(1.0)
        cnet._applied = None
        cnet._apply_attrs(cnet.full_widths)
        cnet.train(was_training)
    if not bad:
        return cnet
    for a in cnet._attn:
        if a.embed in bad:
            bad[a.head_dim] = f"follows the width of {a.embed!r}, which stays discrete"
    groups = [g for n, g in cnet._groups.items() if n not in bad]
    rules = [r for r in cnet._rules if r.group not in bad]
    return ContinuousNet(cnet.net, groups, rules, {**cnet.discrete_groups, **bad}, cnet.interpolation,
                         cnet.quadrature, cnet._seed)


def to_continuous(net: nn.Module, example_inputs: Any, *, interpolation: str = "cubic",
                  quadrature: str = "trapezoid", permute: bool = True, keep_discrete: Iterable[str] = (),
                  permute_roles: tuple[str, ...] = (Role.PRODUCER, Role.CONSUMER), permutation_starts: int = 2,
                  seed: int = 0) -> ContinuousNet:
    """Convert a trained network to a :class:`ContinuousNet` computing the same function at full width.

    ``example_inputs`` is one input batch (or a tuple of inputs) for tracing the channel groups.
    ``net`` itself is not modified (a deep copy is converted). ``keep_discrete`` names modules (and
    their submodules) whose channel groups stay discrete, e.g. unsupported layer types. Groups the
    forward cannot run at a smaller width stay discrete too (:attr:`ContinuousNet.discrete_groups`
    says why). With ``permute=True`` each group's channels are reordered to minimise the total
    variation of its tensors with the roles in ``permute_roles`` (:func:`.permutation.tv_order`,
    ``permutation_starts`` greedy starts); all member tensors are reordered alike. The default reads
    the producer and consumer weights, not the per-channel BatchNorm/LayerNorm parameters and
    statistics (the comparison is in ``benchmarks/continuous.py``). ``ValueError`` for an unsupported
    module, NaN or infinite weights, or inputs the network does not run on.
    """
    check_finite(net)
    keep = tuple(keep_discrete)
    check_parametrisations(net)
    net = copy.deepcopy(net)
    groups, rules, discrete = _continuous_groups(net, example_inputs, keep)
    cnet = ContinuousNet(net, groups, rules, discrete, interpolation, quadrature, seed)
    cnet = _resizable(cnet, example_inputs)
    if permute:
        for g in cnet.groups:
            if g.size <= 2:
                continue
            tensors = [(t, m.dim) for m, t in cnet.group_tensors(g.name) if m.role in permute_roles]
            if not tensors:
                tensors = [(t, m.dim) for m, t in cnet.group_tensors(g.name)]
            d = channel_distances(tensors)
            order = tv_order(d, starts=permutation_starts, seed=seed)
            _permute(cnet, g, torch.as_tensor(order, dtype=torch.long))
    cnet.train(net.training)
    return cnet
