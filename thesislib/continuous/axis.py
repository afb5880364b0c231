"""A continuous channel axis: control points, interpolation, quadrature and anti-aliased resampling.

Integral Neural Networks (Solodskikh et al., CVPR 2023) treat the ``n`` channels of a layer as
samples of a function ``W(x)`` of a channel coordinate ``x`` in ``[0, 1]``. Here the ``n`` stored
values are *control points* on the uniform grid ``x_j = j / (n - 1)`` and a layer with ``m``
channels uses the samples at ``y_i = i / (m - 1)`` (``y_0 = 1/2`` when ``m = 1``):

* **interpolation** ``W(y_i) = sum_j A_ij W_j`` with the Keys cubic-convolution kernel
  (``a = -1/2``, the kernel of ``grid_sample(mode="bicubic")``) or linear hat functions,
  replicating the border. ``A`` is banded (4 or 2 taps per row) and ``A = I`` when ``m = n``, so the
  full-width network is reproduced exactly;
* **quadrature** (consumers, i.e. layers that *sum* over the axis): the trained network computes
  ``z = sum_j V_j h_j`` over ``n`` channels. Reading the stored weights as samples of a smooth
  kernel, ``V_j = V(x_j)``, the Euler--Maclaurin formula on the grid ``h = 1 / (n - 1)`` gives

      sum_j f(x_j) = (n - 1) int_0^1 f + (f(0) + f(1)) / 2 + O(h),        f = V h,

  so the width-independent quantity a layer computes is ``(n - 1) int f + (f(0) + f(1)) / 2``. At
  ``m`` samples it is approximated with the rule's weights ``w^(m)`` on :func:`sample_grid`:

      z ~ sum_i s_i f(y_i),     s_i = (n - 1) w^(m)_i + [i = 0 or i = m - 1] / 2,

  i.e. the consumer's sampled weights are ``V' = diag(s) A V`` (:func:`consumer_weights`). For the
  trapezoid rule (default, order 2) ``s = 1`` exactly at ``m = n``; for Simpson (order 4; the 3/8
  rule on the last three intervals when ``m`` is even) ``m = n`` is defined as the identity so the
  full-width net is reproduced; the rectangle rule is the plain rescaling ``s = n / m`` (order 1).
  ``m = 1`` gives ``s = n``. Quadrature weights never enter the control points, so they stay as
  smooth as the trained weights;
* **anti-aliasing**: before sampling ``m < n`` points the control points are low-passed to the new
  Nyquist rate. With the DCT-II along the axis, coefficient ``k`` is the cosine ``cos(pi k x)``
  (``k`` half periods on ``[0, 1]``); ``m`` samples on ``[0, 1]`` represent ``k <= m - 1``, so
  coefficients ``k >= m`` are zeroed (``L = D^T diag(1[k < m]) D`` with the orthonormal DCT-II
  matrix ``D``) and the result is sampled with ``A``: the operator is ``A L`` (``L = I`` at ``m = n``).
  Naive resampling uses ``A`` alone.

``interpolation="dct"`` is the purely spectral alternative: control points and samples sit on the
midpoint grids ``(j + 1/2) / n`` and ``(i + 1/2) / m`` of the DCT-II, the control points are read
as the cosine series ``f(t) = sum_{k<n} c_k cos(pi k t)`` and the samples are that series truncated
to ``k < m`` -- ``A = sqrt(m / n) D_m[:m]^T D_n[:m]`` (anti-aliased by construction, ``A = I`` at
``m = n``); on the midpoint grid the discrete sum is ``n`` times the midpoint rule (order 2), so
consumers are scaled by ``n / m`` whatever ``quadrature`` says.

Every operator is a fixed ``m x n`` matrix computed once: banded ones are applied by one gather and
a weighted sum (cost ``O(taps * m * rest)``), dense ones (anti-aliased) by a matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from thesislib.graph import ROLES, Role

INTERPOLATIONS = ("cubic", "linear", "dct")
QUADRATURES = ("trapezoid", "simpson", "rectangle")


def _check_sizes(n: int, m: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the number of control points must be an int >= 1, got {n!r}")
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"the number of samples must be an int >= 1, got {m!r}")


def sample_grid(m: int) -> np.ndarray:
    """Uniform grid of ``m`` points on [0, 1] including both ends (``[0.5]`` for ``m = 1``)."""
    _check_sizes(1, m)
    if m == 1:
        return np.array([0.5])
    return np.arange(m, dtype=np.float64) / (m - 1)


def quadrature_weights(m: int, rule: str = "trapezoid") -> np.ndarray:
    """Weights ``w_i`` with ``sum_i w_i f(y_i) ~ int_0^1 f`` on :func:`sample_grid` ``(m)``.

    trapezoid: ``h [1/2, 1, ..., 1, 1/2]``, error ``O(h^2)``; simpson: ``h/3 [1, 4, 2, ..., 4, 1]``
    (odd ``m``; for even ``m >= 4`` Simpson on the first ``m - 3`` points and the 3/8 rule
    ``3h/8 [1, 3, 3, 1]`` on the last four), error ``O(h^4)``; rectangle: ``1/m`` each, ``O(h)``.
    ``h = 1 / (m - 1)``; ``m = 1`` gives ``[1]``.
    """
    if rule not in QUADRATURES:
        raise ValueError(f"unknown quadrature rule {rule!r}; valid rules: {', '.join(QUADRATURES)}")
    _check_sizes(1, m)
    if m == 1:
        return np.ones(1)
    if rule == "rectangle":
        return np.full(m, 1.0 / m)
    h = 1.0 / (m - 1)
    w = np.full(m, h)
    if rule == "trapezoid" or m == 2:
        w[0] = w[-1] = h / 2
        return w
    w = np.zeros(m)
    simpson_points = m if m % 2 == 1 else m - 3
    if simpson_points >= 3:
        s = np.ones(simpson_points)
        s[1:-1:2] = 4.0
        s[2:-1:2] = 2.0
        w[:simpson_points] += s * h / 3
    if m % 2 == 0:
        w[m - 4:] += np.array([1.0, 3.0, 3.0, 1.0]) * 3 * h / 8
    return w


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys (1981) cubic-convolution kernel; ``k(0) = 1``, ``k(+-1) = k(+-2) = 0``."""
    t = np.abs(t)
    out = np.zeros_like(t)
    near = t <= 1
    far = (t > 1) & (t < 2)
    out[near] = (a + 2) * t[near] ** 3 - (a + 3) * t[near] ** 2 + 1
    out[far] = a * t[far] ** 3 - 5 * a * t[far] ** 2 + 8 * a * t[far] - 4 * a
    return out


