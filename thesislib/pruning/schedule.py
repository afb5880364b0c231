"""Fine-tuning after pruning, and gradual magnitude pruning (GMP) of channels during it.

Pruning through torch-pruning replaces parameter objects (``layer.weight = nn.Parameter(...)``), so an
optimizer created before pruning keeps updating tensors that are no longer in the model.
:func:`fine_tune` therefore builds its optimizer *after* pruning, and rebuilds it after every GMP pruning
step (momentum buffers restart there).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import cycle
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from thesislib.graph import keep_count
from thesislib.runtime import batch_inputs, model_device
from thesislib.training import Callback, TrainState, cosine_factor, train

from . import importance
from .calibration import task_loss
from .pruner import top_k_per_partition
from .structural import analyse, remove_channels, restore_spectral_norm


@dataclass(frozen=True)
class GMPSchedule:
    """Zhu & Gupta's cubic sparsity schedule ("To prune, or not to prune", 2017, Eq. 1), on channels:

    ``s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(nΔt))³`` for ``t ∈ {t₀, t₀+Δt, …, t₀+nΔt}``, with sparsity
    ``s = 1 − kept ratio``: ``initial_ratio`` = 1 − s_i, ``final_ratio`` = 1 − s_f, ``begin_step`` = t₀,
    ``frequency`` = Δt, ``end_step`` = t₀ + nΔt (``None``: 3/4 of the fine-tuning steps).
    """

    final_ratio: float
    begin_step: int = 0
    end_step: int | None = None
    frequency: int = 10
    initial_ratio: float = 1.0

    def __post_init__(self) -> None:
        for name in ("final_ratio", "initial_ratio"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} is a kept fraction in (0, 1], got {value!r}")
        if self.final_ratio > self.initial_ratio:
            raise ValueError("final_ratio must not exceed initial_ratio (GMP only removes channels)")
        if self.frequency < 1 or self.begin_step < 0:
            raise ValueError("frequency must be >= 1 and begin_step >= 0")
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError("end_step must be >= begin_step")

    def resolved(self, steps: int) -> "GMPSchedule":
        if self.end_step is not None:
            return self
        return GMPSchedule(self.final_ratio, self.begin_step, max(self.begin_step, (3 * steps) // 4),
                           self.frequency, self.initial_ratio)

    def sparsity(self, step: int) -> float:
        """``s_t`` at ``step`` (constant ``s_i`` before ``t₀`` and ``s_f`` after ``t₀ + nΔt``)."""
        end = self.end_step if self.end_step is not None else self.begin_step
        s_i, s_f = 1 - self.initial_ratio, 1 - self.final_ratio
        if step <= self.begin_step:
            return s_i if step < self.begin_step or end > self.begin_step else s_f
        if step >= end:
            return s_f
        return s_f + (s_i - s_f) * (1 - (step - self.begin_step) / (end - self.begin_step)) ** 3

    def kept_ratio(self, step: int) -> float:
        return 1 - self.sparsity(step)

    def is_pruning_step(self, step: int) -> bool:
        end = self.end_step if self.end_step is not None else self.begin_step
        return self.begin_step <= step <= end and ((step - self.begin_step) % self.frequency == 0 or step == end)


def prune_in_place(model: nn.Module, kept: dict[str, int], example_inputs: torch.Tensor,
                   ignored_layers: Sequence[nn.Module] | None = None) -> None:
    """Remove channels from ``model`` itself by L2 filter norm (Zhu & Gupta's magnitude criterion) so that
    group ``name`` keeps ``kept[name]`` channels (split evenly over attention heads)."""
    was_training = model.training
    model.eval()
    structure = analyse(model, example_inputs, ignored_layers)
    scores = importance.magnitude_scores(structure.groups, 2)
    for g in structure.groups:
        target = kept.get(g.name, g.size)
        if target >= g.size:
            continue
        per = max(1, target // len(g.partitions))
        remove_channels(structure, g, top_k_per_partition(scores[g.name], g.partitions, [per] * len(g.partitions)))
    restore_spectral_norm(structure.spectral)
    model.train(was_training)


def _optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


class _GMPCallback(Callback):
    """Gradual magnitude pruning during :func:`thesislib.training.train`: at every pruning step of the
    schedule remove channels down to its kept ratio (then rebuild the optimizer, whose parameters were
    replaced), and remove the rest at the end of training."""

    def __init__(self, schedule: GMPSchedule, example: torch.Tensor, ignored_layers: Sequence[nn.Module] | None,
                 rebuild: Callable[[nn.Module, float], torch.optim.Optimizer]) -> None:
        self.schedule, self.example, self.ignored, self.rebuild = schedule, example, ignored_layers, rebuild
        self.sizes: dict[str, int] | None = None

    def _sizes(self, model: nn.Module) -> dict[str, int]:
        return {g.name: g.size for g in analyse(copy.deepcopy(model).eval(), self.example, self.ignored).groups}

    def prune_to(self, model: nn.Module, ratio: float) -> bool:
        if self.sizes is None:
            self.sizes = self._sizes(model)
        current = self._sizes(model)
        target = {n: keep_count(ratio, s) for n, s in self.sizes.items()}
        if all(current.get(n, 0) <= t for n, t in target.items()):
            return False
        prune_in_place(model, target, self.example, self.ignored)
        return True

    def on_step_begin(self, state: TrainState) -> None:
        step = state.step
        if self.schedule.is_pruning_step(step) and self.prune_to(state.model, self.schedule.kept_ratio(step)):
            state.optimizer = self.rebuild(state.model, state.optimizer.param_groups[0]["lr"])

    def on_train_end(self, state: TrainState) -> None:
        self.prune_to(state.model, self.schedule.final_ratio)


class _CosineLR(Callback):
    """``lr_t = ½ lr (1 + cos(π t / T))`` set on the current optimizer before every step (it may be rebuilt)."""

    def __init__(self, lr: float, steps: int) -> None:
        self.lr, self.steps = lr, steps

    def on_step_begin(self, state: TrainState) -> None:
        for group in state.optimizer.param_groups:
            group["lr"] = self.lr * cosine_factor(state.step, self.steps)


def fine_tune(model: nn.Module, loader: Iterable, steps: int, schedule: GMPSchedule | None = None,
              lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
              ignored_layers: Sequence[nn.Module] | None = None) -> nn.Module:
    """Train ``model`` in place for ``steps`` SGD steps (cosine learning rate) on ``loader`` and return it.

    The loss is cross-entropy for integer targets and MSE for image targets.  With a :class:`GMPSchedule`
    channels are removed gradually during training (L2 magnitude, uniform ratio over the groups present at
    the start; a callback of :func:`thesislib.training.train`); the optimizer is rebuilt after each pruning
    step.  If the schedule has not reached its final ratio by the last step the remaining channels are
    removed at the end.  The model ends in eval mode.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    device = model_device(model)

    def rebuild(net: nn.Module, rate: float) -> torch.optim.Optimizer:
        return _optimizer(net, rate, momentum, weight_decay)

    batches = cycle(loader)  # the batches of the first pass are replayed in the same order (no reshuffling)
    callbacks: list[Callback] = []
    gmp = None
    if schedule is not None:
        schedule = schedule.resolved(steps)
        example = batch_inputs(next(iter(loader)))[:1].to(device)
        gmp = _GMPCallback(schedule, example, ignored_layers, rebuild)
        gmp.sizes = gmp._sizes(model)
        callbacks.append(gmp)
    callbacks.append(_CosineLR(lr, steps))
    if steps > 0:
        train(model, batches, steps, task_loss, rebuild(model, lr), callbacks=callbacks, device=device)
    elif gmp is not None:
        gmp.prune_to(model, schedule.final_ratio)
    return model.eval()
