"""``prune``: every structured-pruning baseline of the thesis behind one call, looked up in one registry.

Each method is a :class:`PruningMethod` registered with :func:`register_method` (in the spirit of
Torch-Pruning's importance classes and timm's model registry): its name, whether it needs calibration
data, and either a per-channel ``score`` (the kept channels are its top-k per partition) optionally
with its own ``plan`` (select / merge / reconstruct inside each group), or a whole-network ``convert``
(``continuous``).  :data:`METHODS`, :data:`NEEDS_CALIB` and every dispatch derive from the registry.

``ratio`` is the fraction of channels *kept*, with the meaning of ``cnet.resample(ratio)``: every prunable
group keeps :func:`thesislib.graph.keep_count` ``= max(1, round(ratio · n))`` of its ``n`` channels
(``allocation="uniform"``), or the whole network keeps ``round(ratio · Σ n)`` channels chosen by
mean-normalised scores across groups (``allocation="global"``; methods with their own plan -- ``obs``,
``ifm``, ``fold`` -- allocate by the L2 filter norm, then select/merge with their own rule inside each group).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from thesislib.graph import Role, keep_count
from thesislib.runtime import check_finite, model_device
from thesislib.registry import Registry

from . import importance
from .calibration import recalibrate_batchnorm
from .merging import fold_plan, ifm_plan
from .obs import input_hessians, obs_plan
from .structural import ChannelGroup, Plan, analyse, apply_merge, remove_channels, restore_spectral_norm

#: ``score(model, groups, calib, batches, seed) -> {group name: per-channel score}`` (higher = keep).
ScoreFn = Callable[[nn.Module, list[ChannelGroup], Iterable | None, int, int], dict[str, torch.Tensor]]
#: ``plan(model, groups, counts, calib, batches, seed) -> {group name: Plan}``; ``counts[g]`` = kept per partition.
PlanFn = Callable[[nn.Module, list[ChannelGroup], dict[str, list[int]], Iterable | None, int, int], dict[str, Plan]]
#: ``convert(model, ratio, example_inputs) -> smaller plain model`` (a whole-network method).
ConvertFn = Callable[[nn.Module, "float | Mapping[str, float]", torch.Tensor], nn.Module]

ALLOCATIONS: tuple[str, ...] = ("uniform", "global")


@dataclass(frozen=True)
class PruningMethod:
    """One pruning method: ``score`` (per-channel, higher = keep) with an optional own ``plan``, or a
    whole-network ``convert``; ``needs_calibration``: ``prune`` refuses it without ``calib``."""

    name: str
    needs_calibration: bool
    description: str
    citation: str = ""
    score: ScoreFn | None = None
    plan: PlanFn | None = None
    convert: ConvertFn | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"a pruning method name must be a plain identifier, got {self.name!r}")
        if (self.score is None) == (self.convert is None):
            raise ValueError(f"method {self.name!r}: give either score= (per-channel scores, optionally with "
                             "plan=) or convert= (a whole-network method), not both or neither")
        if self.convert is not None and self.plan is not None:
            raise ValueError(f"method {self.name!r}: a whole-network convert= method has no per-group plan=")

    @property
    def selects_by_score(self) -> bool:
        """Its own scores choose the kept channels (top-k per partition), so scores from
        :func:`channel_scores` can be reused across ratios."""
        return self.score is not None and self.plan is None


#: Every registered method by name, in registration order.
METHOD_REGISTRY: Registry[PruningMethod] = Registry(
    "pruning method", PruningMethod, unknown="unknown pruning method {name!r}; METHODS = {names}")


def register_method(method: PruningMethod) -> PruningMethod:
    """Add ``method`` to the registry (``ValueError`` when the name is taken); returns it."""
    return METHOD_REGISTRY.register(method)


def get_method(method: str | PruningMethod) -> PruningMethod:
    """The registered method called ``method``; ``ValueError`` listing the valid names otherwise."""
    return method if isinstance(method, PruningMethod) else METHOD_REGISTRY.lookup(method)


def check_ratio(ratio: float, what: str = "ratio") -> float:
    """A kept fraction in (0, 1]; ``ValueError`` otherwise."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 < ratio <= 1:
        raise ValueError(f"{what} is the fraction of channels kept and must be in (0, 1], got {ratio!r}")
    return float(ratio)