@lru_cache(maxsize=None)
def banded_interpolation(n: int, m: int, kind: str = "cubic") -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights ``(idx [m, taps], coef [m, taps])`` of the interpolation matrix ``A``.

    ``A_ij = sum_t coef[i, t] [idx[i, t] == j]``; the sample ``y_i`` sits at control index
    ``s_i = y_i (n - 1)``; taps outside ``[0, n - 1]`` are clamped to the border (replication).
    """
    if kind not in INTERPOLATIONS or kind == "dct":
        raise ValueError(f"no banded form for interpolation {kind!r}; banded kinds: cubic, linear")
    _check_sizes(n, m)
    s = sample_grid(m) * (n - 1)
    base = np.floor(s)
    if kind == "cubic":
        offsets = np.arange(-1, 3)
        idx = base[:, None] + offsets[None, :]
        coef = _keys_cubic(s[:, None] - idx)
    else:
        offsets = np.arange(0, 2)
        idx = base[:, None] + offsets[None, :]
        coef = np.clip(1.0 - np.abs(s[:, None] - idx), 0.0, None)
    idx = np.clip(idx, 0, n - 1).astype(np.int64)
    return idx, coef


def interpolation_matrix(n: int, m: int, kind: str = "cubic") -> np.ndarray:
    """Dense ``m x n`` interpolation matrix ``A`` from control points to samples (``A = I`` at ``m = n``)."""
    if kind == "dct":
        _check_sizes(n, m)
        k = min(m, n)
        return math.sqrt(m / n) * dct_matrix(m)[:k].T @ dct_matrix(n)[:k]
    idx, coef = banded_interpolation(n, m, kind)
    a = np.zeros((m, n))
    np.add.at(a, (np.repeat(np.arange(m), idx.shape[1]), idx.ravel()), coef.ravel())
    return a


@lru_cache(maxsize=None)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D [k, j] = c_k cos(pi k (j + 1/2) / n)`` (``D D^T = I``)."""
    _check_sizes(n, 1)
    j = np.arange(n)
    k = np.arange(n)[:, None]
    d = np.cos(np.pi * k * (j + 0.5) / n) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def lowpass_matrix(n: int, m: int) -> np.ndarray:
    """``L = D^T diag(1[k < m]) D``: keeps the DCT-II coefficients below the Nyquist index of ``m`` samples."""
    _check_sizes(n, m)
    if m >= n:
        return np.eye(n)
    d = dct_matrix(n)
    return d[:m].T @ d[:m]


