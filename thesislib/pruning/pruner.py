"""``prune``: every structured-pruning baseline of the thesis behind one call.

``ratio`` is the fraction of channels *kept*, with the meaning of ``cnet.resample(ratio)``: every prunable
group keeps ``max(1, round(ratio · n))`` of its ``n`` channels (``allocation="uniform"``), or the whole
network keeps ``round(ratio · Σ n)`` channels chosen by mean-normalised scores across groups
(``allocation="global"``; methods without per-channel scores -- ``obs``, ``ifm``, ``fold`` -- allocate by
the L2 filter norm, then select/merge with their own rule inside each group).
"""

from __future__ import annotations

import copy
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import importance
from .calibration import model_device, recalibrate_batchnorm
from .merging import fold_plan, ifm_plan
from .obs import input_hessians, obs_plan
from .structural import ChannelGroup, Plan, analyse, apply_merge, remove_channels, restore_spectral_norm

METHODS: tuple[str, ...] = ("random", "l1", "l2", "bn_scale", "taylor", "hessian", "obs", "lfp", "ifm", "fold",
                            "gmp", "continuous")
NEEDS_CALIB: frozenset[str] = frozenset({"taylor", "hessian", "obs", "lfp"})
ALLOCATIONS: tuple[str, ...] = ("uniform", "global")
_SCORED = ("random", "l1", "l2", "bn_scale", "taylor", "hessian", "lfp", "gmp")


