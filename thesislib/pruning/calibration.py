"""Calibration data: batches for data-driven scores and BatchNorm recalibration after pruning."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from thesislib.runtime import batch_inputs, batch_targets, model_device  # noqa: F401 (model_device: re-exported)


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets)`` of a loader batch (:func:`thesislib.runtime.batch_inputs`); targets ``None``
    for a batch without them (a bare tensor)."""
    x = batch_inputs(batch)
    try:
        return x, batch_targets(batch)
    except ValueError:
        return x, None


def calib_batches(calib: Iterable, batches: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The first ``batches`` batches of ``calib`` moved to ``device``."""
    if batches < 1:
        raise ValueError(f"calib_batches must be >= 1, got {batches}")
    for batch in islice(calib, batches):
        x, y = split_batch(batch)
        yield x.to(device), (y.to(device) if y is not None else None)


def task_loss(output: torch.Tensor, target: torch.Tensor | None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for class labels (integer targets), mean squared error for image targets (SR).

    Raises ``ValueError`` when there is no target: gradient-based scores need labelled calibration data.
    """
    if target is None:
        raise ValueError("this method needs (inputs, targets) calibration batches to compute a loss")
    if not target.is_floating_point():
        return F.cross_entropy(output, target, reduction=reduction)
    loss = F.mse_loss(output, target, reduction="none").flatten(1).mean(1)
    return loss.mean() if reduction == "mean" else loss


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int = 20) -> nn.Module:
    """Re-estimate BatchNorm running statistics on ``batches`` batches of ``loader`` (in place; returns ``model``).

    The same procedure for every method: reset the running statistics, set ``momentum=None`` (cumulative
    moving average, i.e. the plain mean over the batches), forward with only the BatchNorm layers in
    train mode (dropout etc. stay in eval mode) and no gradients, then restore momentum and eval mode.
    A model without BatchNorm is returned unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    device = model_device(model)
    model.eval()
    momenta = []
    for bn in norms:
        momenta.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    seen = 0
    for x, _ in calib_batches(loader, batches, device):
        model(x)
        seen += 1
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
        bn.eval()
    if seen == 0:
        raise ValueError("recalibrate_batchnorm got an empty loader")
    return model