def consumer_weights(n: int, m: int, rule: str = "trapezoid") -> np.ndarray:
    """Scale ``s_i`` of the ``m`` sampled consumer weights (see the module docstring):
    ``(n - 1) w^(m)_i`` plus ``1/2`` at both ends (``n / m`` each for the rectangle rule); ones at ``m = n``."""
    _check_sizes(n, m)
    if m == n:
        return np.ones(n)
    if rule == "rectangle":
        return np.full(m, n / m)
    w = quadrature_weights(m, rule) * (n - 1)
    if m == 1:
        return w + 1.0
    w[0] += 0.5
    w[-1] += 0.5
    return w


@dataclass
class AxisOp:
    """An ``m x n`` linear map along one tensor axis, banded (gather + weighted sum) or dense."""

    n: int
    m: int
    identity: bool
    idx: torch.Tensor | None = None   # [m * taps]
    coef: torch.Tensor | None = None  # [m, taps]
    dense: torch.Tensor | None = None  # [m, n]
    _moved: dict = field(default_factory=dict, repr=False)  # (device, dtype) -> tensors, so CUDA gets them once

    def _on(self, device: torch.device, dtype: torch.dtype) -> tuple:
        key = (device, dtype)
        if key not in self._moved:
            if self.dense is not None:
                self._moved[key] = (self.dense.to(device=device, dtype=dtype),)
            else:
                self._moved[key] = (self.idx.to(device), self.coef.to(device=device, dtype=dtype))
        return self._moved[key]

    def matrix(self) -> np.ndarray:
        """The operator as a dense numpy matrix (for tests and analysis)."""
        if self.identity:
            return np.eye(self.n)
        if self.dense is not None:
            return self.dense.double().cpu().numpy()
        a = np.zeros((self.m, self.n))
        taps = self.coef.shape[1]
        np.add.at(a, (np.repeat(np.arange(self.m), taps), self.idx.cpu().numpy()),
                  self.coef.double().cpu().numpy().ravel())
        return a

    def apply(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Apply the map along axis ``dim`` of ``x`` (whose size there must be ``n``)."""
        if self.identity:
            return x
        dim = dim % x.dim()
        if x.shape[dim] != self.n:
            raise ValueError(f"axis {dim} of a tensor of shape {tuple(x.shape)} has size "
                             f"{x.shape[dim]}, the operator expects {self.n}")
        if self.dense is not None:
            (mat,) = self._on(x.device, x.dtype)
            return torch.movedim(torch.tensordot(mat, x, dims=([1], [dim])), 0, dim)
        idx, coef = self._on(x.device, x.dtype)
        taps = coef.shape[1]
        gathered = x.index_select(dim, idx)  # size m * taps along dim
        shape = list(x.shape)
        shape[dim:dim + 1] = [self.m, taps]
        gathered = gathered.reshape(shape)
        cshape = [1] * len(shape)
        cshape[dim], cshape[dim + 1] = self.m, taps
        return (gathered * coef.reshape(cshape)).sum(dim + 1)


@lru_cache(maxsize=None)
def axis_op(n: int, m: int, role: str = Role.PRODUCER, kind: str = "cubic", rule: str = "trapezoid",
            antialias: bool = False) -> AxisOp:
    """The resampling operator of one axis: ``A`` (or ``A L``) for producers and norms,
    ``diag(s) A`` (or ``diag(s) A L``) for consumers, ``s`` = :func:`consumer_weights`."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; valid roles: {', '.join(r.value for r in ROLES)}")
    if kind not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {kind!r}; valid kinds: {', '.join(INTERPOLATIONS)}")
    if rule not in QUADRATURES:
        raise ValueError(f"unknown quadrature rule {rule!r}; valid rules: {', '.join(QUADRATURES)}")
    _check_sizes(n, m)
    if m == n:
        return AxisOp(n, m, identity=True)
    if kind == "dct":
        scale = np.full(m, n / m) if role == Role.CONSUMER else np.ones(m)
        mat = scale[:, None] * interpolation_matrix(n, m, "dct")
        return AxisOp(n, m, identity=False, dense=torch.tensor(mat, dtype=torch.float32))
    scale = consumer_weights(n, m, rule) if role == Role.CONSUMER else np.ones(m)
    if antialias and m < n:
        mat = scale[:, None] * (interpolation_matrix(n, m, kind) @ lowpass_matrix(n, m))
        return AxisOp(n, m, identity=False, dense=torch.tensor(mat, dtype=torch.float32))
    idx, coef = banded_interpolation(n, m, kind)
    coef = coef * scale[:, None]
    return AxisOp(n, m, identity=False, idx=torch.from_numpy(idx.ravel().copy()),
                  coef=torch.tensor(coef, dtype=torch.float32))
