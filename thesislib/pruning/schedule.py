"""Fine-tuning after pruning, and gradual magnitude pruning (GMP) of channels during it.

Pruning through torch-pruning replaces parameter objects (``layer.weight = nn.Parameter(...)``), so an
optimizer created before pruning keeps updating tensors that are no longer in the model.
:func:`fine_tune` therefore builds its optimizer *after* pruning, and rebuilds it after every GMP pruning
step (momentum buffers restart there).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import cycle
from typing import Iterable, Sequence

import torch
from torch import nn

from thesislib.graph import keep_count

from . import importance
from .calibration import model_device, split_batch, task_loss
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


def fine_tune(model: nn.Module, loader: Iterable, steps: int, schedule: GMPSchedule | None = None,
              lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
              ignored_layers: Sequence[nn.Module] | None = None) -> nn.Module:
    """Train ``model`` in place for ``steps`` SGD steps (cosine learning rate) on ``loader`` and return it.

    The loss is cross-entropy for integer targets and MSE for image targets.  With a :class:`GMPSchedule`
    channels are removed gradually during training (L2 magnitude, uniform ratio over the groups present at
    the start); the optimizer is rebuilt after each pruning step.  If the schedule has not reached its final
    ratio by the last step the remaining channels are removed at the end.  The model ends in eval mode.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    device = model_device(model)
    batches = cycle(loader)
    sizes: dict[str, int] = {}
    example = None
    if schedule is not None:
        schedule = schedule.resolved(steps)
        example, _ = split_batch(next(iter(loader)))
        example = example[:1].to(device)
        sizes = {g.name: g.size for g in analyse(copy.deepcopy(model).eval(), example, ignored_layers).groups}

    def gmp_step(ratio: float) -> bool:
        current = {g.name: g.size for g in analyse(copy.deepcopy(model).eval(), example, ignored_layers).groups}
        target = {n: keep_count(ratio, s) for n, s in sizes.items()}
        if all(current.get(n, 0) <= t for n, t in target.items()):
            return False
        prune_in_place(model, target, example, ignored_layers)
        return True

    optimizer = _optimizer(model, lr, momentum, weight_decay)
    base = lr
    model.train()
    for step in range(steps):
        if schedule is not None and schedule.is_pruning_step(step) and gmp_step(schedule.kept_ratio(step)):
            optimizer = _optimizer(model, optimizer.param_groups[0]["lr"], momentum, weight_decay)
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * base * (1 + math.cos(math.pi * step / max(1, steps)))
        x, y = split_batch(next(batches))
        x = x.to(device)
        y = y.to(device) if y is not None else None
        loss = task_loss(model(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning loss became {loss.item()} at step {step}: lower lr={lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if schedule is not None:
        gmp_step(schedule.final_ratio)
    return model.eval()
