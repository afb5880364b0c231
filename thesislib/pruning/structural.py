"""Physical removal of channels: the pruning policy on :mod:`thesislib.graph`'s channel groups.

The groups (every Conv/Linear output channel axis with every tensor axis that must shrink with it, each
member saying for every *root* channel ``c`` which indices of its tensor axis belong to it) come from
:func:`thesislib.graph.trace`, so the importance, reconstruction and merging code never touches
torch-pruning internals. :func:`analyse` keeps the groups this module can remove (:func:`_prunable`).

Removal goes through the traced DependencyGraph (``DG.get_pruning_group(...).prune()``) except where
torch-pruning 1.6 is wrong, which this module works around:

* attention: the DependencyGraph cannot follow ``qkv -> reshape -> attention -> proj`` and leaves the
  ``num_heads``/``head_dim`` attributes stale.  Attention blocks (:func:`thesislib.graph.is_vit_attention`)
  get :func:`thesislib.graph.attention_group`'s per-head dimension group (the same number of dimensions
  kept in every head; q, k and v rows of ``qkv`` and the columns of ``proj`` removed together) or its
  heads group, and their attributes are updated; the softmax scale is frozen at
  ``1/sqrt(original head_dim)`` so that removing dimensions does not also rescale the logits;
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
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from thesislib.graph import (ATTENTION_AXES, ChannelGroup, Role, attention_blocks, attention_group,
                             spectral_norms, trace)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ATTENTION_UNITS = ATTENTION_AXES


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
    graph: Any
    groups: list[ChannelGroup] = field(default_factory=list)
    spectral: list[tuple[nn.Module, dict]] = field(default_factory=list)

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise ValueError(f"unknown group {name!r}; groups: {', '.join(g.name for g in self.groups)}")


def default_ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels are never pruned.

    The last Conv/Linear in module order (classifier head, SR tail), convolutions right before an
    ``nn.PixelShuffle`` inside a Sequential, and for ViTs the ``patch_embed`` (the residual stream,
    shared by cls token and positional embedding) and every attention ``qkv`` (handled separately).
    Any other group holding a free parameter (a residual stream with a class token) is skipped by
    :func:`analyse` under these defaults.
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
    blocks = [b for b in attention_blocks(model) if b.kind == "vit"]
    if blocks:
        for b in blocks:
            ignored.append(b.module.qkv)
        embed = getattr(model, "patch_embed", None)
        if isinstance(embed, nn.Module):
            ignored.append(embed)
    return ignored


def strip_spectral_norm(model: nn.Module) -> list[tuple[nn.Module, dict]]:
    """Remove every ``spectral_norm`` parametrisation, keeping the normalised weight; return what to restore."""
    from thesislib.spectral import check_parametrisations

    check_parametrisations(model)
    removed: list[tuple[nn.Module, dict]] = []
    for sn in spectral_norms(model):
        removed.append((sn.module, {"n_power_iterations": sn.n_power_iterations, "eps": sn.eps, "dim": sn.dim}))
        # a deep copy shares its parametrised class with the original, and remove_parametrizations deletes the
        # ``weight`` property from that class: give this module a private copy of it first (torch 2.x)
        cls = type(sn.module)
        sn.module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        torch.nn.utils.parametrize.remove_parametrizations(sn.module, "weight", leave_parametrized=True)
    return removed


def restore_spectral_norm(removed: Iterable[tuple[nn.Module, dict]]) -> None:
    """Register spectral_norm again, its ``u``/``v`` set to the exact top singular vectors of the smaller
    weight (:func:`thesislib.spectral.reset_power_vectors`), as ``ContinuousNet.export`` does, so that
    every method's result is normalised alike (the registration's own 15 power iterations may not converge)."""
    from thesislib.spectral import reset_power_vectors

    for m, kwargs in removed:
        torch.nn.utils.parametrizations.spectral_norm(m, **kwargs)
        reset_power_vectors(m)


def _prunable(group: ChannelGroup, ignored: set[str], skip_free: bool) -> ChannelGroup | None:
    """The removal policy on a traced group: ``None`` when it touches an ignored layer's output, a grouped
    or depthwise convolution, a reshape with unknown channel correspondence, an index torch-pruning maps
    wrongly (PixelShuffle), or has no producer; else the group with its layer members only."""
    if group.conv_groups or "channel shuffle" in group.reason or ignored & set(group.outputs):
        return None
    if skip_free and any(m.free for m in group.members):
        return None
    members = [m for m in group.members if not m.free]
    for m in members:
        t = m.tensor()
        if t is not None and m.local is not None and any(i >= t.shape[m.axis] for idxs in m.local for i in idxs):
            return None
    if not any(m.role == Role.PRODUCER for m in members):
        return None
    return replace(group, members=members)


def _attention_groups(model: nn.Module, user_ignored: Sequence[nn.Module], attention: str) -> list[ChannelGroup]:
    groups = []
    for block in attention_blocks(model):
        if block.kind != "vit" or any(block.module is m or block.module.proj is m for m in user_ignored):
            continue
        groups.append(attention_group(block, attention, per_head=attention == "head_dim"))
    return groups


def analyse(model: nn.Module, example_inputs, ignored_layers: Sequence[nn.Module] | None = None,
            attention: str = "head_dim") -> Structure:
    """Build the DependencyGraph of ``model`` (in place: spectral_norm is stripped) and list its prunable groups.

    Groups come from :func:`thesislib.graph.trace`; ``attention`` chooses what attention blocks lose:
    per-head dimensions (``"head_dim"``, the same count in every head) or whole heads.
    """
    if attention not in ATTENTION_UNITS:
        raise ValueError(f"attention must be one of {ATTENTION_UNITS}, got {attention!r}")
    spectral = strip_spectral_norm(model)
    ignored = list(default_ignored_layers(model) if ignored_layers is None else ignored_layers)
    names = {id(m): n for n, m in model.named_modules()}
    ignored_names = {names[id(m)] for m in ignored if id(m) in names}
    traced = trace(model, example_inputs)  # traces with in-place activations disabled
    groups = [g for g in (_prunable(t, ignored_names, ignored_layers is None) for t in traced.groups) if g is not None]
    groups += _attention_groups(model, list(ignored_layers or []), attention)
    return Structure(model=model, graph=traced.graph, groups=groups, spectral=spectral)


@torch.no_grad()
def apply_merge(group: ChannelGroup, plan: Plan) -> None:
    """Fold each cluster into its kept channel: producer and norm tensors averaged, consumer inputs summed."""
    if plan.clusters is None:
        return
    for member in group.members:
        tensor = member.tensor()
        if tensor is None:
            continue
        local = member.indices(group.size)
        t = tensor.data.movedim(member.axis, 0)
        for keep, cluster in zip(plan.keep, plan.clusters):
            if len(cluster) <= 1:
                continue
            for j in range(len(local[keep])):
                rows = [local[c][j] for c in cluster]
                block = t[rows]
                t[local[keep][j]] = block.sum(0) if member.role == Role.CONSUMER else block.mean(0)


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
        attn = group.attention.module
        counts = [sum(1 for k in keep_sorted if k in set(p)) for p in group.partitions]
        if len(set(counts)) != 1:
            raise ValueError(f"{group.name}: every head must keep the same number of dimensions, got {counts}")
        rows = [i for view in "qkv" for m in group.members if m.view == view and m.param_name == "weight"
                for k in keep_sorted for i in m.local[k]]
        proj = next(m for m in group.members if m.view == "proj")
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
