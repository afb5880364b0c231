"""Training one network for every width: INN random widths and universally slimmable training.

:func:`train_continuous` trains a :class:`~thesislib.continuous.ContinuousNet` (or a
:class:`~thesislib.slimmable.SlimmableNet`) so that it runs at any width afterwards:

* **random widths** (Integral Neural Networks, Solodskikh et al. CVPR 2023, Sec. 4.2): every step
  draws widths ``{group: m}`` from a *width distribution* and computes the loss of the network
  sampled at them (naive sampling, no low-pass, as :meth:`ContinuousNet.train_widths` does);
* **sandwich rule** (Yu & Huang, "Universally Slimmable Networks", ICCV 2019, Sec. 3.2): every step
  runs the *largest* widths, the *smallest* widths and ``random_widths`` random ones and sums their
  losses (one backward of the sum = the accumulated gradients of the paper's Alg. 1, then one
  optimizer step);
* **in-place distillation** (ibid., Sec. 3.3): the largest width is trained on the labels and every
  other width on the largest width's *detached* prediction (:func:`inplace_distillation_loss`);
* **BatchNorm recalibration per width** (ibid., Sec. 3.4; statistics of a reduced width are never
  accumulated during training): :func:`calibrate_widths` re-estimates the statistics at each
  evaluated width and keeps one :class:`~thesislib.continuous.net.NetState` per width, so
  ``result.at(0.5)`` puts the network at ratio 0.5 with its own statistics.

A width distribution is a callable ``(step, generator) -> {group: width}`` (so a distributed run can
draw it on one rank and broadcast it), a :class:`WidthSampler` (uniform or log-uniform kept ratios,
per group or shared), or a ``(low, high)`` pair of kept ratios (uniform). Under torchrun every rank must
train the same widths in a step: pass ``widths=lambda step, gen: broadcast_draw(lambda: sampler(step, gen))``
(:func:`thesislib.distributed.broadcast_draw`: drawn on rank 0, broadcast to the others). Training is
:func:`thesislib.training.train` with callbacks (width draw, step timer, a tqdm bar showing the width
drawn and the loss).
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from thesislib.graph import keep_count
from thesislib.training import Callback, TrainState, cosine_factor, train

__all__ = ["WidthSampler", "width_sampler", "check_widths", "inplace_distillation_loss", "train_continuous",
           "calibrate_widths", "WidthTraining", "DISTRIBUTIONS", "StepTimer"]

#: named width distributions of :class:`WidthSampler`
DISTRIBUTIONS: tuple[str, ...] = ("uniform", "log_uniform")

WidthDraw = Callable[[int, torch.Generator], Mapping[str, int]]


def check_widths(widths: Mapping[str, int], sizes: Mapping[str, int], what: str = "the width distribution") -> dict[str, int]:
    """``widths`` as a plain dict after checking it names exactly the groups of ``sizes`` and every width is an
    int in ``[1, size]``; ``ValueError`` naming the valid range otherwise."""
    if not isinstance(widths, Mapping):
        raise ValueError(f"{what} must return a dict {{group: width}}, got {type(widths).__name__}")
    missing, extra = set(sizes) - set(widths), set(widths) - set(sizes)
    if missing or extra:
        raise ValueError(f"{what} must give a width for every group and only those: missing {sorted(missing)}, "
                         f"unknown {sorted(extra)}; the groups are {sorted(sizes)}")
    out = {}
    for name, m in widths.items():
        n = sizes[name]
        try:
            if isinstance(m, bool):
                raise TypeError
            m = operator.index(m.item() if isinstance(m, torch.Tensor) and m.numel() == 1 else m)
        except TypeError:
            raise ValueError(f"{what} returned {m!r} for group {name!r}: widths are ints in [1, {n}]") from None
        if not 1 <= m <= n:
            raise ValueError(f"{what} returned width {m} for group {name!r}, which has {n} channels: "
                             f"widths must be in [1, {n}]")
        out[name] = m
    return out


@dataclass(frozen=True)
class WidthSampler:
    """Kept ratios ``r`` in ``[low, high]`` drawn ``uniform``-ly or ``log_uniform``-ly (density ∝ 1/r: as much
    mass on [0.25, 0.5] as on [0.5, 1], i.e. biased to small widths); width ``keep_count(r, n)`` per group.
    ``per_group=True`` draws one ratio per group (INN, Sec. 4.2), ``False`` one ratio for all groups (a width
    multiplier, as slimmable networks). ``smallest`` / ``largest`` are the sandwich rule's extremes."""

    sizes: Mapping[str, int]
    low: float = 0.25
    high: float = 1.0
    kind: str = "uniform"
    per_group: bool = True

    def __post_init__(self) -> None:
        if self.kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown width distribution {self.kind!r}; valid: {', '.join(DISTRIBUTIONS)}")
        if not (isinstance(self.low, (int, float)) and isinstance(self.high, (int, float))
                and 0 < self.low <= self.high <= 1):
            raise ValueError(f"kept ratios must satisfy 0 < low <= high <= 1, got ({self.low}, {self.high})")
        if not self.sizes:
            raise ValueError("a width sampler needs at least one group (a network with continuous groups)")

    def ratio(self, generator: torch.Generator) -> float:
        """One kept ratio from the distribution."""
        u = float(torch.rand((), generator=generator))
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * u
        return math.exp(math.log(self.low) + (math.log(self.high) - math.log(self.low)) * u)

    def __call__(self, step: int, generator: torch.Generator) -> dict[str, int]:
        shared = None if self.per_group else self.ratio(generator)
        return {name: min(n, keep_count(self.ratio(generator) if shared is None else shared, n))
                for name, n in self.sizes.items()}

    @property
    def smallest(self) -> dict[str, int]:
        """Every group at ``keep_count(low, n)``."""
        return {name: keep_count(self.low, n) for name, n in self.sizes.items()}

    @property
    def largest(self) -> dict[str, int]:
        """Every group at ``keep_count(high, n)``."""
        return {name: min(n, keep_count(self.high, n)) for name, n in self.sizes.items()}