def check_method(method: str, calib: Iterable | None, recalibrate: bool) -> PruningMethod:
    """The registered method, after checking that the calibration data it (or ``recalibrate``) needs is given."""
    spec = get_method(method)
    if spec.needs_calibration and calib is None:
        raise ValueError(f"method {spec.name!r} needs calibration data: pass calib=<loader of (inputs, targets)>")
    if recalibrate and calib is None:
        raise ValueError("recalibrate=True needs calib=<loader> to re-estimate BatchNorm statistics")
    return spec


def top_k_per_partition(scores: torch.Tensor, partitions: Sequence[Sequence[int]], counts: Sequence[int]) -> list[int]:
    """Indices of the ``counts[i]`` highest ``scores`` inside each ``partitions[i]`` (ties: the lower index),
    all partitions together, sorted; the one selection rule of every score-based method."""
    if len(partitions) != len(counts):
        raise ValueError(f"{len(counts)} counts for {len(partitions)} partitions")
    keep: list[int] = []
    for part, k in zip(partitions, counts):
        part = list(part)
        if not 0 <= k <= len(part):
            raise ValueError(f"cannot keep {k} of a partition of {len(part)} channels")
        order = torch.argsort(-scores[part], stable=True)[:k]
        keep += [part[int(i)] for i in order]
    return sorted(keep)


def _check_scores(scores: Mapping[str, torch.Tensor], groups: list[ChannelGroup]) -> None:
    for g in groups:
        s = scores[g.name]
        if s.numel() != g.size:
            raise ValueError(f"scores[{g.name!r}] has {s.numel()} entries for a group of {g.size} channels")
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"scores[{g.name!r}] hold NaN or infinite values: check the network's weights "
                             "and the calibration data")


def method_scores(method: str | PruningMethod, model: nn.Module, groups: list[ChannelGroup], calib, batches: int,
                  seed: int) -> dict[str, torch.Tensor]:
    """Per-channel scores of a registered method (``ValueError`` for a whole-network method)."""
    spec = get_method(method)
    if spec.score is None:
        raise ValueError(f"method {spec.name!r} has no per-channel scores")
    return spec.score(model, groups, calib, batches, seed)


def channel_scores(net: nn.Module, method: str, example_inputs: torch.Tensor, calib: Iterable | None = None,
                   calib_batches: int = 20, seed: int = 0, ignored_layers: Sequence[nn.Module] | None = None,
                   attention: str = "head_dim") -> dict[str, torch.Tensor]:
    """Per-channel scores of ``method`` for every prunable group of ``net`` (on a copy), for reuse in
    :func:`prune` across ratios; ``obs``/``ifm``/``fold`` give the L2 norms they allocate by globally."""
    spec = check_method(method, calib, False)
    if spec.score is None:
        raise ValueError(f"method {spec.name!r} has no per-channel scores")
    check_finite(net)
    model = copy.deepcopy(net).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    structure = analyse(model, example_inputs.to(model_device(model)), _map_ignored(net, model, ignored_layers),
                        attention)
    return spec.score(model, structure.groups, calib, calib_batches, seed)


