"""One step-based training loop with callbacks, and the classifier training built on it.

:func:`train` runs ``steps`` optimisation steps over a loader (re-iterating it when it is exhausted,
so a shuffled loader reshuffles per pass) and calls :class:`Callback` hooks around every step and
after every evaluation. Classification (:func:`train_classifier`), super-resolution training
(:func:`thesislib.experiments.super_resolution.train_sr`), fine-tuning with gradual magnitude pruning
(:func:`thesislib.pruning.fine_tune`, the GMP schedule as a callback) and the Sobolev smoothing of
:func:`thesislib.capacity.smoothing.smooth_finetune` (the penalty as a loss term) all use it.

The cached Fashion-MNIST ResNet-18 every experiment starts from lives in
:mod:`thesislib.experiments.fashion_mnist`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from thesislib.config import default_device
from thesislib.metrics import accuracy as evaluate_accuracy  # one top-1 accuracy for the whole package
from thesislib.runtime import batch_inputs, batch_targets, resolve_device

__all__ = ["Callback", "TrainState", "train", "train_classifier", "evaluate_accuracy", "per_class_accuracy",
           "split_batch", "StepHook", "cosine_factor", "SCHEDULES"]


@dataclass
class TrainState:
    """What a :class:`Callback` sees and may change: the model, the optimizer (a callback may replace it,
    e.g. after removing channels), the 0-based ``step`` about to run or just run, and that step's
    ``loss``, ``outputs`` (detached) and ``targets``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps: int
    step: int = 0
    loss: float = math.nan
    outputs: Any = None
    targets: Any = None
    losses: list[float] = field(default_factory=list)


class Callback:
    """Hooks of :func:`train`; override the ones you need (all are no-ops here).

    ``on_step_begin(state)`` runs after the batch of ``state.step`` is drawn and before its forward pass, ``on_step_end(state)`` after
    the optimizer (and scheduler) step, ``on_eval(state, metrics)`` after each evaluation, and
    ``on_train_end(state)`` once after the last step.
    """

    def on_step_begin(self, state: TrainState) -> None:
        """Before step ``state.step``."""

    def on_step_end(self, state: TrainState) -> None:
        """After step ``state.step`` (``state.loss`` / ``outputs`` / ``targets`` are that step's)."""

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After the evaluation that followed step ``state.step``."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last step."""


class StepHook(Callback):
    """``fn(step)`` before every step (e.g. INN training draws its random widths there)."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        self.fn = fn

    def on_step_begin(self, state: TrainState) -> None:
        self.fn(state.step)


def cosine_factor(step: int, total: int) -> float:
    """Cosine annealing factor ``½(1 + cos(π · min(step, total) / total))`` (Loshchilov & Hutter 2017)."""
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` of a loader batch; targets are ``None`` for a batch of inputs only."""
    inputs = batch_inputs(batch)
    try:
        targets = batch_targets(batch)
    except ValueError:
        targets = None
    return inputs, targets