def check_ratio(ratio: float, what: str = "ratio") -> float:
    """A kept fraction in (0, 1]; ``ValueError`` otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"{what} is the fraction of channels kept and must be in (0, 1], got {ratio!r}")
    return float(ratio)


def check_method(method: str, calib, recalibrate: bool) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; METHODS = {', '.join(METHODS)}")
    if method in NEEDS_CALIB and calib is None:
        raise ValueError(f"method {method!r} needs calibration data: pass calib=<loader of (inputs, targets)>")
    if recalibrate and calib is None:
        raise ValueError("recalibrate=True needs calib=<loader> to re-estimate BatchNorm statistics")


def _top(scores: torch.Tensor, part: list[int], k: int) -> list[int]:
    s = scores[part]
    order = torch.argsort(-s, stable=True)[:k]
    return sorted(part[int(i)] for i in order)


def method_scores(method: str, model: nn.Module, groups: list[ChannelGroup], calib, batches: int,
                  seed: int) -> dict[str, torch.Tensor]:
    """Per-channel scores of a scoring method (``gmp`` = L2 magnitude, Zhu & Gupta's criterion)."""
    if method == "random":
        return importance.random_scores(groups, seed)
    if method == "l1":
        return importance.magnitude_scores(groups, 1)
    if method in ("l2", "gmp", "obs", "ifm", "fold"):
        return importance.magnitude_scores(groups, 2)
    if method == "bn_scale":
        return importance.bn_scale_scores(groups)
    if method == "taylor":
        return importance.taylor_scores(model, groups, calib, batches)
    if method == "hessian":
        return importance.hessian_scores(model, groups, calib, batches)
    if method == "lfp":
        return importance.lfp_scores(model, groups, calib, batches)
    raise ValueError(f"method {method!r} has no per-channel scores")


def channel_scores(net: nn.Module, method: str, example_inputs: torch.Tensor, calib: Iterable | None = None,
                   calib_batches: int = 20, seed: int = 0, ignored_layers: Sequence[nn.Module] | None = None,
                   attention: str = "head_dim") -> dict[str, torch.Tensor]:
    """Per-channel scores of ``method`` for every prunable group of ``net`` (on a copy), for reuse in
    :func:`prune` across ratios; ``obs``/``ifm``/``fold`` give the L2 norms they allocate by globally."""
    check_method(method, calib, False)
    if method == "continuous":
        raise ValueError("method 'continuous' has no per-channel scores")
    model = copy.deepcopy(net).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    structure = analyse(model, example_inputs.to(model_device(model)), _map_ignored(net, model, ignored_layers),
                        attention)
    return method_scores(method, model, structure.groups, calib, calib_batches, seed)


def allocate(groups: list[ChannelGroup], ratio: float | Mapping[str, float], allocation: str,
             scores: dict[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
    """Kept channels per partition of every group (uniform ratio, per-group ratios, or global top-k)."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if isinstance(ratio, Mapping):
        if allocation != "uniform":
            raise ValueError("a per-group ratio dict only works with allocation='uniform'")
        names = {g.name for g in groups}
        unknown = sorted(set(ratio) - names)
        if unknown:
            raise ValueError(f"unknown group(s) {unknown}; prunable groups: {', '.join(g.name for g in groups)}")
        return {g.name: g.kept_counts(check_ratio(ratio.get(g.name, 1.0), f"ratio[{g.name!r}]")) for g in groups}
    ratio = check_ratio(ratio)
    if allocation == "uniform" or ratio == 1.0:
        return {g.name: g.kept_counts(ratio) for g in groups}
    assert scores is not None
    normalised = torch.cat([scores[g.name].double() / scores[g.name].double().mean().clamp_min(1e-30) for g in groups])
    total = sum(g.size for g in groups)
    k = max(len(groups), round(ratio * total))
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.argsort(-normalised, stable=True)[:k]] = True
    counts, start = {}, 0
    for g in groups:
        n = int(chosen[start:start + g.size].sum())
        start += g.size
        per = max(1, round(n / len(g.partitions)))
        counts[g.name] = [min(per, len(p)) for p in g.partitions]
    return counts


def plan_groups(method: str, model: nn.Module, groups: list[ChannelGroup], counts: dict[str, list[int]],
                calib, batches: int, seed: int, scores: dict[str, torch.Tensor] | None) -> dict[str, Plan]:
    """What each group keeps (and merges) under ``method``; ``obs`` already updates the consumers here."""
    plans: dict[str, Plan] = {}
    todo = [g for g in groups if sum(counts[g.name]) < g.size]
    if method == "obs" and todo:
        consumers = [m.module for g in todo for m in g.by_role("consumer")]
        hessians = input_hessians(model, consumers, calib, batches)
        for g in todo:
            plan = obs_plan(g, hessians, counts[g.name])
            if plan is None:  # no consumer to reconstruct: L2 norm
                l2 = importance.magnitude_scores([g], 2)[g.name]
                plan = Plan(keep=[c for p, k in zip(g.partitions, counts[g.name]) for c in _top(l2, p, k)])
            plans[g.name] = plan
        return plans
    if method in ("ifm", "fold"):
        for g in todo:
            plans[g.name] = ifm_plan(g, counts[g.name]) if method == "ifm" else fold_plan(g, counts[g.name], seed)
        return plans
    if scores is None:
        scores = method_scores(method, model, todo, calib, batches, seed)
    for g in todo:
        keep = [c for p, k in zip(g.partitions, counts[g.name]) for c in _top(scores[g.name], p, k)]
        plans[g.name] = Plan(keep=sorted(keep))
    return plans


def _map_ignored(net: nn.Module, model: nn.Module, ignored_layers: Sequence[nn.Module] | None) -> list[nn.Module] | None:
    if ignored_layers is None:
        return None
    names = {id(m): n for n, m in net.named_modules()}
    copies = dict(model.named_modules())
    out = []
    for layer in ignored_layers:
        if id(layer) not in names:
            raise ValueError(f"ignored layer {type(layer).__name__} is not a module of the network")
        out.append(copies[names[id(layer)]])
    return out


def _continuous(model: nn.Module, ratio, example_inputs) -> nn.Module:
    from thesislib.continuous import to_continuous  # lazy: the continuous package is optional here

    cnet = to_continuous(model, example_inputs)
    if isinstance(ratio, Mapping):
        sizes = {g.name: g.size for g in cnet.groups}
        unknown = sorted(set(ratio) - set(sizes))
        if unknown:
            raise ValueError(f"unknown continuous group(s) {unknown}; groups: {', '.join(sizes)}")
        cnet.resample({k: max(1, round(check_ratio(r) * sizes[k])) for k, r in ratio.items()})
    else:
        cnet.resample(ratio)
    return cnet.export()


def prune(net: nn.Module, method: str, ratio: float | Mapping[str, float], example_inputs: torch.Tensor,
          calib: Iterable | None = None, allocation: str = "uniform", recalibrate: bool = False,
          calib_batches: int = 20, ignored_layers: Sequence[nn.Module] | None = None, seed: int = 0,
          attention: str = "head_dim", scores: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Return a physically smaller copy of ``net`` pruned by ``method`` keeping ``ratio`` of the channels.

    ``net`` is left untouched.  ``calib`` (a loader of ``(inputs, targets)``) feeds the data-driven methods
    (``taylor``, ``hessian``, ``obs``, ``lfp``) with its first ``calib_batches`` batches, and, with
    ``recalibrate=True``, the BatchNorm recalibration done after pruning for every method alike
    (:func:`recalibrate_batchnorm`).  ``ignored_layers`` (modules of ``net``) replace the default set of
    layers whose output channels stay (see :func:`structural.default_ignored_layers`); ``attention``
    says what ViT attention blocks lose: per-head dimensions (``"head_dim"``) or whole heads (``"heads"``).
    ``scores`` (from :func:`channel_scores` on the same network) reuses per-channel scores across ratios.  ``gmp`` without
    fine-tuning is magnitude (L2) pruning at the final sparsity; use :func:`fine_tune` with a
    :class:`GMPSchedule` for the gradual version.  The result is in eval mode.
    """
    check_method(method, calib, recalibrate)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if not isinstance(ratio, Mapping):
        check_ratio(ratio)
    if method == "continuous" and allocation != "uniform":
        raise ValueError("method 'continuous' supports allocation='uniform' (or a per-group ratio dict) only")
    model = copy.deepcopy(net).eval()
    device = model_device(model)
    example_inputs = example_inputs.to(device)
    if method == "continuous":
        small = _continuous(model, ratio, example_inputs)
    else:
        ignored = _map_ignored(net, model, ignored_layers)
        for p in model.parameters():
            p.requires_grad_(True)
        structure = analyse(model, example_inputs, ignored, attention)
        groups = structure.groups
        needs_scores = allocation == "global" and not isinstance(ratio, Mapping) and ratio < 1.0
        if scores is not None:
            missing = sorted({g.name for g in groups} - set(scores))
            if missing:
                raise ValueError(f"scores lack group(s) {missing}: compute them with channel_scores on this network")
            scores = dict(scores)
        elif needs_scores:
            scores = method_scores(method, model, groups, calib, calib_batches, seed)
        counts = allocate(groups, ratio, allocation, scores)
        own_scores = scores if method in _SCORED else None
        plans = plan_groups(method, model, groups, counts, calib, calib_batches, seed, own_scores)
        for g in groups:
            if g.name in plans:
                apply_merge(g, plans[g.name])
                remove_channels(structure, g, plans[g.name].keep)
        restore_spectral_norm(structure.spectral)
        model.zero_grad(set_to_none=True)
        small = model
    if recalibrate:
        recalibrate_batchnorm(small, calib, calib_batches)
    return small.eval()
