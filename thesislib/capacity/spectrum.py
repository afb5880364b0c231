"""DCT spectrum of a channel-weight function and its Nyquist sampling width.

A layer's weights, after the channel permutation of :mod:`thesislib.continuous`,
are samples ``w(x_i)`` of a function of the channel coordinate ``x`` on the
midpoint grid ``x_i = (i + 1/2) / n``, ``i = 0..n-1`` of the unit interval.
The orthonormal DCT-II expands those samples in the cosines

    phi_j(x) = cos(pi * j * x),     j = 0..n-1,

i.e. DCT index ``j`` is a cosine of ``j`` half-periods over the channel
interval — a frequency of ``j / 2`` cycles per interval.  A function whose
spectrum is confined to the first ``k`` indices (``j <= k - 1``) is band-limited
to ``(k - 1) / 2`` cycles per interval; by the Nyquist–Shannon–Kotelnikov
theorem for the DCT-I/II grid, ``k`` samples on the ``k``-point midpoint grid
determine it exactly (the ``k``-point DCT-II is invertible on the span of the
first ``k`` cosines), and anti-aliased resampling to ``k`` points loses nothing.
The same count holds on the endpoint grid ``x_j = j / (n - 1)`` of the control
points in :mod:`thesislib.continuous.axis` (the DCT-I grid: ``k`` samples carry
cosines up to ``k - 1`` half-periods), whose anti-aliasing filter keeps exactly
the DCT-II coefficients ``j < m`` when resampling to ``m`` channels — so a group
whose spectrum lies in the first ``k`` coefficients passes that filter unchanged.
So the smallest ``k`` that keeps a fraction ``energy`` of the spectral power
(Parseval: the orthonormal DCT preserves power) is the sample count — the
number of channels — the function needs: its *Nyquist width*.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import scipy.fft
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

#: Relative slack on the energy threshold that absorbs float rounding of the
#: input (float32 tensors leak ~1e-14 of their power into every coefficient).
ENERGY_RTOL = 1e-9


def _as_float64(w: ArrayLike) -> np.ndarray:
    if isinstance(w, torch.Tensor):
        return w.detach().to("cpu", torch.float64).numpy()
    return np.asarray(w, dtype=np.float64)


def _check_tensor(a: np.ndarray, dim: int) -> int:
    if a.ndim == 0:
        raise ValueError("spectrum needs a tensor with at least one axis, got a scalar")
    if not -a.ndim <= dim < a.ndim:
        raise ValueError(f"dim={dim} is out of range for a tensor with {a.ndim} axes "
                         f"(valid: {-a.ndim}..{a.ndim - 1})")
    if a.size == 0:
        raise ValueError(f"spectrum of an empty tensor (shape {a.shape}) is undefined")
    if not np.all(np.isfinite(a)):
        raise ValueError("the tensor holds NaN or infinite values; its spectrum is undefined")
    return dim % a.ndim


def check_energy(energy: float) -> float:
    """Return ``energy`` as a float, or raise ``ValueError`` unless it is in (0, 1]."""
    energy = float(energy)
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1] (a fraction of spectral power), got {energy}")
    return energy


def spectrum(w: ArrayLike, dim: int = 0) -> ArrayLike:
    """DCT-II power spectrum of ``w`` along ``dim``, averaged over all other axes.

    ``P[j] = mean over the other axes of |DCT-II_ortho(w)[j]|^2``, ``j = 0..n-1``
    with ``n = w.shape[dim]``; ``sum(P) = mean over other axes of sum(w^2)``
    (Parseval). Returns a 1-D float64 tensor for a tensor input, a numpy array
    otherwise. Raises ``ValueError`` on an empty or non-finite tensor or an
    out-of-range ``dim``.
    """
    a = _as_float64(w)
    dim = _check_tensor(a, dim)
    coeffs = scipy.fft.dct(a, type=2, axis=dim, norm="ortho")
    power = np.moveaxis(coeffs ** 2, dim, 0).reshape(a.shape[dim], -1).mean(axis=1)
    if isinstance(w, torch.Tensor):
        return torch.from_numpy(power)
    return power


def nyquist_from_spectrum(power: ArrayLike, energy: float = 0.99) -> int:
    """Smallest ``k >= 1`` whose first ``k`` coefficients of ``power`` hold ``energy`` of its sum.

    An all-zero spectrum (a zero function) needs one sample: returns 1.
    """
    energy = check_energy(energy)
    p = _as_float64(power)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"power must be a non-empty 1-D spectrum, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("power must be finite and non-negative")
    total = p.sum()
    if total == 0.0:
        return 1
    cumulative = np.cumsum(p)
    k = int(np.searchsorted(cumulative, (energy - ENERGY_RTOL) * total, side="left")) + 1
    return min(max(k, 1), p.size)


def nyquist_width(w: ArrayLike, dim: int = 0, energy: float = 0.99) -> int:
    """Nyquist width of ``w`` along ``dim``: the smallest sample count keeping ``energy``.

    The smallest ``k`` such that the first ``k`` DCT-II coefficients hold at
    least ``energy`` of the total power of :func:`spectrum` (threshold relaxed by
    ``ENERGY_RTOL`` of the total for float rounding). A tensor built from the
    first ``k`` DCT components along ``dim`` gives exactly ``k`` at ``energy=1``
    (and whenever the ``k``-th component holds more than ``1 - energy`` of the
    power), whatever the other axes; the result is non-decreasing in ``energy``.
    Raises ``ValueError`` for ``energy`` outside (0, 1], an empty or NaN tensor,
    or an out-of-range ``dim``.
    """
    check_energy(energy)
    return nyquist_from_spectrum(spectrum(w, dim), energy)


def combined_spectrum(tensors: Sequence[tuple[ArrayLike, int]]) -> np.ndarray:
    """Mean of the *normalised* spectra of several tensors sharing one channel axis.

    Each ``(tensor, dim)`` gets its spectrum along ``dim`` divided by its total
    power (so every member counts equally whatever its scale), then the spectra
    are averaged. Members whose power is zero are skipped; all members must have
    the same length along their ``dim``.
    """
    if not tensors:
        raise ValueError("combined_spectrum needs at least one (tensor, dim) pair")
    parts = []
    lengths = set()
    for t, d in tensors:
        p = np.asarray(spectrum(t, d), dtype=np.float64)
        lengths.add(p.size)
        total = p.sum()
        if total > 0:
            parts.append(p / total)
    if len(lengths) != 1:
        raise ValueError(f"tensors disagree on the channel count along their dims: {sorted(lengths)}")
    if not parts:
        return np.zeros(lengths.pop())
    return np.mean(parts, axis=0)


def band_limited(shape: Sequence[int], k: int, dim: int = 0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random tensor of ``shape`` whose slices along ``dim`` use only DCT indices ``< k``.

    Coefficients ``j < k`` are ``N(0, 1)`` plus ``+-1`` (so none vanishes);
    inverse orthonormal DCT-II along ``dim``. Used to test :func:`nyquist_width`.
    """
    shape = tuple(int(s) for s in shape)
    n = shape[dim]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the length along dim), got {k}")
    coeffs = torch.randn(shape, generator=generator, dtype=torch.float64)
    coeffs = coeffs + torch.sign(coeffs)
    coeffs = coeffs.movedim(dim, 0)
    coeffs[k:] = 0.0
    coeffs = coeffs.movedim(0, dim)
    signal = scipy.fft.idct(coeffs.numpy(), type=2, axis=dim, norm="ortho")
    return torch.from_numpy(np.ascontiguousarray(signal)).to(dtype)
