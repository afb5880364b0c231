"""Fisher-weighted channel spectrum: the loss increase when one DCT band of a channel function is removed.

Optimal Brain Damage (LeCun, Denker, Solla 1990) estimates the loss increase of deleting a parameter
``θ_i`` at a minimum (zero mean gradient) by the diagonal second-order term ``½ F_ii θ_i²``, with the
Fisher information ``F = E_n[∇ℓ_n ∇ℓ_nᵀ]`` standing in for the Hessian. Here the "parameters" are the
coefficients of a group's channel function in the orthonormal DCT-II basis along the channel axis
(:mod:`thesislib.capacity.spectrum`): for a member tensor ``W`` with channel axis ``d``,
``C = DCT_d(W)``, and because the DCT is orthogonal the per-sample gradient transforms the same way,
``∂ℓ_n/∂C = DCT_d(∂ℓ_n/∂W)``. Removing band ``j`` of the group (coefficient ``j`` of every member
tensor, all other coefficients kept) then costs, by OBD in these coordinates,

    ΔL_j ≈ ½ Σ_members Σ_other axes  E_n[(∂ℓ_n/∂C_j)²] · C_j²,

the Fisher-weighted spectrum of the group. Its "Nyquist width" (:func:`nyquist_from_spectrum`: the
fewest leading bands holding ``energy`` of the total) is the ``"fisher"`` capacity estimator of
:mod:`thesislib.capacity.estimators`. Only parameters enter (buffers such as BatchNorm running
statistics have no gradient); the Fisher is the per-sample empirical one when the calibration batches
carry labels, and the true Fisher (labels drawn from the model's own softmax, Martens 2020) for inputs
alone. The model runs in eval mode at full width with naive sampling (the control points themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from thesislib.runtime import batch_inputs, batch_targets, check_finite, model_device

if TYPE_CHECKING:
    from thesislib.continuous import ContinuousNet

__all__ = ["fisher_spectra", "fisher_capacity", "member_parameter", "calibration_pairs"]


def calibration_pairs(calib: Any, batches: int = 1) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``[(inputs, targets or None)]`` from a tensor (one batch of inputs) or an iterable of batches
    (``(x, y, ...)``, a dict, or inputs alone), at most ``batches`` of them."""
    if calib is None:
        raise ValueError("the Fisher spectrum needs calibration data: pass calib=<tensor or loader>")
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    if isinstance(calib, torch.Tensor):
        return [(calib, None)]
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    for batch in calib:
        x = batch_inputs(batch)
        try:
            y = batch_targets(batch)
        except ValueError:
            y = None
        out.append((x, y))
        if len(out) >= batches:
            break
    if not out:
        raise ValueError("calib gave no batches: give a non-empty tensor or loader")
    return out


def member_parameter(cnet: ContinuousNet, module_name: str, param_name: str) -> torch.Tensor:
    """The tensor of ``cnet.net`` a group member addresses (the ``original`` of a parametrized one)."""
    net = cnet.net
    module = net.get_submodule(module_name) if module_name else net
    if parametrize.is_parametrized(module, param_name):
        return module.parametrizations[param_name].original
    return getattr(module, param_name)


def _channel_view(t: torch.Tensor, dim: int, blocks: int) -> tuple[torch.Tensor, int]:
    """``t`` with the group's channel axis at ``dim`` (a grouped-convolution axis unflattened to
    ``[size, blocks]`` copies, as :class:`ContinuousNet` reads it)."""
    if blocks > 1:
        size = t.shape[dim] // blocks
        return t.unflatten(dim, (blocks, size)).transpose(dim, dim + 1), dim
    return t, dim


def _dct(t: torch.Tensor, dim: int) -> np.ndarray:
    a = t.detach().to("cpu", torch.float64).numpy()
    return np.moveaxis(scipy.fft.dct(a, type=2, axis=dim, norm="ortho"), dim, 0).reshape(a.shape[dim], -1)


def _sample_loss(out: Any, y: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the Fisher spectrum needs class logits [batch, classes], the model gave {shape}; "
                         "pass a classifier (cross-entropy is the log-likelihood it uses)")
    if y is None:
        probs = out.detach().double().softmax(1).cpu()
        y = torch.multinomial(probs, 1, generator=generator)[:, 0].to(out.device)
    return F.cross_entropy(out, y.to(out.device).long())


def fisher_spectra(cnet: ContinuousNet, calib: Any, groups: Sequence[str] | None = None, batches: int = 1,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """``{group: ΔL_j}``: the OBD loss increase of removing each DCT band ``j`` of each group's channel
    function (see the module docstring), from per-sample gradients of the cross-entropy on ``batches``
    calibration batches of ``calib``. ``seed`` seeds the labels drawn for unlabelled inputs.

    ``cnet``'s widths and sampling mode are restored; its parameters' ``.grad`` are left as they were.
    ``ValueError`` for NaN weights, no calibration data, an unknown group, or a model that does not give
    class logits.
    """
    check_finite(cnet, "cnet")
    known = {g.name: g for g in cnet.groups}
    names = list(groups) if groups is not None else list(known)
    for n in names:
        if n not in known:
            raise ValueError(f"unknown group {n!r}; groups: {list(known)}")
    pairs = calibration_pairs(calib, batches)
    members: dict[str, list[tuple[torch.Tensor, int, int]]] = {}
    for n in names:
        members[n] = []
        for m in known[n].members:
            if m.view:  # attention views: the packed q/k/v rows, not a plain channel axis
                continue
            t = member_parameter(cnet, m.module_name, m.param_name)
            if isinstance(t, nn.Parameter) and t.requires_grad:
                members[n].append((t, m.dim, m.blocks))
    tensors = list({id(t): t for ms in members.values() for t, _, _ in ms}.values())
    saved = [t.grad for t in tensors]
    generator = torch.Generator().manual_seed(seed)
    device = model_device(cnet)
    squares = {n: [np.zeros(_dct(*_channel_view(t, d, b)).shape) for t, d, b in ms] for n, ms in members.items()}
    count = 0
    was_training = cnet.training
    try:
        with cnet.preserved():
            cnet.resample(cnet.full_widths, antialias=False)
            cnet.eval()
            for x, y in pairs:
                for i in range(len(x)):
                    for t in tensors:
                        t.grad = None
                    out = cnet(x[i:i + 1].to(device))
                    loss = _sample_loss(out, None if y is None else y[i:i + 1], generator)
                    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                    by_id = {id(t): g for t, g in zip(tensors, grads)}
                    for n, ms in members.items():
                        for k, (t, d, b) in enumerate(ms):
                            g = by_id[id(t)]
                            if g is not None:
                                squares[n][k] += _dct(*_channel_view(g, d, b)) ** 2
                    count += 1
    finally:
        for t, g in zip(tensors, saved):
            t.grad = g
        cnet.train(was_training)
    if count == 0:
        raise ValueError("calib gave no samples: give a non-empty tensor or loader")
    out: dict[str, np.ndarray] = {}
    for n, ms in members.items():
        size = int(known[n].size)
        total = np.zeros(size)
        for k, (t, d, b) in enumerate(ms):
            coeffs = _dct(*_channel_view(t, d, b))
            total += 0.5 * (squares[n][k] / count * coeffs ** 2).sum(axis=1)
        out[n] = total
    return out


def fisher_capacity(spectrum: Iterable[float], energy: float = 0.99) -> int:
    """The fewest leading DCT bands whose removal costs ``energy`` of the total OBD loss increase."""
    from thesislib.capacity.spectrum import nyquist_from_spectrum

    return nyquist_from_spectrum(np.asarray(list(spectrum), dtype=np.float64), energy)