def width_sampler(spec: WidthDraw | WidthSampler | tuple[float, float] | str, sizes: Mapping[str, int]
                  ) -> WidthDraw:
    """The width draw of ``spec``: a :class:`WidthSampler` as is, a ``(low, high)`` pair → uniform, a name of
    :data:`DISTRIBUTIONS` → that distribution on [0.25, 1], a callable ``(step, generator) -> widths`` as is."""
    if isinstance(spec, WidthSampler):
        return spec
    if isinstance(spec, str):
        return WidthSampler(dict(sizes), kind=spec)
    if callable(spec):
        return spec
    try:
        low, high = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise ValueError(f"widths must be a callable (step, generator) -> {{group: width}}, a WidthSampler, "
                         f"a (low, high) pair of kept ratios or one of {DISTRIBUTIONS}; got {spec!r}") from None
    return WidthSampler(dict(sizes), low, high)


def inplace_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """In-place distillation (Yu & Huang 2019, Sec. 3.3): cross-entropy of the student's logits against the
    softmax of the *detached* teacher logits (no gradient reaches the teacher); mean squared error to the
    detached teacher output for non-logit outputs (images)."""
    target = teacher.detach()
    if student.dim() == 2:
        return -(F.softmax(target, dim=1) * F.log_softmax(student, dim=1)).sum(1).mean()
    return F.mse_loss(student, target)


def _default_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from thesislib.pruning.calibration import task_loss

    return task_loss(output, target)


def _check_loader(loader: Iterable, what: str) -> None:
    if loader is None:
        return
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError(f"the {what} loader is empty: give a loader that yields at least one (inputs, targets) batch")


