"""Largest singular values of layers and Lipschitz constants of networks (the SpectralNorm experiment).

Two norms of a Conv/Linear layer's linear part (its bias left out):

* :func:`matrix_sigma` -- σ of the weight reshaped to ``c_out × (c_in k_h k_w)``, by SVD (exact, float64):
  what ``spectral_norm`` (Miyato et al. 2018, eq. ``eq-sn``) divides by;
* :func:`operator_sigma` -- the norm of the convolution *operator* on inputs of a stated size (with the
  layer's own zero padding, stride, dilation), by Lanczos iteration (ARPACK) on the operator and its adjoint
  (``Aᵀ`` is the vector-Jacobian product of the bias-free layer). It is not σ of the reshaped weight: for a stride-1 k×k
  convolution ``operator σ ≤ sqrt(k_h k_w) · matrix σ`` (Tsuzuku et al. 2018; Gouk et al. 2021) and it
  can exceed the matrix σ, so a spectrally normalised convolution need not be 1-Lipschitz.

For a network of Conv/Linear layers and 1-Lipschitz activations and pooling (ReLU, LeakyReLU, max pooling,
flattening), :func:`lipschitz_bound` -- the product of the operator norms -- bounds the Lipschitz constant
of the logits (in the L2 norm); :func:`empirical_lipschitz` is a lower estimate: the largest gradient norm
of the logit margin ``z_y − max_{j≠y} z_j`` over test points, which is at most ``√2 ·`` the logits' constant.

Power-iteration vectors: :func:`check_power_vectors` (clear error for NaN), :func:`reset_power_vectors`
(exact singular vectors by SVD) and :func:`power_iteration_drift` (σ of the normalised weight before and
after one train-mode forward: consistent vectors leave it unchanged).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from thesislib.graph import spectral_norms
from thesislib.runtime import batch_inputs, batch_targets, model_device

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

__all__ = ["matrix_sigma", "operator_sigma", "layer_sigmas", "lipschitz_bound", "empirical_lipschitz",
           "check_power_vectors", "check_parametrisations", "top_singular_vectors", "reset_power_vectors", "power_iteration_drift", "raw_weight"]


def _matrix(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    w = weight.detach().to(torch.float64)
    return torch.movedim(w, dim, 0).reshape(w.shape[dim], -1) if w.dim() > 1 else w.reshape(1, -1)


def matrix_sigma(weight: torch.Tensor, dim: int = 0) -> float:
    """Largest singular value of ``weight`` reshaped to ``(size of dim) × (the rest)`` (SVD, float64)."""
    if not isinstance(weight, torch.Tensor) or weight.numel() == 0:
        raise ValueError("matrix_sigma needs a non-empty weight tensor")
    return float(torch.linalg.matrix_norm(_matrix(weight, dim), ord=2))


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The unnormalised weight: ``parametrizations.weight.original`` of a parametrised layer, else ``weight``."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _linear_map(module: nn.Module):
    w = module.weight.detach().to(torch.float64)
    if isinstance(module, nn.Linear):
        return lambda x: F.linear(x, w)
    conv = (F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d if isinstance(module, nn.Conv2d)
            else F.conv3d)
    if module.padding_mode != "zeros":
        raise ValueError(f"operator_sigma supports zero padding only, got padding_mode={module.padding_mode!r}")
    return lambda x: conv(x, w, None, module.stride, module.padding, module.dilation, module.groups)


def operator_sigma(module: nn.Module, input_shape: tuple[int, ...], tol: float = 1e-10, seed: int = 0) -> float:
    """Norm of the bias-free layer as an operator on inputs of ``input_shape`` (one example, no batch axis:
    ``(C, H, W)`` for Conv2d, ``(features,)`` for Linear): the largest singular value by implicitly restarted
    Lanczos (ARPACK, :func:`scipy.sparse.linalg.svds`, relative tolerance ``tol``) on the operator and its
    adjoint (the vector-Jacobian product), in float64. For Linear this is :func:`matrix_sigma`."""
    if not isinstance(module, _LAYERS):
        raise ValueError(f"operator_sigma takes a Conv1d/2d/3d or Linear layer, got {type(module).__name__}")
    if isinstance(module, nn.Linear):
        return matrix_sigma(module.weight)
    from scipy.sparse.linalg import LinearOperator, svds

    apply = _linear_map(module)
    device = module.weight.device
    shape = (1, *input_shape)
    with torch.no_grad():
        out_shape = apply(torch.zeros(shape, dtype=torch.float64, device=device)).shape
    n_in, n_out = math.prod(shape), math.prod(out_shape)

    def matvec(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.ascontiguousarray(v, dtype=np.float64), device=device).view(shape)
            return apply(x).flatten().cpu().numpy()

    def rmatvec(u: np.ndarray) -> np.ndarray:
        y = torch.as_tensor(np.ascontiguousarray(u, dtype=np.float64), device=device).view(out_shape)
        with torch.enable_grad():
            x = torch.zeros(shape, dtype=torch.float64, device=device, requires_grad=True)
            (g,) = torch.autograd.grad(apply(x), x, grad_outputs=y)
        return g.flatten().cpu().numpy()

    if min(n_in, n_out) <= 2:  # ARPACK needs k < min(shape): form the small operator densely
        dense = np.stack([matvec(e) for e in np.eye(n_in)], axis=1)
        return float(np.linalg.norm(dense, 2))
    op = LinearOperator((n_out, n_in), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(min(n_in, n_out))
    return float(svds(op, k=1, tol=tol, return_singular_vectors=False, v0=v0)[0])


def layer_sigmas(model: nn.Module, example_inputs: torch.Tensor, operator: bool = True, tol: float = 1e-10
                 ) -> list[dict[str, Any]]:
    """One row per Conv/Linear layer of ``model`` in forward order: ``name``, ``matrix`` (σ of the reshaped
    effective weight, i.e. the normalised one of a spectral-norm layer, in eval mode), ``raw`` (σ of the
    unnormalised weight), ``operator`` (norm at the input size the layer sees on ``example_inputs``;
    ``operator=False`` skips it), ``input_shape``, ``out_channels``, ``in_channels``."""
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}
    hooks = []

    def hook(mod: nn.Module, args: tuple, _out: Any) -> None:
        name = names[id(mod)]
        if name not in shapes:
            shapes[name] = tuple(args[0].shape[1:])
            order.append(name)

    for m in model.modules():
        if isinstance(m, _LAYERS):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs[:1].to(model_device(model)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    with torch.no_grad():
        for name in order:
            m = model.get_submodule(name)
            was = m.training
            m.eval()  # a spectral-norm weight read in eval mode: no power-iteration update
            w = m.weight
            m.train(was)
            row = {"name": name, "matrix": matrix_sigma(w), "raw": matrix_sigma(raw_weight(m)),
                   "out_channels": int(w.shape[0]), "in_channels": int(w.shape[1]) if w.dim() > 1 else 1,
                   "input_shape": list(shapes[name])}
            if operator:
                m.eval()
                try:
                    row["operator"] = operator_sigma(m, shapes[name], tol=tol)
                finally:
                    m.train(was)
            rows.append(row)
    return rows


def lipschitz_bound(rows: Iterable[dict[str, Any]], key: str = "operator") -> float:
    """Product of the layers' ``key`` norms (:func:`layer_sigmas` rows): an upper bound on the L2 Lipschitz
    constant of a chain of these layers with 1-Lipschitz activations in between (``key="operator"``)."""
    values = [float(r[key]) for r in rows]
    if not values:
        raise ValueError("lipschitz_bound needs at least one layer row")
    return math.prod(values)


def empirical_lipschitz(model: nn.Module, loader: Iterable, max_images: int | None = None) -> float:
    """The largest ``‖∇ₓ (z_y − max_{j≠y} z_j)‖₂`` over the test points of ``loader`` (``y``: the label), in
    eval mode: a lower estimate of the margin's Lipschitz constant (≤ √2 × the logits' constant)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    best, seen = 0.0, 0
    try:
        for batch in loader:
            x, y = batch_inputs(batch).to(device), batch_targets(batch).to(device)
            if max_images is not None:
                x, y = x[:max_images - seen], y[:max_images - seen]
            if x.shape[0] == 0:
                break
            x = x.detach().requires_grad_(True)
            z = model(x)
            if z.dim() != 2 or z.shape[1] < 2:
                raise ValueError(f"empirical_lipschitz needs (batch, classes >= 2) logits, got {tuple(z.shape)}")
            true = z.gather(1, y.view(-1, 1)).squeeze(1)
            other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).max(1).values
            (g,) = torch.autograd.grad((true - other).sum(), x)
            best = max(best, float(g.flatten(1).norm(dim=1).max()))
            seen += x.shape[0]
            if max_images is not None and seen >= max_images:
                break
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("empirical_lipschitz got an empty loader")
    return best


