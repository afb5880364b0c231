"""Width allocation under a cost budget: uniform, capacity-proportional, and greedy cost-aware.

Cost model. Every profiled layer ``L`` (see :mod:`thesislib.capacity.profiling`)
has a full-width cost ``c_L`` (its MACs, or its measured latency). A layer whose
output channels belong to group ``p`` and input channels to group ``q`` costs

    c_L(w) = c_L * (w_p / n_p) * (w_q / n_q)

(a depthwise convolution: ``c_L * w_p / n_p``; a side without a group: factor 1;
several groups on one side: the mean of their ratios; an attention module scales
with the groups its ``qkv`` produces). For MACs this is exact for convolutions
and linear layers. For latency it models each layer's time as proportional to
its MACs at the *measured* per-layer time of the full model — the cost per MAC
differs between layers (early high-resolution convolutions, small matmuls), which
is what makes a latency budget allocate differently from a MACs budget. Time
outside the profiled layers (normalisation, activations, additions) is not
modelled; budgets are fractions of the modelled full-model cost ``sum_L c_L``,
and notebooks report the measured latency of the exported models.

Greedy allocation (:func:`allocate`). A group of capacity ``c_g`` (the width its
channel function needs) at width ``w`` keeps the capacity-normalised importance

    I_g(w) = log(min(w, c_g) / c_g) - oversampled_weight * (n_g - max(w, c_g)) / c_g :

samples above capacity are redundant by the sampling theorem and cost almost
nothing to remove (a small linear term breaks ties); below capacity every halving
of the sampling rate loses the same ``log 2`` whatever the group — scale-free, and
concave, so the marginal loss of a channel grows as the group shrinks and cuts are
spread instead of emptying the cheapest group (maximising ``sum_g I_g`` under a
linear cost is the proportional-fair allocation). Starting from full width,
repeatedly shrink (by ``step``) the group with the least lost importance per unit
of cost saved until the modelled cost meets the budget, then grow back, best
importance regained per unit of cost first, wherever the budget still allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from thesislib.capacity.knee import ContinuousLike
from thesislib.capacity.profiling import Profile
from thesislib.graph import Role, keep_count

if TYPE_CHECKING:
    from thesislib.continuous import ContinuousNet

COSTS = ("latency", "macs")


def check_budget(budget: float) -> float:
    """``budget`` as a float, or ``ValueError`` unless it is in (0, 1]."""
    budget = float(budget)
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a fraction of the full model's cost in (0, 1], got {budget}")
    return budget


def check_cost(cost: str) -> str:
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}: choose one of {', '.join(COSTS)}")
    return cost


@dataclass
class _Layer:
    cost: float
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    depthwise: bool = False


class CostModel:
    """Modelled cost of ``cnet`` at any ``{group: width}`` (see the module docstring)."""

    def __init__(self, cnet: ContinuousLike, profile: Profile, cost: str = "latency"):
        check_cost(cost)
        self.sizes = {g.name: int(g.size) for g in cnet.groups}
        self.cost = cost
        layers: dict[str, _Layer] = {}
        for name, lp in profile.layers.items():
            c = float(lp.macs if cost == "macs" else lp.latency)
            layers[name] = _Layer(cost=c, depthwise=lp.depthwise)
        for group in cnet.groups:
            for member in group.members:
                layer = layers.get(member.module_name)
                if layer is None or member.role not in (Role.PRODUCER, Role.CONSUMER):
                    continue
                side = layer.producers if member.role == Role.PRODUCER else layer.consumers
                if group.name not in side:
                    side.append(group.name)
        for name, layer in layers.items():     # attention modules follow their qkv projection
            if profile.layers[name].kind == "attention" and not layer.producers:
                qkv = layers.get(name + ".qkv")
                if qkv is not None:
                    layer.producers = list(qkv.producers)
        self.layers = layers
        self.by_group: dict[str, list[str]] = {g: [] for g in self.sizes}
        for name, layer in layers.items():
            for g in set(layer.producers) | set(layer.consumers):
                self.by_group[g].append(name)
        self.full = self.total(self.sizes)
        if self.full <= 0:
            raise ValueError("the profile gives the model zero cost; nothing to allocate")

    def _factor(self, groups: list[str], widths: Mapping[str, int]) -> float:
        if not groups:
            return 1.0
        return sum(widths[g] / self.sizes[g] for g in groups) / len(groups)

    def layer_cost(self, name: str, widths: Mapping[str, int]) -> float:
        layer = self.layers[name]
        out_f = self._factor(layer.producers, widths)
        if layer.depthwise and layer.producers:
            return layer.cost * out_f
        return layer.cost * out_f * self._factor(layer.consumers, widths)

    def total(self, widths: Mapping[str, int]) -> float:
        """Modelled cost at ``widths`` (groups missing from it are at full width)."""
        full = {**self.sizes, **widths}
        return sum(self.layer_cost(name, full) for name in self.layers)

    def fraction(self, widths: Mapping[str, int]) -> float:
        """Modelled cost at ``widths`` as a fraction of the full model's."""
        return self.total(widths) / self.full

    def group_delta(self, group: str, widths: Mapping[str, int], new_width: int) -> float:
        """Cost change when only ``group`` moves to ``new_width``."""
        after = {**widths, group: new_width}
        return sum(self.layer_cost(n, after) - self.layer_cost(n, widths) for n in self.by_group[group])