_END = object()


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def train(model: nn.Module, loader: Iterable, steps: int, loss_fn: Callable[[Any, Any], torch.Tensor],
          optimizer: torch.optim.Optimizer, scheduler: Any | None = None, callbacks: Sequence[Callback] = (),
          device: torch.device | str | None = None, evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
          eval_every: int | None = None, start_step: int = 0) -> TrainState:
    """Run ``steps`` steps of ``loss_fn(model(inputs), targets)`` → backward → ``optimizer.step()`` →
    ``scheduler.step()`` over ``loader`` (a new pass when it is exhausted) on ``device`` (default: the
    model's) and return the final :class:`TrainState` (``losses``: every step's loss).

    ``evaluate(model)`` runs every ``eval_every`` steps (and after the last step when ``eval_every`` is
    given); its metrics go to every callback's ``on_eval``. Steps are numbered from ``start_step`` (to
    continue a run). A non-finite loss raises ``FloatingPointError``; ``steps < 1`` or a loader that
    yields nothing raise ``ValueError``. The model is left in train mode.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if eval_every is not None and (evaluate is None or eval_every < 1):
        raise ValueError("eval_every needs an evaluate function and must be >= 1")
    device = resolve_device(model, device)
    model.to(device)
    model.train()
    state = TrainState(model=model, optimizer=optimizer, steps=steps)
    pass_length = len(loader) if hasattr(loader, "__len__") else None
    if pass_length == 0:
        raise ValueError("the training loader is empty: give a loader that yields at least one batch")
    iterator: Any = None
    pending: Any = _END
    drawn_this_pass = 0
    end = start_step + steps
    for step in range(start_step, end):
        state.step = step
        if pending is not _END:
            batch, pending = pending, _END
        else:
            if iterator is None:
                iterator, drawn_this_pass = iter(loader), 0
            batch = next(iterator, _END)
            if batch is _END:
                if drawn_this_pass == 0:
                    raise ValueError("the training loader yielded no batch: give a non-empty loader")
                iterator, drawn_this_pass = iter(loader), 0
                batch = next(iterator, _END)
                if batch is _END:
                    raise ValueError("the training loader yielded no batch on a new pass")
        drawn_this_pass += 1
        for cb in callbacks:  # after the draw: a hook's random numbers never shift the loader's shuffling
            cb.on_step_begin(state)
        inputs, targets = split_batch(batch)
        inputs, targets = _to(inputs, device), _to(targets, device)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        if not torch.isfinite(loss):
            lr = state.optimizer.param_groups[0]["lr"]
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}: lower lr={lr:g}")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if scheduler is not None:
            scheduler.step()
        state.loss, state.outputs, state.targets = loss.item(), outputs.detach(), targets
        state.losses.append(state.loss)
        for cb in callbacks:
            cb.on_step_end(state)
        if pass_length is not None and drawn_this_pass == pass_length:
            # end of a pass, as a ``for`` loop ends it: the loader's sampler finishes (and draws what it draws)
            pending = next(iterator, _END)
            if pending is _END:
                iterator = None  # a new pass at the next step (a longer-than-len() loader keeps going)
        if eval_every is not None and ((step + 1 - start_step) % eval_every == 0 or step + 1 == end):
            metrics = evaluate(model)
            for cb in callbacks:
                cb.on_eval(state, metrics)
    for cb in callbacks:
        cb.on_train_end(state)
    return state


class _EpochStats(Callback):
    """Mean loss and accuracy of the training batches since the last evaluation (one epoch)."""

    def __init__(self, has_eval: bool) -> None:
        self.has_eval = has_eval
        self.history: list[dict[str, float]] = []
        self.loss_sum = self.correct = self.seen = 0.0

    def on_step_end(self, state: TrainState) -> None:
        y = state.targets
        self.loss_sum += state.loss * y.numel()
        self.correct += (state.outputs.argmax(1) == y).sum().item()
        self.seen += y.numel()

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None:
        record = {"epoch": len(self.history) + 1, "loss": self.loss_sum / self.seen,
                  "train_accuracy": self.correct / self.seen}
        if self.has_eval:
            record["test_accuracy"] = metrics["test_accuracy"]
        self.history.append(record)
        self.loss_sum = self.correct = self.seen = 0.0


SCHEDULES: tuple[str, ...] = ("cosine", "one_cycle")


def train_classifier(model: nn.Module, loader: Any, epochs: int, lr: float = 0.05,
                     device: torch.device | str | None = None, weight_decay: float = 5e-4,
                     eval_loader: Iterable | None = None,
                     step_hook: Callable[[int], None] | None = None,
                     callbacks: Sequence[Callback] = (), schedule: str = "cosine") -> list[dict[str, float]]:
    """Train with SGD (momentum 0.9, Nesterov) on cross-entropy with a learning-rate ``schedule``:
    ``"cosine"`` (from ``lr`` to 0, Loshchilov & Hutter 2017) or ``"one_cycle"`` (warm-up from
    ``lr / 25`` to the peak ``lr`` over the first 30 % of the steps, then cosine annealing to
    ``lr / 25e4``, momentum cycled 0.95 → 0.85 → 0.95; Smith & Topin 2019, ``torch.optim.lr_scheduler.OneCycleLR``).

    Returns one record per epoch: mean training loss, training accuracy and, when ``eval_loader`` is
    given, its accuracy. ``step_hook(step)`` runs before every step (INN training draws its random widths
    there). One :func:`train` call per epoch, so every epoch is exactly one pass over ``loader``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=weight_decay)
    per_epoch = len(loader)
    total_steps = epochs * per_epoch
    if schedule == "one_cycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                        pct_start=0.3, base_momentum=0.85, max_momentum=0.95)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_factor(s, total_steps))
    loss_fn = nn.CrossEntropyLoss()
    stats = _EpochStats(has_eval=eval_loader is not None)
    hooks = ([StepHook(step_hook)] if step_hook is not None else []) + [stats, *callbacks]

    def evaluate(net: nn.Module) -> dict[str, float]:
        metrics = {} if eval_loader is None else {"test_accuracy": evaluate_accuracy(net, eval_loader, device)}
        net.train()
        return metrics

    for epoch in range(epochs):
        train(model, loader, per_epoch, loss_fn, optimizer, scheduler, hooks, device=device,
              evaluate=evaluate, eval_every=per_epoch, start_step=epoch * per_epoch)
    model.eval()
    return stats.history


@torch.no_grad()
def per_class_accuracy(model: nn.Module, loader: Iterable, num_classes: int,
                       device: torch.device | str | None = None) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted; row-normalised) and per-class accuracy."""
    device = resolve_device(model, device)
    was_training = model.training
    model.eval()
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch in loader:
        x, y = batch_inputs(batch), batch_targets(batch)
        predicted = model(x.to(device)).argmax(1).cpu()
        counts += torch.bincount(y * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)
    model.train(was_training)
    matrix = counts.float() / counts.sum(1, keepdim=True).clamp_min(1)
    return {"matrix": matrix.tolist(), "per_class": matrix.diagonal().tolist()}
