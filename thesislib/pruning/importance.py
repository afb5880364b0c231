"""Channel importance scores of the structured-pruning baselines (higher = keep).

Every function returns ``{group name: scores[size]}`` for the root channels of each group.  Scores are
computed on the model in eval mode (BatchNorm uses its running statistics, so scoring never changes
them).  The data-free scores read only weights; ``taylor`` and ``hessian`` need labelled calibration
batches, ``lfp`` needs calibration inputs.

Two faults of torch-pruning 1.6.1 are avoided here: its ``GroupHessianImportance.accumulate_grad``
tests ``name not in self._accu_grad`` while the dictionary is keyed by parameters, so every call
*overwrites* the sum and only the last sample counts; its ``GroupTaylorImportance`` checks BatchNorm
layers against ``prune_groupnorm_out_channels`` and so never includes BatchNorm γ/β.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from thesislib.graph import ChannelGroup, Member, Role
from thesislib.runtime import model_device

from .calibration import calib_batches, task_loss


def _weight(member: Member) -> torch.Tensor:
    return member.tensor().detach()


def random_scores(groups: list[ChannelGroup], seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform random scores (the random-pruning control), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return {g.name: torch.rand(g.size, generator=gen) for g in groups}


def magnitude_scores(groups: list[ChannelGroup], p: int) -> dict[str, torch.Tensor]:
    """Filter norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).

    ``s_c = (Σ_{producers} Σ_j |W_{c,j}|^p)^{1/p}`` -- the L1 (p=1) or L2 (p=2) norm of the filters that
    produce channel ``c``; in a residual group the filters of all coupled producers are concatenated.
    """
    out = {}
    for g in groups:
        total = torch.zeros(g.size)
        for m in g.weights(Role.PRODUCER):
            total += m.reduce(_weight(m).abs().pow(p), m.axis, g.size).cpu()
        out[g.name] = total.pow(1.0 / p)
    return out


def bn_scale_scores(groups: list[ChannelGroup]) -> dict[str, torch.Tensor]:
    """Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network Slimming",
    ICCV 2017): ``s_c = Σ_{BatchNorm in group} |γ_c|``.

    A group without BatchNorm (ViT MLPs, SR networks) falls back to the L1 filter norm.
    """
    l1 = magnitude_scores(groups, 1)
    out = {}
    for g in groups:
        norms = [m for m in g.weights(Role.NORM) if isinstance(m.module, nn.modules.batchnorm._BatchNorm)
                 and m.module.weight is not None]
        if not norms:
            out[g.name] = l1[g.name]
            continue
        total = torch.zeros(g.size)
        for m in norms:
            total += m.reduce(m.module.weight.detach().abs(), 0, g.size).cpu()
        out[g.name] = total
    return out


def _group_params(g: ChannelGroup) -> list[tuple[Member, str, torch.Tensor, int]]:
    """(member, parameter name, parameter, channel axis) of every parameter the group cuts (buffers left out)."""
    return [(m, m.param_name, t, m.axis) for m in g.members for t in (m.tensor(),) if isinstance(t, nn.Parameter)]


@torch.no_grad()
def taylor_terms(g: ChannelGroup) -> torch.Tensor:
    """``Σ_{s ∈ group(c)} g_s w_s`` per root channel from the gradients currently stored in ``.grad``
    (producer filters and biases, BatchNorm/LayerNorm γ and β, consumer columns)."""
    device = g.members[0].tensor().device
    s = torch.zeros(g.size, dtype=torch.float64, device=device)
    for m, _, t, axis in _group_params(g):
        if t.grad is not None:
            s += m.reduce((t.grad * t).double(), axis, g.size)
    return s.cpu()


def taylor_scores(model: nn.Module, groups: list[ChannelGroup], calib: Iterable, batches: int) -> dict[str, torch.Tensor]:
    """Group first-order Taylor importance (Molchanov et al., "Importance Estimation for Neural Network
    Pruning", CVPR 2019, Eq. 7-8): ``I_c = E_batches[(Σ_{s ∈ group(c)} g_s w_s)²]``.

    The sum runs over every parameter of channel ``c`` in the whole dependency group -- producer filters
    and biases, BatchNorm/LayerNorm γ and β, consumer input columns (:func:`taylor_terms`) -- and the squared
    sum is averaged over calibration mini-batches (the loss is the batch mean).
    """
    device = model_device(model)
    model.eval()
    totals = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups}
    count = 0
    for x, y in calib_batches(calib, batches, device):
        model.zero_grad(set_to_none=True)
        task_loss(model(x), y).backward()
        for g in groups:
            totals[g.name] += taylor_terms(g).pow(2)
        count += 1
    model.zero_grad(set_to_none=True)
    if count == 0:
        raise ValueError("taylor: the calibration loader is empty")
    return {k: (v / count).float() for k, v in totals.items()}


def squared_gradients_vmap(model: nn.Module, calib: Iterable, batches: int, chunk: int = 32) -> dict[str, torch.Tensor]:
    """``E_n[g_n²]`` for every parameter with per-sample gradients from ``torch.func.vmap(grad(...))``
    (the general, slower path of :func:`squared_gradients`)."""
    device = model_device(model)
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return task_loss(out, None if y is None else y.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    n = 0
    with warnings.catch_warnings():  # vmap has no batching rule for CPU flash attention: slower, still exact
        warnings.filterwarnings("ignore", message="There is a performance drop")
        for x, y in calib_batches(calib, batches, device):
            if y is None:
                task_loss(x, None)  # raises the clear error
            for start in range(0, x.shape[0], chunk):
                g = per_sample(params, x[start:start + chunk], y[start:start + chunk])
                for k in sums:
                    sums[k] += g[k].pow(2).sum(0)
                n += x[start:start + chunk].shape[0]
    if n == 0:
        raise ValueError("hessian: the calibration loader is empty")
    return {k: v / n for k, v in sums.items()}


def _fast_supported(m: nn.Module) -> bool:
    if isinstance(m, nn.Conv2d):
        return m.groups == 1 and m.padding_mode == "zeros" and isinstance(m.padding, tuple)
    return isinstance(m, (nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm))


def _per_sample_sq(m: nn.Module, x: torch.Tensor, delta: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """Σ_n (∂ℓ_n/∂θ)² for the parameters of one layer from its input ``x`` and output gradient ``delta``
    (samples are independent in eval mode, so ``delta[n]`` is the gradient of sample ``n``'s loss)."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(m, nn.Conv2d):
        b = x.shape[0]
        d = delta.reshape(b, delta.shape[1], -1)
        acc = torch.zeros(m.weight.shape[0], m.weight[0].numel(), dtype=delta.dtype, device=delta.device)
        for s in range(0, b, chunk):
            cols = F.unfold(x[s:s + chunk], m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
            acc += torch.bmm(d[s:s + chunk], cols.transpose(1, 2)).pow(2).sum(0)
        out["weight"] = acc.reshape(m.weight.shape)
        if m.bias is not None:
            out["bias"] = d.sum(2).pow(2).sum(0)
        return out
    if isinstance(m, nn.Linear):
        b = x.shape[0]
        xs, ds = x.reshape(b, -1, x.shape[-1]), delta.reshape(b, -1, delta.shape[-1])
        acc = torch.zeros_like(m.weight)
        for s in range(0, b, chunk):
            acc += torch.bmm(ds[s:s + chunk].transpose(1, 2), xs[s:s + chunk]).pow(2).sum(0)
        out["weight"] = acc
        if m.bias is not None:
            out["bias"] = ds.sum(1).pow(2).sum(0)
        return out
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        shape = [1, -1] + [1] * (x.dim() - 2)
        xhat = (x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
        dims = tuple(range(2, x.dim()))
        if m.weight is not None:
            out["weight"] = (delta * xhat).sum(dims).pow(2).sum(0) if dims else (delta * xhat).pow(2).sum(0)
            out["bias"] = delta.sum(dims).pow(2).sum(0) if dims else delta.pow(2).sum(0)
        return out
    # LayerNorm over the trailing normalized_shape
    xhat = F.layer_norm(x, m.normalized_shape, eps=m.eps)
    b, k = x.shape[0], len(m.normalized_shape)
    if m.weight is not None:
        per = (delta * xhat).reshape(b, -1, *m.normalized_shape).sum(1)
        out["weight"] = per.pow(2).sum(0)
    if m.bias is not None:
        out["bias"] = delta.reshape(b, -1, *m.normalized_shape).sum(1).pow(2).sum(0)
    del k
    return out


def squared_gradients(model: nn.Module, calib: Iterable, batches: int, chunk: int = 16,
                      names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """``E_n[g_n²]`` over every calibration *sample* ``n`` (the empirical Fisher diagonal) for the parameters
    of Conv2d / Linear / BatchNorm / LayerNorm layers, accumulated over all samples of all ``batches``.

    Per-sample gradients are exact and come from one batched backward pass per batch: the layer inputs and
    the gradients at the layer outputs are recorded and combined per sample (``g_n = δ_n X_nᵀ``), as BackPACK
    does.  In-place activations are switched off meanwhile so that recorded outputs stay intact.  When a
    parameter in ``names`` (default: all) belongs to another kind of layer, :func:`squared_gradients_vmap`
    is used instead.
    """
    owners = {f"{mn}.{pn}" if mn else pn: m for mn, m in model.named_modules() for pn, _ in m.named_parameters(recurse=False)}
    wanted = set(owners) if names is None else set(names)
    if any(not _fast_supported(owners[k]) for k in wanted):
        return squared_gradients_vmap(model, calib, batches)
    device = model_device(model)
    model.eval()
    modules = {m for k, m in owners.items() if k in wanted}
    module_names = {m: n for n, m in model.named_modules()}
    sums: dict[str, torch.Tensor] = {}
    saved: dict[nn.Module, torch.Tensor] = {}
    hooks = []
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in inplace:
        m.inplace = False

    def forward_hook(module, inputs, output):
        saved[module] = inputs[0].detach()

        def grad_hook(g, module=module):
            for pname, sq in _per_sample_sq(module, saved[module], g.detach(), chunk).items():
                key = f"{module_names[module]}.{pname}" if module_names[module] else pname
                sums[key] = sums.get(key, 0) + sq
        output.register_hook(grad_hook)

    for m in modules:
        hooks.append(m.register_forward_hook(forward_hook))
    n = 0
    try:
        for x, y in calib_batches(calib, batches, device):
            model.zero_grad(set_to_none=True)
            out = model(x)
            task_loss(out, y, reduction="none").sum().backward()
            n += x.shape[0]
            saved.clear()
    finally:
        for h in hooks:
            h.remove()
        for m in inplace:
            m.inplace = True
        model.zero_grad(set_to_none=True)
    if n == 0:
        raise ValueError("hessian: the calibration loader is empty")
    return {k: v / n for k, v in sums.items()}


def hessian_scores(model: nn.Module, groups: list[ChannelGroup], calib: Iterable, batches: int) -> dict[str, torch.Tensor]:
    """Optimal Brain Damage saliency (LeCun, Denker, Solla, NeurIPS 1990; group form as in Yu et al.,
    "Hessian-Aware Pruning and Optimal Neural Implant", WACV 2022):
    ``s_c = ½ Σ_{s ∈ group(c)} h_ss w_s²`` with the Hessian diagonal approximated by the empirical Fisher
    ``h_ss ≈ E_n[g_{n,s}²]`` averaged over every calibration sample (:func:`squared_gradients`).
    """
    names = {id(p): k for k, p in model.named_parameters()}
    wanted = {names[id(t)] for g in groups for _, _, t, _ in _group_params(g)}
    fisher = squared_gradients(model, calib, batches, names=wanted)
    out = {}
    for g in groups:
        s = torch.zeros(g.size, dtype=torch.float64)
        for m, _, t, axis in _group_params(g):
            h = fisher[names[id(t)]]
            s += m.reduce((0.5 * h * t.detach().pow(2)).double(), axis, g.size).cpu()
        out[g.name] = s.float()
    return out


def dct_matrix(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D[k, i] = α_k cos(π (2i + 1) k / 2n)``."""
    i = torch.arange(n, dtype=torch.float64)
    k = i[:, None]
    d = torch.cos(math.pi * (2 * i[None, :] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(device=device, dtype=dtype)


def low_frequency_energy(features: torch.Tensor, band: float) -> torch.Tensor:
    """Per-channel energy of the lowest ``band`` fraction of 2-D DCT frequencies in each axis, summed over the batch.

    ``features``: ``[B, C, H, W]`` maps (2-D DCT-II over H and W; frequencies ``u < ceil(band·H)``,
    ``v < ceil(band·W)``), or ``[B, ..., C]`` token/vector features, which have no spatial frequency:
    their energy is the plain sum of squares (the DC term).
    """
    if features.dim() == 4:
        _, _, h, w = features.shape
        coef = dct_matrix(h, features.device) @ features.float() @ dct_matrix(w, features.device).T
        low = coef[:, :, : max(1, math.ceil(band * h)), : max(1, math.ceil(band * w))]
        return low.pow(2).sum((0, 2, 3))
    return features.float().pow(2).reshape(-1, features.shape[-1]).sum(0)


@torch.no_grad()
def lfp_scores(model: nn.Module, groups: list[ChannelGroup], calib: Iterable, batches: int,
               band: float = 0.25) -> dict[str, torch.Tensor]:
    """Low-frequency preference (Zhang et al., Remote Sensing 2023): keep the filters whose feature maps hold
    the most low-frequency energy, ``s_c = E_x Σ_{u,v ∈ low} |DCT2(F_c(x))_{uv}|²``.

    ``F_c`` is the channel's map after its normalisation layer when the group has one (what the next layer
    sees), else the producer's output; coupled producers/norms of a residual group add up.
    """
    device = model_device(model)
    model.eval()
    totals = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups}
    hooks = []
    for g in groups:
        sources = g.weights(Role.NORM) or g.weights(Role.PRODUCER)
        sources = [m for m in sources if isinstance(m.module, nn.modules.batchnorm._BatchNorm)] or sources
        for m in sources:
            def hook(module, inputs, output, m=m, g=g):
                if output.dim() == 4 and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)):
                    energy = low_frequency_energy(output, band)
                else:  # token / vector features: channels last, no spatial frequency
                    energy = output.float().pow(2).reshape(-1, output.shape[-1]).sum(0)
                per_channel = torch.zeros(g.size + 1, dtype=torch.float64, device=energy.device)
                per_channel.scatter_add_(0, m.index(g.size, energy.numel(), energy.device), energy.double())
                totals[g.name] += per_channel[: g.size].cpu()
            hooks.append(m.module.register_forward_hook(hook))
    n = 0
    try:
        for x, _ in calib_batches(calib, batches, device):
            model(x)
            n += x.shape[0]
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError("lfp: the calibration loader is empty")
    return {k: (v / n).float() for k, v in totals.items()}