def _resolve(cnet: ContinuousLike, cost: str, profile: Profile | None, example_inputs: Any) -> CostModel:
    check_cost(cost)
    if profile is None:
        profile = profile_continuous(cnet, example_inputs)
    return CostModel(cnet, profile, cost)


def profile_continuous(cnet: ContinuousNet, example_inputs: Any = None, **kwargs: Any) -> Profile:
    """Profile of ``cnet`` exported at full width (``example_inputs`` or ``cnet.example_inputs``)."""
    from thesislib.capacity.profiling import profile

    if example_inputs is None:
        example_inputs = getattr(cnet, "example_inputs", None)
    if example_inputs is None:
        raise ValueError("allocate needs a profile= or example_inputs= to measure the model's cost")
    with cnet.preserved():
        cnet.resample(1.0, antialias=False)
        plain = cnet.export()
    return profile(plain, example_inputs, **kwargs)


def _min_check(model: CostModel, budget: float) -> None:
    smallest = {g: 1 for g in model.sizes}
    reachable = model.fraction(smallest)
    if reachable > budget:
        raise ValueError(f"no width assignment meets budget {budget:.4g}: the minimum reachable "
                         f"{model.cost} fraction (every group at width 1) is {reachable:.4g}")


def _check_capacity(capacity: Mapping[str, float]) -> None:
    bad = {g: c for g, c in capacity.items() if not (math.isfinite(float(c)) and float(c) > 0)}
    if bad:
        raise ValueError(f"capacities must be finite positive widths, got {bad}")


def _step_of(step: int | float, size: int) -> int:
    if isinstance(step, float) and 0 < step < 1:
        return keep_count(step, size)
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive int (channels) or a float in (0, 1) (fraction), got {step}")
    return int(step)


def importance(w: int, c: float, n: int, oversampled_weight: float) -> float:
    """Capacity-normalised importance ``I(w)`` of a group of capacity ``c`` and size ``n`` (module docstring)."""
    return math.log(min(w, c) / c) - oversampled_weight * (max(n, c) - max(w, c)) / c


def _loss(w_from: int, w_to: int, c: float, oversampled_weight: float, n: int) -> float:
    """Importance lost moving a group of capacity ``c`` from ``w_from`` to ``w_to``."""
    return importance(w_from, c, n, oversampled_weight) - importance(w_to, c, n, oversampled_weight)


