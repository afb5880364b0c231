"""BatchNorm under continuous resampling: fusion, the width law of eq. ``eq-bn-var`` and a data-free correction.

* :func:`fuse_batchnorm` -- every ``Conv → BatchNorm`` pair (the convolution's output used by the norm only)
  folded into the convolution, ``W'_c = γ_c W_c / sqrt(σ²_c + ε)`` (eval-mode BatchNorm is affine), the norm
  replaced by ``nn.Identity``: the reference INN implementation's way (``book/part1/batchnorm.md``);
* :func:`fit_inverse_width` -- least-squares fit of ``V(m) = A + B/m`` (eq. ``eq-bn-var``) with its R²;
* :func:`preactivation_variance` -- the measured variance of a group's consumer outputs (the next layer's
  pre-activations, per channel over batch and positions, averaged over channels) at given widths of that group;
* :func:`analytic_correction` -- running variances re-estimated without data from eq. ``eq-bn-var``: the
  independent part ``B/m`` of every normalised convolution output is computed from the exported weights and
  the Gaussian moments implied by the preceding BatchNorm's ``γ``, ``β`` (rectified through ReLU, summed
  over residual additions as independent; the data-free moment model of Nagel et al. 2019, DFQ), and the
  stored variance ``A + B/n`` of the full width is moved to ``A + B/m``: ``σ²_m = σ²_n + B_m (1 − m/n)``.
  Every channel's whole variance is treated as independent, so ``B`` is over- rather than under-estimated.
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from thesislib.graph import Role
from thesislib.runtime import batch_inputs, model_device

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

__all__ = ["conv_bn_pairs", "fuse_batchnorm", "fit_inverse_width", "preactivation_variance",
           "analytic_correction", "consumer_modules"]


def _trace(net: nn.Module) -> torch.fx.Graph:
    try:
        return torch.fx.symbolic_trace(net).graph
    except Exception as err:  # noqa: BLE001 -- any tracing failure: say what is needed
        raise ValueError(f"{type(net).__name__} cannot be traced by torch.fx ({type(err).__name__}: {err}); "
                         "BatchNorm fusion and the analytic correction need an fx-traceable model") from err


def conv_bn_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` for every BatchNorm whose input is a convolution used by that norm only."""
    graph = _trace(net)
    modules = dict(net.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), _CONV)
                and len(src.users) == 1):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _set(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, attr, module)


@torch.no_grad()
def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) with every :func:`conv_bn_pairs` pair fused into the convolution and the
    BatchNorm replaced by ``nn.Identity`` (same outputs in eval mode); ``ValueError`` when there is none."""
    pairs = conv_bn_pairs(net)
    if not pairs:
        raise ValueError(f"{type(net).__name__} has no Conv → BatchNorm pair to fuse")
    out = copy.deepcopy(net).eval()
    for conv_name, bn_name in pairs:
        bn = out.get_submodule(bn_name)
        if not bn.track_running_stats or bn.running_var is None:
            raise ValueError(f"BatchNorm {bn_name!r} keeps no running statistics; it cannot be fused")
        _set(out, conv_name, fuse_conv_bn_eval(out.get_submodule(conv_name), bn))
        _set(out, bn_name, nn.Identity())
    return out


def fit_inverse_width(widths: Sequence[float], variances: Sequence[float]) -> dict[str, float]:
    """Least squares ``V(m) = A + B/m`` (eq. ``eq-bn-var``) over the points ``(m, V)``: ``{"A", "B", "r2"}``
    (R² of the fit; 1.0 for points on the curve). At least three distinct widths, all positive."""
    m = np.asarray(widths, dtype=float)
    v = np.asarray(variances, dtype=float)
    if m.shape != v.shape or m.ndim != 1:
        raise ValueError(f"widths and variances must be 1-D of one length, got {m.shape} and {v.shape}")
    if len(np.unique(m)) < 3:
        raise ValueError(f"the A + B/m fit needs at least 3 distinct widths, got {sorted(set(m.tolist()))}")
    if (m <= 0).any() or not np.isfinite(v).all():
        raise ValueError("widths must be positive and variances finite")
    design = np.stack([np.ones_like(m), 1.0 / m], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, v, rcond=None)
    residual = float(((v - design @ np.array([a, b])) ** 2).sum())
    total = float(((v - v.mean()) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return {"A": float(a), "B": float(b), "r2": r2}


def consumer_modules(cnet: Any, group: str) -> list[str]:
    """Names of the layers that sum over ``group``'s channels (its consumers)."""
    g = next((g for g in cnet.groups if g.name == group), None)
    if g is None:
        raise ValueError(f"unknown group {group!r}; groups: {', '.join(x.name for x in cnet.groups)}")
    return sorted({m.module_name for m in g.by_role(Role.CONSUMER) if not m.view})