class _MultiWidth(nn.Module):
    """The network at each width of ``plan`` on the same batch; outputs stacked along a new first axis."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.plan: list[dict[str, int]] = []

    def forward(self, x: Any) -> torch.Tensor:
        outputs = []
        for widths in self.plan:
            self.net.resample(widths, antialias=False)
            outputs.append(self.net(x))
        return torch.stack(outputs)


class _DrawWidths(Callback):
    """Before every step: the plan of widths (sandwich: largest, smallest, then random draws)."""

    def __init__(self, wrapper: _MultiWidth, draw: WidthDraw, sizes: Mapping[str, int], generator: torch.Generator,
                 sandwich: tuple[dict[str, int], dict[str, int]] | None, random_widths: int) -> None:
        self.wrapper, self.draw, self.sizes, self.generator = wrapper, draw, sizes, generator
        self.sandwich, self.random_widths = sandwich, random_widths
        self.history: list[list[dict[str, int]]] = []

    def on_step_begin(self, state: TrainState) -> None:
        plan = [dict(w) for w in self.sandwich] if self.sandwich is not None else []
        plan += [check_widths(self.draw(state.step, self.generator), self.sizes) for _ in range(self.random_widths)]
        self.wrapper.plan = plan
        self.history.append(plan)


class StepTimer(Callback):
    """Wall time of every step (``seconds``), from after the batch draw to after the optimizer step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, state: TrainState) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, state: TrainState) -> None:
        self.seconds.append(time.perf_counter() - self._start)


