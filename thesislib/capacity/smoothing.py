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
from typing import Any, Iterable

import numpy as np
import scipy.fft
import torch
from torch import nn


@lru_cache(maxsize=64)
def _dct_np(n: int) -> np.ndarray:
    return scipy.fft.dct(np.eye(n), type=2, axis=0, norm="ortho")


def _member_parameter(cnet: Any, member: Any) -> torch.Tensor | None:
    if getattr(member, "view", ""):
        return None
    try:
        module = cnet.net.get_submodule(member.module_name) if member.module_name else cnet.net
    except AttributeError:
        return None
    t = getattr(module, member.param_name, None)
    return t if isinstance(t, nn.Parameter) else None


def sobolev_penalty(cnet: Any, roles: Iterable[str] = ("producer", "consumer")) -> torch.Tensor:
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


def smooth_finetune(cnet: Any, loader: Iterable, steps: int, penalty: float = 1.0, lr: float = 0.01,
                    device: torch.device | str | None = None) -> list[float]:
    """Fine-tune ``cnet`` at full width for ``steps`` SGD steps on cross-entropy + ``penalty`` * Sobolev term.

    Returns the penalty after every step. BatchNorm statistics keep updating (train mode).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if penalty < 0 or not math.isfinite(penalty):
        raise ValueError(f"penalty must be a finite non-negative weight, got {penalty}")
    device = torch.device(device) if device is not None else next(cnet.parameters()).device
    cnet.resample({g.name: g.size for g in cnet.groups}, antialias=False)
    optimizer = torch.optim.SGD(cnet.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    history: list[float] = []
    was_training = cnet.training
    cnet.train()
    done = 0
    while done < steps:
        progressed = False
        for x, y in loader:
            reg = sobolev_penalty(cnet)
            loss = loss_fn(cnet(x.to(device)), y.to(device)) + penalty * reg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(reg.detach()))
            done += 1
            progressed = True
            if done >= steps:
                break
        if not progressed:
            raise ValueError("smooth_finetune got an empty loader")
    cnet.train(was_training)
    return history
