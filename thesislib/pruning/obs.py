"""Structured layer-wise Optimal Brain Surgeon: choose channels by output error, then reconstruct.

Layer-wise OBS (Dong, Chen, Pan, "Learning to Prune Deep Neural Networks via Layer-wise Optimal Brain
Surgeon", NeurIPS 2017) and its exact greedy form OBC (Frantar, Singh, Alistarh, "Optimal Brain
Compression", NeurIPS 2022), applied to whole input channels of the layers that *consume* a group:

* for each consumer with weight ``W`` (``[out, d]``; a convolution's input unfolded to ``d = C·k·k``),
  ``H = 2 X Xᵀ / N`` from its calibration inputs ``X`` (damped by 1 % of the mean diagonal, as in OBC/GPTQ);
* removing the block ``Q`` of one input channel costs ``ΔE = Σ_rows w_Q [(H⁻¹)_QQ]⁻¹ w_Qᵀ`` of output
  error, and the optimal compensation of the remaining weights is ``δW = −W_Q [(H⁻¹)_QQ]⁻¹ (H⁻¹)_{Q,:}``;
* greedily remove the channel with the least cost summed over all consumers of the group, apply the
  update, and eliminate ``Q`` from ``H⁻¹`` (``H⁻¹ ← H⁻¹ − H⁻¹_{:,Q} [(H⁻¹)_QQ]⁻¹ H⁻¹_{Q,:}``).

The result is the least-squares reconstruction of every consumer's output on the calibration inputs for the
kept channels -- no training.  Consumers that are neither Linear nor ungrouped Conv2d are not compensated;
a group with no such consumer falls back to the L2 filter norm.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from thesislib.graph import ChannelGroup, Member, Role
from thesislib.runtime import model_device

from .calibration import calib_batches
from .structural import Plan


def _supported(m: Member) -> bool:
    mod = m.module
    return isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1
                                          and mod.padding_mode == "zeros")


def _patches(module: nn.Conv2d, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Input patches ``[len(rows), C·kh·kw]`` (the columns of ``unfold``) at flat (sample, position) ``rows``."""
    kh, kw = module.kernel_size
    (sh, sw), (dh, dw), (ph, pw) = module.stride, module.dilation, module.padding
    xp = F.pad(x, (pw, pw, ph, ph))
    ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    n, pos = rows // (ho * wo), rows % (ho * wo)
    oy, ox = pos // wo, pos % wo
    yy = oy[:, None, None] * sh + torch.arange(kh, device=x.device)[None, :, None] * dh
    xx = ox[:, None, None] * sw + torch.arange(kw, device=x.device)[None, None, :] * dw
    patch = xp[n[:, None, None], :, yy, xx]  # [rows, kh, kw, C]
    return patch.permute(0, 3, 1, 2).reshape(rows.shape[0], -1)


def _rows(module: nn.Module, x: torch.Tensor, max_rows: int, gen: torch.Generator) -> torch.Tensor:
    """The consumer's input as rows of its ``[out, d]`` weight matrix's input space: at most ``max_rows``
    per batch, a seeded random subset of the (sample, position) rows of a convolution."""
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > max_rows:
            rows = rows[torch.randperm(rows.shape[0], generator=gen)[:max_rows].to(rows.device)]
        return rows
    kh, kw = module.kernel_size
    (sh, sw), (dh, dw), (ph, pw) = module.stride, module.dilation, module.padding
    ho = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    total = x.shape[0] * ho * wo
    pick = torch.randperm(total, generator=gen)[:max_rows] if total > max_rows else torch.arange(total)
    return _patches(module, x, pick.to(x.device))


