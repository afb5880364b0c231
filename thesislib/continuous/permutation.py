"""Channel permutation that minimises the total variation of a group's tensors along the channel axis.

Solodskikh et al. (CVPR 2023, Sec. 4.1) make a trained layer's weights a smooth function of the
channel coordinate by reordering channels so that the total variation

    TV(pi) = sum_j d(pi_j, pi_{j+1}),     d(a, b) = sum_t ||T_t[a] - T_t[b]||_2 / s_t,

is small (the total variation of the vector-valued function ``x -> (T_t[x])_t``), where ``T_t``
runs over *every* tensor of the coupled group (producers, consumers and normalisation parameters),
``T_t[a]`` is channel ``a`` of tensor ``t`` flattened and ``s_t`` the root-mean-square channel
norm of tensor ``t``, so each tensor counts equally whatever its scale (BatchNorm running
variances would otherwise dominate). The Euclidean norm makes ``d`` one matrix product per tensor
(``torch.cdist``), which is what keeps conversion of a whole ResNet-18 within seconds. Minimising ``TV`` is
an open travelling-salesman path problem on the distance matrix ``d``.

:func:`tv_order` solves it fast: vectorised distance matrix (``torch.cdist``), greedy
nearest-neighbour paths from several starts, then 2-opt with best-improvement moves evaluated for
all ``(i, j)`` pairs at once (an ``n x n`` array per move) and Or-opt moves of single channels.
:func:`two_opt_reference` is a plain 2-opt (first improvement, identity start), the method of
TorchIntegral, kept as the reference the benchmark compares against.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def channel_distances(tensors: Sequence[tuple[torch.Tensor, int]]) -> np.ndarray:
    """Distance matrix ``d`` (float64, ``n x n``) between channels over all ``(tensor, dim)`` pairs."""
    if not tensors:
        raise ValueError("channel_distances needs at least one (tensor, dim) pair")
    n = tensors[0][0].shape[tensors[0][1]]
    total = torch.zeros(n, n, dtype=torch.float64)
    for t, dim in tensors:
        if t.shape[dim] != n:
            raise ValueError(f"all tensors must have {n} channels along their axis, got shape "
                             f"{tuple(t.shape)} at dim {dim}")
        f = torch.movedim(t.detach().to("cpu", torch.float64), dim, 0).reshape(n, -1)
        scale = f.pow(2).sum(1).mean().sqrt()
        if f.shape[1] == 0 or scale == 0:
            continue
        f = (f / scale).float()
        sq = f.pow(2).sum(1)
        dist2 = (sq[:, None] + sq[None, :] - 2 * f @ f.T).clamp_min(0).double()
        dist2.fill_diagonal_(0)
        total += dist2.sqrt()
    return total.numpy()


def total_variation(d: np.ndarray, order: Sequence[int]) -> float:
    """``sum_j d[order_j, order_{j+1}]``."""
    order = np.asarray(order)
    if len(order) < 2:
        return 0.0
    return float(d[order[:-1], order[1:]].sum())


def greedy_path(d: np.ndarray, start: int) -> np.ndarray:
    """Nearest-neighbour path from ``start``."""
    n = d.shape[0]
    visited = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    cur = start
    for k in range(n):
        order[k] = cur
        visited[cur] = True
        if k == n - 1:
            break
        row = np.where(visited, np.inf, d[cur])
        cur = int(np.argmin(row))
    return order


def _two_opt_sweep(d_ext: np.ndarray, order: np.ndarray) -> bool:
    """One 2-opt sweep on an open path (in place): for each ``i`` the best reversal of
    ``order[i..j]`` over all ``j`` (vectorised); ``d_ext`` has a dummy node (last) at distance 0."""
    n = len(order)
    dummy = d_ext.shape[0] - 1
    improved = False
    for i in range(n - 1):
        a = order[i - 1] if i > 0 else dummy
        b = order[i]
        c = order[i + 1:]
        e = np.concatenate((order[i + 2:], [dummy]))
        delta = d_ext[a, c] + d_ext[b, e] - d_ext[a, b] - d_ext[c, e]
        k = int(np.argmin(delta))
        if delta[k] < -1e-12:
            j = i + 1 + k
            order[i:j + 1] = order[i:j + 1][::-1].copy()
            improved = True
    return improved


def _or_opt_sweep(d_ext: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, bool]:
    """One Or-opt sweep: move each channel to its best position if that shortens the path."""
    n = len(order)
    dummy = d_ext.shape[0] - 1
    improved = False
    for node in order.copy():
        p = int(np.flatnonzero(order == node)[0])
        a0 = order[p - 1] if p > 0 else dummy
        b0 = order[p + 1] if p < n - 1 else dummy
        removal = d_ext[a0, node] + d_ext[node, b0] - d_ext[a0, b0]
        rest = np.delete(order, p)
        a = np.concatenate(([dummy], rest))
        b = np.concatenate((rest, [dummy]))
        insertion = d_ext[a, node] + d_ext[node, b] - d_ext[a, b]
        q = int(np.argmin(insertion))
        if insertion[q] < removal - 1e-12:
            order = np.insert(rest, q, node)
            improved = True
    return order, improved


def tv_order(d: np.ndarray, starts: int = 4, seed: int = 0, max_sweeps: int = 50) -> np.ndarray:
    """A channel order with small total variation: greedy paths from ``starts`` starts, each
    refined by alternating 2-opt sweeps (best ``j`` for each ``i``) and Or-opt sweeps until neither
    improves; the best path wins."""
    n = d.shape[0]
    if n <= 2:
        return np.arange(n)
    d_ext = np.zeros((n + 1, n + 1))
    d_ext[:n, :n] = d
    rng = np.random.default_rng(seed)
    first = int(np.argmax(d.sum(1)))  # an outlying channel makes a good path end
    candidates = [first] + list(rng.choice(n, size=min(starts, n) - 1, replace=False)) if starts > 1 else [first]
    best, best_tv = None, np.inf
    for s in candidates:
        order = greedy_path(d, int(s))
        for _ in range(max_sweeps):
            improved = _two_opt_sweep(d_ext, order)
            order, moved = _or_opt_sweep(d_ext, order)
            if not (improved or moved):
                break
        tv = total_variation(d, order)
        if tv < best_tv:
            best, best_tv = order.copy(), tv
    return best


def two_opt_reference(d: np.ndarray, max_sweeps: int = 1000) -> np.ndarray:
    """Plain 2-opt: identity start, for each ``i`` take the first improving reversal, until a
    sweep finds none (vectorised over ``j`` only). The reference for :func:`tv_order`."""
    n = d.shape[0]
    order = np.arange(n)
    if n <= 2:
        return order
    d_ext = np.zeros((n + 1, n + 1))
    d_ext[:n, :n] = d
    dummy = n
    for _ in range(max_sweeps):
        improved = False
        for i in range(n - 1):
            a = order[i - 1] if i > 0 else dummy
            b = order[i]
            js = np.arange(i + 1, n)
            c = order[js]
            e = np.concatenate((order[i + 2:], [dummy]))
            delta = d_ext[a, c] + d_ext[b, e] - d_ext[a, b] - d_ext[c, e]
            hit = np.flatnonzero(delta < -1e-12)
            if hit.size:
                j = int(js[hit[0]])
                order[i:j + 1] = order[i:j + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return order