def allocate(cnet: ContinuousLike, budget: float, cost: str = "latency", capacity: Mapping[str, int] | None = None,
             profile: Profile | None = None, step: int | float = 1, example_inputs: Any = None,
             oversampled_weight: float = 0.01, energy: float = 0.99, method: str = "weights") -> dict[str, int]:
    """Per-group widths whose modelled ``cost`` is at most ``budget`` of the full model's.

    Greedy on capacity-normalised importance per unit of cost (module docstring).
    ``capacity``: ``{group: predicted width}`` (default: ``group_capacity`` with
    ``energy`` and ``method``); ``profile``: a :class:`Profile` of the full-width
    model (default: measured on ``cnet.export()`` with ``example_inputs``);
    ``step``: channels per move (int) or a fraction of each group's size.
    Widths stay in ``[1, size]``; ``ValueError`` when even width 1 everywhere
    exceeds the budget, naming the minimum reachable fraction.
    """
    budget = check_budget(budget)
    model = _resolve(cnet, cost, profile, example_inputs)
    _min_check(model, budget)
    if capacity is None:
        from thesislib.capacity.estimators import capacities
        capacity = capacities(cnet, energy=energy, method=method)
    _check_capacity(capacity)
    caps = {g: min(float(n), max(1.0, float(capacity.get(g, n)))) for g, n in model.sizes.items()}
    steps = {g: _step_of(step, n) for g, n in model.sizes.items()}
    widths = dict(model.sizes)
    limit = budget * model.full
    current = model.total(widths)
    while current > limit:
        best, best_score = None, math.inf
        for g, w in widths.items():
            if w <= 1:
                continue
            to = max(1, w - steps[g])
            delta = model.group_delta(g, widths, to)
            if delta >= 0:
                continue
            score = _loss(w, to, caps[g], oversampled_weight, model.sizes[g]) / -delta
            if score < best_score:
                best, best_score = g, score
        if best is None:      # cannot happen after _min_check unless costs are degenerate
            raise ValueError(f"no width assignment meets budget {budget:.4g}")
        widths[best] = max(1, widths[best] - steps[best])
        current = model.total(widths)
    while True:               # spend what the last shrink step left of the budget
        best, best_score = None, -math.inf
        for g, w in widths.items():
            if w >= model.sizes[g]:
                continue
            to = min(model.sizes[g], w + steps[g])
            delta = model.group_delta(g, widths, to)
            if model.total({**widths, g: to}) > limit:
                continue
            score = _loss(to, w, caps[g], oversampled_weight, model.sizes[g]) / max(delta, 1e-300)
            if score > best_score:
                best, best_score = g, score
        if best is None:
            break
        widths[best] = min(model.sizes[best], widths[best] + steps[best])
    return widths


def proportional_widths(cnet: ContinuousLike, budget: float, capacity: Mapping[str, float], cost: str = "macs",
                        profile: Profile | None = None, example_inputs: Any = None) -> dict[str, int]:
    """Widths ``clip(round(a * capacity[g]), 1, size)`` with the largest ``a`` meeting the budget.

    Cost-agnostic: every group keeps the same multiple of its capacity (the
    "Nyquist allocation"). ``capacity`` = the sizes gives uniform widths.
    """
    budget = check_budget(budget)
    model = _resolve(cnet, cost, profile, example_inputs)
    _min_check(model, budget)
    _check_capacity(capacity)
    caps = {g: max(1e-9, float(capacity.get(g, n))) for g, n in model.sizes.items()}

    def widths_at(a: float) -> dict[str, int]:
        return {g: min(n, max(1, int(round(a * caps[g])))) for g, n in model.sizes.items()}

    limit = budget * model.full
    lo, hi = 0.0, max(n / caps[g] for g, n in model.sizes.items()) + 1.0
    if model.total(widths_at(hi)) <= limit:
        return widths_at(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if model.total(widths_at(mid)) <= limit:
            lo = mid
        else:
            hi = mid
    return widths_at(lo)


def uniform_widths(cnet: ContinuousLike, budget: float, cost: str = "macs", profile: Profile | None = None,
                   example_inputs: Any = None) -> dict[str, int]:
    """The same width ratio for every group (rounded), the largest that meets the budget."""
    return proportional_widths(cnet, budget, dict(cnet.full_widths), cost, profile, example_inputs)