def allocate(groups: list[ChannelGroup], ratio: float | Mapping[str, float], allocation: str,
             scores: Mapping[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
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
    if scores is None:
        raise ValueError("allocation='global' needs scores={group: per-channel scores} (see channel_scores)")
    missing = sorted({g.name for g in groups} - set(scores))
    if missing:
        raise ValueError(f"scores lack group(s) {missing}: compute them with channel_scores on this network")
    _check_scores(scores, groups)
    normalised = torch.cat([scores[g.name].double() / scores[g.name].double().mean().clamp_min(1e-30) for g in groups])
    total = sum(g.size for g in groups)
    k = max(len(groups), round(ratio * total))
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[top_k_per_partition(normalised, [range(total)], [min(k, total)])] = True
    counts, start = {}, 0
    for g in groups:
        n = int(chosen[start:start + g.size].sum())
        start += g.size
        per = max(1, round(n / len(g.partitions)))
        counts[g.name] = [min(per, len(p)) for p in g.partitions]
    return counts


def plan_groups(method: str | PruningMethod, model: nn.Module, groups: list[ChannelGroup],
                counts: dict[str, list[int]], calib, batches: int, seed: int,
                scores: Mapping[str, torch.Tensor] | None) -> dict[str, Plan]:
    """What each group that loses channels keeps (and merges) under ``method``: its own ``plan`` when it
    has one (``obs`` already updates the consumers there), else the top-k of its scores per partition
    (``scores`` when given, else computed on those groups)."""
    spec = get_method(method)
    todo = [g for g in groups if sum(counts[g.name]) < g.size]
    if not todo:
        return {}
    if spec.plan is not None:
        return spec.plan(model, todo, counts, calib, batches, seed)
    if scores is None:
        scores = method_scores(spec, model, todo, calib, batches, seed)
    _check_scores(scores, todo)
    return {g.name: Plan(keep=top_k_per_partition(scores[g.name], g.partitions, counts[g.name])) for g in todo}


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


# ---------------------------------------------------------------------------------------- the methods


def _random(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.random_scores(groups, seed)


def _l1(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.magnitude_scores(groups, 1)


def _l2(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.magnitude_scores(groups, 2)


def _bn_scale(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.bn_scale_scores(groups)


def _taylor(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.taylor_scores(model, groups, calib, batches)


def _hessian(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.hessian_scores(model, groups, calib, batches)


def _lfp(model: nn.Module, groups: list[ChannelGroup], calib, batches: int, seed: int) -> dict[str, torch.Tensor]:
    return importance.lfp_scores(model, groups, calib, batches)


def _obs(model: nn.Module, groups: list[ChannelGroup], counts: dict[str, list[int]], calib, batches: int,
         seed: int) -> dict[str, Plan]:
    hessians = input_hessians(model, [m.module for g in groups for m in g.by_role(Role.CONSUMER)], calib, batches)
    plans = {}
    for g in groups:
        plan = obs_plan(g, hessians, counts[g.name])
        if plan is None:  # no consumer to reconstruct: L2 norm
            l2 = importance.magnitude_scores([g], 2)[g.name]
            plan = Plan(keep=top_k_per_partition(l2, g.partitions, counts[g.name]))
        plans[g.name] = plan
    return plans


def _ifm(model: nn.Module, groups: list[ChannelGroup], counts: dict[str, list[int]], calib, batches: int,
         seed: int) -> dict[str, Plan]:
    return {g.name: ifm_plan(g, counts[g.name]) for g in groups}


def _fold(model: nn.Module, groups: list[ChannelGroup], counts: dict[str, list[int]], calib, batches: int,
          seed: int) -> dict[str, Plan]:
    return {g.name: fold_plan(g, counts[g.name], seed) for g in groups}


def _continuous(model: nn.Module, ratio: float | Mapping[str, float], example_inputs: torch.Tensor) -> nn.Module:
    # imported on use: ``import thesislib.pruning`` does not load the continuous package
    from thesislib.continuous import to_continuous

    cnet = to_continuous(model, example_inputs)
    if isinstance(ratio, Mapping):
        sizes = cnet.full_widths
        unknown = sorted(set(ratio) - set(sizes))
        if unknown:
            raise ValueError(f"unknown continuous group(s) {unknown}; groups: {', '.join(sizes)}")
        cnet.resample({k: keep_count(check_ratio(r, f"ratio[{k!r}]"), sizes[k]) for k, r in ratio.items()})
    else:
        cnet.resample(ratio)
    return cnet.export()


for _method in (
    PruningMethod("random", False, "uniformly random channels (the floor every criterion must beat)", score=_random),
    PruningMethod("l1", False, "L1 norm of each output filter",
                  "Li et al. 2017, Pruning Filters for Efficient ConvNets", score=_l1),
    PruningMethod("l2", False, "L2 norm of each output filter", "Li et al. 2017", score=_l2),
    PruningMethod("bn_scale", False, "|gamma| of the BatchNorm that follows the producer (network slimming)",
                  "Liu et al. 2017, Learning Efficient Convolutional Networks through Network Slimming",
                  score=_bn_scale),
    PruningMethod("taylor", True, "first-order Taylor estimate of the loss change per channel",
                  "Molchanov et al. 2019, Importance Estimation for Neural Network Pruning", score=_taylor),
    PruningMethod("hessian", True, "diagonal-Fisher (OBD) saliency per channel",
                  "LeCun, Denker, Solla 1990, Optimal Brain Damage", score=_hessian),
    PruningMethod("obs", True, "layer-wise Optimal Brain Surgeon: remove channels, reconstruct the consumers",
                  "Dong et al. 2017; Frantar et al. 2022 (OBC)", score=_l2, plan=_obs),
    PruningMethod("lfp", True, "low-frequency preference of the feature maps", "Zhang et al. 2023", score=_lfp),
    PruningMethod("ifm", False, "iterative feature merging: fold the most similar channels together",
                  "Chen, Zhou, Yan 2023", score=_l2, plan=_ifm),
    PruningMethod("fold", False, "k-means channel folding: merge each cluster of channels into one",
                  score=_l2, plan=_fold),
    PruningMethod("gmp", False, "magnitude (L2) pruning; gradual during fine_tune with a GMPSchedule",
                  "Zhu & Gupta 2017, To prune, or not to prune", score=_l2),
    PruningMethod("continuous", False, "to_continuous -> resample -> export (Integral Neural Networks)",
                  "Solodskikh et al. 2023, Integral Neural Networks", convert=_continuous),
):
    register_method(_method)
del _method

#: The built-in methods, in registration order (:data:`METHOD_REGISTRY` also holds any registered later).
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)
#: Built-in methods that refuse to run without calibration data.
NEEDS_CALIB: frozenset[str] = frozenset(n for n, m in METHOD_REGISTRY.items() if m.needs_calibration)
#: Built-in methods whose scores choose the kept channels (scores reusable across ratios).
SCORED: tuple[str, ...] = tuple(n for n, m in METHOD_REGISTRY.items() if m.selects_by_score)


def prune(net: nn.Module, method: str, ratio: float | Mapping[str, float], example_inputs: torch.Tensor,
          calib: Iterable | None = None, allocation: str = "uniform", recalibrate: bool = False,
          calib_batches: int = 20, ignored_layers: Sequence[nn.Module] | None = None, seed: int = 0,
          attention: str = "head_dim", scores: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Return a physically smaller copy of ``net`` pruned by ``method`` keeping ``ratio`` of the channels.

    ``net`` is left untouched.  ``calib`` (a loader of ``(inputs, targets)``) feeds the data-driven methods
    (those with ``needs_calibration``: ``taylor``, ``hessian``, ``obs``, ``lfp``) with its first
    ``calib_batches`` batches, and, with ``recalibrate=True``, the BatchNorm recalibration done after
    pruning for every method alike (:func:`recalibrate_batchnorm`).  ``ignored_layers`` (modules of
    ``net``) replace the default set of layers whose output channels stay (see
    :func:`structural.default_ignored_layers`); ``attention`` says what ViT attention blocks lose:
    per-head dimensions (``"head_dim"``) or whole heads (``"heads"``).  ``scores`` (from
    :func:`channel_scores` on the same network) reuses per-channel scores across ratios.  ``gmp`` without
    fine-tuning is magnitude (L2) pruning at the final sparsity; use :func:`fine_tune` with a
    :class:`GMPSchedule` for the gradual version.  The result is in eval mode.
    """
    spec = check_method(method, calib, recalibrate)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    if not isinstance(ratio, Mapping):
        check_ratio(ratio)
    if spec.convert is not None and allocation != "uniform":
        raise ValueError(f"method {spec.name!r} supports allocation='uniform' (or a per-group ratio dict) only")
    check_finite(net)
    model = copy.deepcopy(net).eval()
    device = model_device(model)
    example_inputs = example_inputs.to(device)
    if spec.convert is not None:
        small = spec.convert(model, ratio, example_inputs)
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
            scores = method_scores(spec, model, groups, calib, calib_batches, seed)
        counts = allocate(groups, ratio, allocation, scores)
        plans = plan_groups(spec, model, groups, counts, calib, calib_batches, seed,
                            scores if spec.selects_by_score else None)
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
