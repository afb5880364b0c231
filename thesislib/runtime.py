"""Where a model runs and what it is fed: the device of a model and the inputs of a batch.

Every module that needs "the device this model lives on" or "the input tensor of a loader's batch"
calls these two functions, so the rules (a parameter-free model, a batch that is a bare tensor, an
``(inputs, targets)`` pair or a dict) are written once.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn


def model_device(model: nn.Module, default: torch.device | str | None = None) -> torch.device:
    """The device of ``model``'s first parameter (else first buffer); ``default`` (else CPU) when it has neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device(default) if default is not None else torch.device("cpu")


def resolve_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` when given, else :func:`model_device` of ``model``."""
    return torch.device(device) if device is not None else model_device(model)


def batch_inputs(batch: Any) -> Any:
    """The model input of a loader's batch: the batch itself when it is a tensor, the first item of an
    ``(inputs, targets, ...)`` tuple or list, ``batch["inputs"]`` (else ``batch["x"]``) of a dict."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("an empty batch has no inputs: a loader must yield a tensor or (inputs, targets)")
        return batch[0]
    if isinstance(batch, dict):
        for key in ("inputs", "x"):
            if key in batch:
                return batch[key]
        raise ValueError(f"a dict batch needs an 'inputs' or 'x' entry, got keys {sorted(batch)}")
    raise ValueError(f"cannot take inputs from a batch of type {type(batch).__name__}: "
                     "yield a tensor, an (inputs, targets) tuple or a dict with 'inputs'")


def batch_targets(batch: Any) -> Any:
    """The targets of an ``(inputs, targets, ...)`` batch (``batch["targets"]``/``batch["y"]`` of a dict)."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    if isinstance(batch, dict):
        for key in ("targets", "y"):
            if key in batch:
                return batch[key]
    raise ValueError("this batch has no targets: a loader must yield (inputs, targets) pairs")


def check_finite(model: nn.Module, what: str = "the network") -> None:
    """``ValueError`` naming the first parameter or buffer of ``model`` that holds NaN or infinite values."""
    for kind, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in tensors:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                sn = re.fullmatch(r"(?:(.*)\.)?parametrizations\.weight\.0\.(_u|_v)", name)
                if sn is not None:
                    raise ValueError(f"{what}: the power-iteration vector {sn.group(2)} of spectral_norm on module "
                                     f"{sn.group(1) or ''!r} "
                                     "holds NaN or infinite values, so its σ estimate is undefined; call "
                                     "thesislib.spectral.reset_power_vectors(model) (exact singular vectors by SVD) "
                                     "or register spectral_norm on that module again")
                raise ValueError(f"{what} has NaN or infinite values in {kind} {name!r}; "
                                 "methods on it are undefined (check training / loading)")
