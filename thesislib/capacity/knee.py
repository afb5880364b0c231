"""Measured knees: the smallest width of one channel group that keeps the model's quality.

The knee of a group is the ground truth that every capacity estimator is judged
against: resample that group alone (every other group at full width), evaluate,
and bisect for the smallest width whose quality is within ``tol`` of the
full-width quality. Bisection assumes quality is non-decreasing in the width
(true up to noise for anti-aliased resampling; a non-monotone curve makes the
result one of possibly several crossings, still a width that passes).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import scipy.stats
from torch import nn

from thesislib.runtime import check_finite

Evaluate = Callable[[nn.Module], float]
Recalibrate = Callable[[nn.Module], None]


class ContinuousLike(Protocol):
    """What knees and allocations use of a continuous net (:class:`thesislib.continuous.ContinuousNet`
    has it all; the tests' fakes implement just this)."""

    @property
    def groups(self) -> Sequence[Any]: ...

    @property
    def widths(self) -> dict[str, int]: ...

    @property
    def full_widths(self) -> dict[str, int]: ...

    def resample(self, ratio_or_dict: Any, antialias: bool = True) -> Any: ...

    def preserved(self, parameters: bool = False) -> AbstractContextManager[Any]: ...

    def eval(self) -> Any: ...


def group_by_name(cnet: ContinuousLike, name: str) -> Any:
    """The channel group of ``cnet`` called ``name``; ``ValueError`` listing the valid names."""
    for group in cnet.groups:
        if group.name == name:
            return group
    raise ValueError(f"unknown group {name!r}; groups: {[g.name for g in cnet.groups]}")


def full_widths(cnet: ContinuousLike) -> dict[str, int]:
    """``{group_name: original size}`` of ``cnet`` (``cnet.full_widths``)."""
    return dict(cnet.full_widths)


def preserved_state(cnet: ContinuousLike) -> AbstractContextManager[Any]:
    """``cnet.preserved(parameters=True)``: widths, sampling mode, recalibrated statistics, train/eval mode
    and control points are restored on exit (a recalibration or a fine-tuning inside may rewrite them)."""
    return cnet.preserved(parameters=True)


def _quality(cnet: ContinuousLike, widths: Mapping[str, int], evaluate: Evaluate, antialias: bool,
             recalibrate: Recalibrate | None) -> float:
    cnet.resample(dict(widths), antialias=antialias)
    if recalibrate is not None:
        recalibrate(cnet)
    cnet.eval()
    return float(evaluate(cnet))


def _check_quality(value: float, where: str) -> None:
    if not math.isfinite(value):
        raise ValueError(f"evaluate returned {value} at {where}: a knee needs a finite quality "
                         "(NaN weights or an empty evaluation set?)")


def bisect_smallest(passes: Callable[[int], bool], lo: int, hi: int, steps: int | None = None) -> int:
    """Smallest ``w`` in ``[lo, hi]`` with ``passes(w)``, given ``passes(hi)`` and monotonicity.

    With ``steps`` the bisection stops after that many evaluations and returns
    the smallest width known to pass (an upper bound on the knee).
    """
    if lo > hi:
        raise ValueError(f"empty width range [{lo}, {hi}]")
    done = 0
    while lo < hi and (steps is None or done < steps):
        mid = (lo + hi) // 2
        done += 1
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def width_grid(size: int, grid: int | None) -> list[int]:
    """Candidate widths ``ceil(i * size / grid)``, ``i = 1..grid`` (all of ``1..size`` when ``grid`` is None)."""
    if grid is None or grid >= size:
        return list(range(1, size + 1))
    if grid < 1:
        raise ValueError(f"grid must be a positive number of candidate widths, got {grid}")
    return sorted({-(-i * size // grid) for i in range(1, grid + 1)})


def knee_width(cnet: ContinuousLike, group: str, evaluate: Evaluate, tol: float = 0.01, antialias: bool = True,
               recalibrate: Recalibrate | None = None, steps: int | None = None,
               reference: float | None = None, grid: int | None = None) -> int:
    """Smallest width of ``group`` alone whose quality is at least ``full - tol``.

    ``evaluate(model) -> float`` is a quality (higher is better, e.g. accuracy);
    every other group is held at full width; ``recalibrate(cnet)`` (e.g. BatchNorm
    statistics on calibration batches) runs after every resampling, the full-width
    reference included, so all widths are compared under the same treatment.
    ``reference`` skips the full-width evaluation when it is already known.
    Bisection over ``[1, size]`` (or over the ``grid`` candidate widths
    ``ceil(i * size / grid)``: resolution ``size / grid``, ``log2(grid)`` evaluations)
    assumes quality non-decreasing in width; at most ``steps`` evaluations when
    given. ``cnet``'s widths and state are restored.
    """
    if tol < 0 or not math.isfinite(tol):
        raise ValueError(f"tol must be a finite non-negative quality drop, got {tol}")
    size = int(group_by_name(cnet, group).size)
    if isinstance(cnet, nn.Module):
        check_finite(cnet, "cnet")
    full = cnet.full_widths
    with cnet.preserved(parameters=True):
        if reference is None:
            reference = _quality(cnet, full, evaluate, antialias, recalibrate)
        _check_quality(reference, "full width")

        candidates = width_grid(size, grid)

        def passes(index: int) -> bool:
            width = candidates[index]
            return _quality(cnet, {**full, group: width}, evaluate, antialias, recalibrate) >= reference - tol

        return candidates[bisect_smallest(passes, 0, len(candidates) - 1, steps)]


@dataclass
class KneeTable:
    """Predicted widths per estimator against measured knees, per group."""

    groups: list[str]
    sizes: dict[str, int]
    knees: dict[str, int]
    predicted: dict[str, dict[str, int]]                   # estimator -> group -> width
    spearman: dict[str, float] = field(default_factory=dict)
    spearman_ratio: dict[str, float] = field(default_factory=dict)   # on width / size
    mean_relative_error: dict[str, float] = field(default_factory=dict)
    baselines: tuple[str, ...] = ("size",)

    @property
    def best(self) -> str | None:
        """The estimator (baselines excluded) with the highest Spearman correlation (ties: lower
        relative error)."""
        scored = [(e, s) for e, s in self.spearman.items() if not math.isnan(s) and e not in self.baselines]
        if not scored:
            return None
        return max(scored, key=lambda es: (es[1], -self.mean_relative_error[es[0]]))[0]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per group: name, size, knee and every estimator's width."""
        return [{"group": g, "size": self.sizes[g], "knee": self.knees[g],
                 **{e: p[g] for e, p in self.predicted.items()}} for g in self.groups]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``Run.save``)."""
        return {"rows": self.rows(), "spearman": self.spearman, "spearman_ratio": self.spearman_ratio,
                "mean_relative_error": self.mean_relative_error, "best": self.best}

    def __str__(self) -> str:
        estimators = list(self.predicted)
        head = ["group", "size", "knee", *estimators]
        lines = ["  ".join(f"{h:>10}" for h in head)]
        for row in self.rows():
            lines.append("  ".join(f"{str(row[h]):>10}" for h in head))
        lines.append("  ".join([f"{'spearman':>10}", " " * 10, " " * 10,
                                *(f"{self.spearman[e]:>10.3f}" for e in estimators)]))
        lines.append("  ".join([f"{'sp.ratio':>10}", " " * 10, " " * 10,
                                *(f"{self.spearman_ratio[e]:>10.3f}" for e in estimators)]))
        lines.append("  ".join([f"{'rel.err':>10}", " " * 10, " " * 10,
                                *(f"{self.mean_relative_error[e]:>10.3f}" for e in estimators)]))
        return "\n".join(lines)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(scipy.stats.spearmanr(a, b).statistic)


def compare(predicted: Mapping[str, Mapping[str, int]], knees: Mapping[str, int],
            sizes: Mapping[str, int] | None = None) -> KneeTable:
    """Spearman rank correlation and mean relative error ``|pred - knee| / knee`` per estimator.

    ``spearman`` ranks the widths themselves; ``spearman_ratio`` ranks ``width / size``
    (does the estimator tell which groups are *relatively* compressible — the widths
    alone correlate with the knees through the group sizes). With ``sizes`` given, a
    ``"size"`` baseline (predicted = size) is added. Spearman is NaN when either side
    is constant over the groups (undefined rank correlation) or there are fewer than two.
    """
    groups = list(knees)
    if not groups:
        raise ValueError("compare needs at least one group with a measured knee")
    preds = {e: {g: int(p[g]) for g in groups} for e, p in predicted.items()}
    if sizes is not None:
        preds.setdefault("size", {g: int(sizes[g]) for g in groups})
    table = KneeTable(groups=groups, sizes=dict(sizes or {g: 0 for g in groups}), knees=dict(knees),
                      predicted=preds)
    k = np.array([knees[g] for g in groups], dtype=float)
    n = np.array([sizes[g] if sizes is not None else 1 for g in groups], dtype=float)
    for estimator, pred in table.predicted.items():
        p = np.array([pred[g] for g in groups], dtype=float)
        table.spearman[estimator] = _spearman(p, k)
        table.spearman_ratio[estimator] = _spearman(p / n, k / n) if sizes is not None else float("nan")
        table.mean_relative_error[estimator] = float(np.mean(np.abs(p - k) / np.maximum(k, 1)))
    return table


def knee_table(cnet: ContinuousLike, evaluate: Evaluate, predicted: Mapping[str, Mapping[str, int]],
               groups: Sequence[str] | None = None, tol: float = 0.01, antialias: bool = True,
               recalibrate: Recalibrate | None = None, steps: int | None = None,
               grid: int | None = None) -> KneeTable:
    """Measure the knee of every group (or of ``groups``) and compare it with ``predicted``.

    ``predicted`` maps an estimator name to ``{group: width}``; the full-width
    quality is measured once and shared by all knee searches.
    """
    names = list(groups) if groups is not None else [g.name for g in cnet.groups]
    sizes = {n: int(group_by_name(cnet, n).size) for n in names}
    with cnet.preserved(parameters=True):
        reference = _quality(cnet, cnet.full_widths, evaluate, antialias, recalibrate)
    knees = {n: knee_width(cnet, n, evaluate, tol, antialias, recalibrate, steps, reference, grid) for n in names}
    return compare(predicted, knees, sizes)