def check_parametrisations(model: nn.Module) -> None:
    """``ValueError`` naming the first module with a parametrisation other than one ``spectral_norm`` on its
    weight (e.g. ``weight_norm``), which resampling and pruning cannot handle, and what to do."""
    for name, m in model.named_modules():
        if not parametrize.is_parametrized(m):
            continue
        for tensor, plist in m.parametrizations.items():
            kinds = [type(p).__name__ for p in plist]
            if tensor == "weight" and kinds == ["_SpectralNorm"]:
                continue
            raise ValueError(
                f"module {name!r} ({type(m).__name__}) has the parametrisation {kinds} of {tensor!r}; only one "
                "spectral_norm on 'weight' is supported. Fold it into the plain tensor first with "
                f"torch.nn.utils.parametrize.remove_parametrizations(module, {tensor!r}, leave_parametrized=True) "
                "(it keeps the current value) and register it again on the result if needed")


def _vectors(sn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p = sn.module.parametrizations.weight[0]
    return p._u, p._v


def check_power_vectors(model: nn.Module) -> None:
    """``ValueError`` naming the first spectral-norm layer whose power-iteration vector ``_u``/``_v`` holds
    NaN or infinite values (and what to do)."""
    for sn in spectral_norms(model):
        for label, t in zip(("_u", "_v"), _vectors(sn)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(
                    f"spectral_norm on module {sn.module_name!r}: its power-iteration vector {label} holds NaN or "
                    "infinite values, so its σ estimate is undefined; call thesislib.spectral.reset_power_vectors("
                    "model) (exact singular vectors by SVD) or register spectral_norm on that module again")


@torch.no_grad()
def top_singular_vectors(weight: torch.Tensor, dim: int = 0, like: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, v)``: the top left/right singular vectors of ``weight`` reshaped as in :func:`matrix_sigma` (SVD,
    float64, returned in ``weight``'s dtype), signed so that ``u · like ≥ 0`` when ``like`` is given (continuity
    with a previous estimate); ``uᵀ W v = σ`` exactly."""
    mat = _matrix(weight, dim)
    u_all, _s, vh = torch.linalg.svd(mat, full_matrices=False)
    u, v = u_all[:, 0], vh[0]
    if like is not None and float(torch.dot(u, like.detach().double().flatten())) < 0:
        u, v = -u, -v
    return u.to(weight.dtype), v.to(weight.dtype)


@torch.no_grad()
def reset_power_vectors(model: nn.Module) -> nn.Module:
    """Set every spectral-norm layer's ``_u``/``_v`` to the top singular vectors of its unnormalised weight
    (:func:`top_singular_vectors`), so that its σ estimate ``uᵀWv`` is exact; in place, returns ``model``."""
    for sn in spectral_norms(model):
        w = raw_weight(sn.module)
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"spectral_norm on module {sn.module_name!r}: the weight itself holds NaN or infinite "
                             "values; no singular vectors exist (check training / loading)")
        u, v = _vectors(sn)
        new_u, new_v = top_singular_vectors(w, sn.dim, like=u if bool(torch.isfinite(u).all()) else None)
        u.copy_(new_u)
        v.copy_(new_v)
    return model


def power_iteration_drift(model: nn.Module, example_inputs: torch.Tensor) -> list[dict[str, Any]]:
    """For every spectral-norm layer: σ of its normalised weight (eval mode, the stored ``u``/``v``) before and
    after one forward of ``example_inputs`` in train mode (one power-iteration step), and the relative
    change ``drift = |after / before − 1|``. Parameters are unchanged; ``u``/``v`` (and any BatchNorm
    statistics) advance."""
    norms = spectral_norms(model)
    if not norms:
        raise ValueError("power_iteration_drift: the model has no spectral_norm layer")
    check_power_vectors(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = {sn.module_name: matrix_sigma(sn.module.weight) for sn in norms}
        model.train()
        model(example_inputs.to(model_device(model)))
        model.eval()
        after = {sn.module_name: matrix_sigma(sn.module.weight) for sn in norms}
    model.train(was_training)
    return [{"name": n, "before": before[n], "after": after[n], "drift": abs(after[n] / before[n] - 1.0)}
            for n in before]