@torch.no_grad()
def preactivation_variance(cnet: Any, group: str, widths: Sequence[int], loader: Iterable, batches: int,
                           antialias: bool = False, consumer: str | None = None) -> list[float]:
    """For each width ``m`` in ``widths``: ``group`` resampled to ``m`` (every other group at its current width,
    stored statistics), the variance of each output channel of ``consumer`` (default: the group's first
    consumer) over the first ``batches`` batches (all images and positions, float64), averaged over channels.
    The network's widths and mode are restored."""
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    consumers = consumer_modules(cnet, group)
    if not consumers:
        raise ValueError(f"group {group!r} has no consumer layer")
    name = consumer if consumer is not None else consumers[0]
    if name not in consumers:
        raise ValueError(f"{name!r} is not a consumer of {group!r}; its consumers: {', '.join(consumers)}")
    module = cnet.net.get_submodule(name)
    device = model_device(cnet)
    out: list[float] = []
    stats: dict[str, Any] = {}

    def hook(_mod: nn.Module, _args: Any, y: torch.Tensor) -> None:
        y = y.detach().to(torch.float64).transpose(0, 1).reshape(y.shape[1], -1)
        stats["n"] += y.shape[1]
        stats["s"] += y.sum(1)
        stats["s2"] += (y * y).sum(1)

    handle = module.register_forward_hook(hook)
    try:
        with cnet.preserved():
            cnet.eval()
            for m in widths:
                cnet.resample({**cnet.widths, group: int(m)}, antialias=antialias)
                stats.update(n=0, s=0.0, s2=0.0)
                seen = 0
                for batch in loader:
                    if seen >= batches:
                        break
                    cnet(batch_inputs(batch).to(device))
                    seen += 1
                if seen == 0:
                    raise ValueError("preactivation_variance got an empty loader")
                mean = stats["s"] / stats["n"]
                var = stats["s2"] / stats["n"] - mean * mean
                out.append(float(var.mean()))
    finally:
        handle.remove()
    return out


# ------------------------------------------------------------------------------ the data-free correction
def _rectified(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``max(0, X)`` for ``X ~ N(mean, var)`` (per channel)."""
    s = var.clamp_min(1e-12).sqrt()
    a = mean / s
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))
    m1 = mean * cdf + s * pdf
    m2 = (mean * mean + var) * cdf + mean * s * pdf
    return m1, (m2 - m1 * m1).clamp_min(0.0)


_PASS = (nn.Identity, nn.Dropout)
_RELU = (nn.ReLU,)


def _input_moments(net: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{conv name: (mean, var) per input channel}`` where the moments follow from BatchNorm parameters alone:
    a BatchNorm output is ``N(β, γ²)``, ReLU rectifies it, a residual addition sums independent moments,
    identities pass them on; anything else (the input image, pooling...) leaves them unknown."""
    graph = _trace(net)
    modules = dict(net.named_modules())
    moments: dict[torch.fx.Node, tuple[torch.Tensor, torch.Tensor]] = {}
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for node in graph.nodes:
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        first = moments.get(args[0]) if args else None
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, _CONV) and first is not None:
                out[str(node.target)] = first
            if isinstance(mod, _BN) and mod.affine:
                moments[node] = (mod.bias.detach().double(), mod.weight.detach().double() ** 2)
            elif isinstance(mod, _RELU) and first is not None:
                moments[node] = _rectified(*first)
            elif isinstance(mod, _PASS) and first is not None:
                moments[node] = first
        elif node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
            if len(args) == 2 and all(a in moments for a in args):
                (m1, v1), (m2, v2) = moments[args[0]], moments[args[1]]
                if m1.shape == m2.shape:
                    moments[node] = (m1 + m2, v1 + v2)
        elif node.op == "call_function" and node.target is torch.relu and first is not None:
            moments[node] = _rectified(*first)
        elif node.op == "call_function" and node.target is torch.nn.functional.relu and first is not None:
            moments[node] = _rectified(*first)
    return out


@torch.no_grad()
def analytic_correction(small: nn.Module, full_in_channels: Mapping[str, int]) -> dict[str, float]:
    """Re-estimate, in place and without data, the running variance of every BatchNorm that normalises a
    convolution whose input channels were resampled from ``n = full_in_channels[conv]`` to ``m`` (eq.
    ``eq-bn-var``): ``σ²_m = σ²_n + B_m (1 − m/n)`` with ``B_m = Σ_{j, taps} W_{cj}² Var h_j`` from
    :func:`_input_moments`; running means stay (the integral term does not depend on ``m``). Returns
    ``{bn name: mean relative change of its running variance}`` for the norms it changed."""
    moments = _input_moments(small)
    changed: dict[str, float] = {}
    for conv_name, bn_name in conv_bn_pairs(small):
        conv, bn = small.get_submodule(conv_name), small.get_submodule(bn_name)
        n, m = full_in_channels.get(conv_name), conv.in_channels
        if n is None or m >= n or conv_name not in moments or conv.groups != 1:
            continue
        _mean, var = moments[conv_name]
        w2 = conv.weight.detach().double() ** 2
        b_m = (w2 * var.view(1, -1, *([1] * (w2.dim() - 2)))).flatten(1).sum(1)
        new = bn.running_var.double() + b_m * (1.0 - m / n)
        changed[bn_name] = float((new / bn.running_var.double().clamp_min(1e-12) - 1).mean())
        bn.running_var.copy_(new.to(bn.running_var.dtype))
    return changed
