"""Band-limited by training: a spectral (Sobolev) penalty on the channel functions.

The sampling theorem predicts a width exactly only for band-limited functions. A
trained network's permuted weights are close to white along the channel axis, so
this estimator *makes* them band-limited: fine-tune the continuous model's control
points on the task loss plus

    lambda * sum_groups mean_members  sum_j (j / n)^2 |C_j|^2 / sum_j |C_j|^2 ,

where ``C = DCT-II_ortho(member tensor)`` along its channel axis — the normalised
first-order Sobolev semi-norm of each channel function (high DCT indices, i.e.
fast oscillation across neighbouring channels, are penalised quadratically). After
fine-tuning, the weight-spectrum Nyquist width (``weights`` estimator) is read
again; the model's knees must be measured on the fine-tuned model too.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable

import numpy as np
import scipy.fft
import torch
from torch import nn

from thesislib.graph import Member, Role
from thesislib.runtime import resolve_device
from thesislib.training import Callback, TrainState, train

if TYPE_CHECKING:
    from thesislib.continuous import ContinuousNet


@lru_cache(maxsize=64)
def _dct_np(n: int) -> np.ndarray:
    return scipy.fft.dct(np.eye(n), type=2, axis=0, norm="ortho")


def _member_parameter(cnet: "ContinuousNet", member: Member) -> torch.Tensor | None:
    if getattr(member, "view", ""):
        return None
    try:
        module = cnet.net.get_submodule(member.module_name) if member.module_name else cnet.net
    except AttributeError:
        return None
    t = getattr(module, member.param_name, None)
    return t if isinstance(t, nn.Parameter) else None


def sobolev_penalty(cnet: "ContinuousNet", roles: Iterable[Role] = (Role.PRODUCER, Role.CONSUMER)) -> torch.Tensor:
    """Mean over groups of the mean normalised Sobolev energy of their member parameters (differentiable)."""
    roles = tuple(roles)
    terms = []
    for group in cnet.groups:
        parts = []
        for member in group.members:
            if member.role not in roles:
                continue
            w = _member_parameter(cnet, member)
            if w is None:
                continue
            n = w.shape[member.dim]
            d = torch.as_tensor(_dct_np(n), dtype=w.dtype, device=w.device)
            c = torch.tensordot(d, w.movedim(member.dim, 0), dims=([1], [0]))
            power = (c ** 2).reshape(n, -1).sum(1)
            freq = (torch.arange(n, dtype=w.dtype, device=w.device) / max(n - 1, 1)) ** 2
            parts.append((freq * power).sum() / power.sum().clamp_min(1e-12))
        if parts:
            terms.append(torch.stack(parts).mean())
    if not terms:
        raise ValueError("no group has a producer/consumer parameter to penalise")
    return torch.stack(terms).mean()


class _SobolevTerm(Callback):
    """The penalty of the current weights, computed before each step's forward pass (so the gradient
    accumulates in the same order as ever), and its history."""

    def __init__(self, cnet: "ContinuousNet") -> None:
        self.cnet = cnet
        self.value: torch.Tensor = torch.zeros(())
        self.history: list[float] = []

    def on_step_begin(self, state: TrainState) -> None:
        self.value = sobolev_penalty(self.cnet)
        self.history.append(float(self.value.detach()))


def smooth_finetune(cnet: "ContinuousNet", loader: Iterable, steps: int, penalty: float = 1.0, lr: float = 0.01,
                    device: torch.device | str | None = None) -> list[float]:
    """Fine-tune ``cnet`` at full width for ``steps`` SGD steps (momentum 0.9) on
    cross-entropy + ``penalty`` × :func:`sobolev_penalty` (one :func:`thesislib.training.train` run,
    the penalty a term of its loss).

    Returns the penalty of every step (before its update). BatchNorm statistics keep updating (train
    mode); the model's train/eval mode is restored afterwards.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if penalty < 0 or not math.isfinite(penalty):
        raise ValueError(f"penalty must be a finite non-negative weight, got {penalty}")
    device = resolve_device(cnet, device)
    cnet.resample({g.name: g.size for g in cnet.groups}, antialias=False)
    optimizer = torch.optim.SGD(cnet.parameters(), lr=lr, momentum=0.9)
    cross_entropy = nn.CrossEntropyLoss()
    term = _SobolevTerm(cnet)

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(outputs, targets) + penalty * term.value

    was_training = cnet.training
    try:
        train(cnet, loader, steps, loss_fn, optimizer, callbacks=[term], device=device)
    except ValueError as error:
        if "yielded no batch" in str(error) or "is empty" in str(error):
            raise ValueError("smooth_finetune got an empty loader") from error
        raise
    cnet.train(was_training)
    return term.history