@torch.no_grad()
def input_hessians(model: nn.Module, modules: list[nn.Module], calib: Iterable, batches: int,
                   max_rows: int = 4096, seed: int = 0) -> dict[nn.Module, torch.Tensor]:
    """``H = 2 X Xᵀ / N`` (accumulated in float64) of each module's calibration inputs.

    A convolution sees one row per sample and output position; to bound the cost, at most ``max_rows``
    rows per batch enter ``H`` (a seeded random subset, the same for every method call).
    """
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    sums: dict[nn.Module, torch.Tensor] = {}
    counts: dict[nn.Module, int] = {}
    hooks = []
    for mod in dict.fromkeys(modules):
        def hook(module, inputs):
            rows = _rows(module, inputs[0], max_rows, gen)
            sums[module] = sums.get(module, 0) + (rows.T @ rows).double()
            counts[module] = counts.get(module, 0) + rows.shape[0]
        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        for x, _ in calib_batches(calib, batches, device):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if not sums:
        raise ValueError("obs: the calibration loader is empty")
    return {m: 2 * sums[m] / counts[m] for m in sums}


def _blocks(m: Member, size: int) -> list[list[int]]:
    kk = 1 if isinstance(m.module, nn.Linear) else m.module.kernel_size[0] * m.module.kernel_size[1]
    return [[i * kk + j for i in idxs for j in range(kk)] for idxs in m.indices(size)]


@torch.no_grad()
def obs_plan(group: ChannelGroup, hessians: dict[nn.Module, torch.Tensor], counts: list[int],
             damp: float = 0.01) -> Plan | None:
    """Greedy structured OBS for one group; updates the consumers' weights in place and returns the kept channels.

    ``None`` when the group has no consumer that OBS can compensate.
    """
    consumers = [m for m in group.weights(Role.CONSUMER) if _supported(m) and m.module in hessians]
    if not consumers:
        return None
    state = []
    for m in consumers:
        w = m.module.weight.detach()
        W = w.reshape(w.shape[0], -1).double().clone()
        H = hessians[m.module].clone()
        diag = torch.diagonal(H)
        dead = diag == 0
        H[dead, dead] = 1.0
        W[:, dead] = 0.0
        H += damp * diag.mean().clamp_min(1e-12) * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        Hinv = torch.linalg.inv(H)
        blocks = torch.tensor(_blocks(m, group.size), device=W.device)  # [size, q]
        state.append((m, W, Hinv, blocks))
    part_of = {c: i for i, p in enumerate(group.partitions) for c in p}
    quota = [len(p) - k for p, k in zip(group.partitions, counts)]
    alive = torch.ones(group.size, dtype=torch.bool)
    for _ in range(sum(quota)):
        eligible = torch.tensor([c for c in range(group.size) if alive[c] and quota[part_of[c]] > 0])
        cost = torch.zeros(len(eligible), dtype=torch.float64)
        for m, W, Hinv, blocks in state:
            Q = blocks[eligible.to(blocks.device)]  # [n, q]
            Hqq = Hinv[Q[:, :, None], Q[:, None, :]]  # [n, q, q]
            Wq = W[:, Q]  # [out, n, q]
            gram = torch.einsum("onq,onp->nqp", Wq, Wq)  # Σ_rows w_Qᵀ w_Q
            cost += (torch.linalg.inv(Hqq) * gram).sum((1, 2)).cpu()  # Σ_rows w_Q (H⁻¹_QQ)⁻¹ w_Qᵀ
        c = int(eligible[int(torch.argmin(cost))])
        for i, (m, W, Hinv, blocks) in enumerate(state):
            Q = blocks[c]
            Hqq_inv = torch.linalg.inv(Hinv[Q][:, Q])
            W -= W[:, Q] @ Hqq_inv @ Hinv[Q, :]
            W[:, Q] = 0.0
            Hinv -= Hinv[:, Q] @ Hqq_inv @ Hinv[Q, :]
        alive[c] = False
        quota[part_of[c]] -= 1
    for m, W, _, _ in state:
        m.module.weight.data.copy_(W.reshape(m.module.weight.shape).to(m.module.weight.dtype))
    return Plan(keep=[c for c in range(group.size) if alive[c]])