class _Progress(Callback):
    """A tqdm bar: the mean kept ratio of the step's random widths and the loss."""

    def __init__(self, steps: int, draws: _DrawWidths, enabled: bool, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, disable=not enabled, desc=desc, leave=False)
        self.draws = draws

    def on_step_end(self, state: TrainState) -> None:
        plan = self.draws.history[-1][-self.draws.random_widths or None:]
        sizes = self.draws.sizes
        ratio = sum(w[g] / sizes[g] for w in plan for g in w) / max(1, sum(len(w) for w in plan))
        self.bar.set_postfix(width=f"{ratio:.2f}", loss=f"{state.loss:.3f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()


class _WidthLoss:
    """Sum over the plan's widths: the task loss, or (distillation) the task loss for the first (largest)
    width and :func:`inplace_distillation_loss` against it for the others."""

    def __init__(self, base: Callable[[Any, Any], torch.Tensor], distill: bool) -> None:
        self.base, self.distill = base, distill

    def __call__(self, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
        loss = self.base(outputs[0], targets)
        for out in outputs[1:]:
            loss = loss + (inplace_distillation_loss(out, outputs[0]) if self.distill else self.base(out, targets))
        return loss


@dataclass
class WidthTraining:
    """What :func:`train_continuous` returns: the trained ``net``, every step's loss (summed over its widths),
    the widths of every step (``widths[step]``: a list of ``{group: width}``, sandwich extremes first), the wall
    time of every step, and ``calibrations`` ``{ratio: NetState}`` (BatchNorm recalibrated at that ratio)."""

    net: nn.Module
    losses: list[float]
    widths: list[list[dict[str, int]]]
    step_seconds: list[float]
    calibrations: dict[float, Any] = field(default_factory=dict)

    @property
    def passes(self) -> int:
        """Forward-backward passes over a batch in all (one per width per step)."""
        return sum(len(plan) for plan in self.widths)

    def at(self, ratio: float) -> nn.Module:
        """The network at kept ratio ``ratio`` with the BatchNorm statistics recalibrated there (eval mode)."""
        if ratio not in self.calibrations:
            raise ValueError(f"no recalibration at ratio {ratio}; recalibrated ratios: {sorted(self.calibrations)}")
        return self.net.restore(self.calibrations[ratio])


def calibrate_widths(net: nn.Module, loader: Iterable, ratios: Sequence[float], batches: int = 20,
                     antialias: bool = True) -> dict[float, Any]:
    """``{ratio: NetState}``: for each kept ratio, ``net.resample(ratio, antialias)`` and the BatchNorm running
    statistics re-estimated on ``batches`` batches of ``loader`` at those widths (a fresh cumulative average,
    :meth:`ContinuousNet.recalibrate`; Yu & Huang 2019, Sec. 3.4). The net is left at the last ratio, in eval
    mode. ``ValueError`` for an empty loader."""
    _check_loader(loader, "calibration")
    if not ratios:
        raise ValueError("calibrate_widths needs at least one kept ratio in (0, 1]")
    states = {}
    net.eval()
    for r in ratios:
        net.resample(r, antialias=antialias)
        net.recalibrate(loader, batches)
        states[r] = net.snapshot()
    return states


def train_continuous(net: nn.Module, loader: Iterable, steps: int,
                     widths: WidthDraw | WidthSampler | tuple[float, float] | str = (0.25, 1.0), *,
                     sandwich: bool = False, random_widths: int | None = None, distill: bool = False,
                     loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                     optimizer: torch.optim.Optimizer | None = None, lr: float = 0.05, momentum: float = 0.9,
                     weight_decay: float = 5e-4, recalibrate_loader: Iterable | None = None,
                     recalibrate_ratios: Sequence[float] = (1.0, 0.75, 0.5, 0.375, 0.25),
                     recalibrate_batches: int = 20, antialias: bool = False, seed: int = 0,
                     progress: bool = False, callbacks: Sequence[Callback] = (),
                     device: torch.device | str | None = None) -> WidthTraining:
    """Train ``net`` (a ContinuousNet or SlimmableNet) for ``steps`` steps at widths drawn from ``widths``.

    Every step draws ``random_widths`` width dicts (default 1, or 2 with ``sandwich``: Yu & Huang's ``n = 4``
    widths per step) from ``widths`` (see the module docstring) with a generator seeded by ``seed``; with
    ``sandwich=True`` the largest and smallest widths (``widths.largest`` / ``.smallest``: a
    :class:`WidthSampler` has them, a plain callable must carry them as attributes) run first. The loss is ``loss_fn(output, target)`` (default
    cross-entropy for labels, MSE for images) summed over the step's widths, or with ``distill=True``
    (needs ``sandwich``) the in-place distillation loss for every width but the largest. SGD (Nesterov
    momentum, cosine learning rate from ``lr``) unless ``optimizer`` is given. With ``recalibrate_loader``
    the BatchNorm statistics are recalibrated at each of ``recalibrate_ratios`` at the end
    (:func:`calibrate_widths`, ``antialias`` sampling; ``result.at(r)``). ``progress`` shows a tqdm bar with the
    width drawn and the loss. The net ends in eval mode (at the last recalibrated ratio, else full width).
    ``ValueError`` for a width outside ``[1, size]``, an empty loader, ``distill`` without ``sandwich``.
    """
    if not hasattr(net, "resample") or not hasattr(net, "full_widths"):
        raise ValueError(f"train_continuous trains a ContinuousNet (thesislib.continuous.to_continuous) or a "
                         f"SlimmableNet (thesislib.slimmable.to_slimmable), got {type(net).__name__}; "
                         f"train a plain network with thesislib.training.train_classifier")
    if distill and not sandwich:
        raise ValueError("distill=True needs sandwich=True: the teacher of in-place distillation is the largest width")
    if random_widths is None:
        random_widths = 2 if sandwich else 1
    if not isinstance(random_widths, int) or random_widths < (0 if sandwich else 1):
        raise ValueError(f"random_widths must be an int >= {0 if sandwich else 1}, got {random_widths!r}")
    _check_loader(loader, "training")
    _check_loader(recalibrate_loader, "calibration")
    sizes = net.full_widths
    draw = width_sampler(widths, sizes)
    bounds = None
    if sandwich:
        if not (hasattr(draw, "largest") and hasattr(draw, "smallest")):
            raise ValueError("sandwich=True needs the largest and smallest widths: pass a WidthSampler or a (low, high) "
                             "pair, or a callable with .largest and .smallest dicts")
        bounds = (check_widths(draw.largest, sizes, "largest"), check_widths(draw.smallest, sizes, "smallest"))
    net.train_widths(None)  # the widths of every forward come from the plan below
    wrapper = _MultiWidth(net)
    generator = torch.Generator().manual_seed(seed)
    draws = _DrawWidths(wrapper, draw, sizes, generator, bounds, random_widths)
    timer = StepTimer()
    bar = _Progress(steps, draws, progress, "sandwich" if sandwich else "random widths")
    if optimizer is None:
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                                    weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, steps))
    state = train(wrapper, loader, steps, _WidthLoss(loss_fn or _default_loss, distill), optimizer, scheduler,
                  [draws, timer, bar, *callbacks], device=device)
    result = WidthTraining(net=net, losses=state.losses, widths=draws.history, step_seconds=timer.seconds)
    net.resample(1.0)
    net.eval()
    if recalibrate_loader is not None:
        result.calibrations = calibrate_widths(net, recalibrate_loader, recalibrate_ratios, recalibrate_batches,
                                               antialias)
    return result
