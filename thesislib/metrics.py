"""Cost and quality metrics: MACs, parameters, measured latency, accuracy, PSNR and SSIM.

* :func:`count_macs` uses :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of
  matrix multiplications and convolutions (``2·MACs`` each, also inside attention) and nothing else;
  MACs = FLOPs / 2.  Element-wise operations, normalisation and pooling are not counted, which is the
  usual convention of pruning papers (and of torch-pruning's ``count_ops_and_params`` for these layers).
* :func:`measure_latency` reports the median of ``repeats`` timed forward passes after ``warmup`` untimed
  ones (:func:`time_calls`, the one timer of thesislib: on CPU with a fixed number of threads and
  ``time.perf_counter``, on CUDA synchronised and timed with ``torch.cuda.Event``).
* :func:`psnr` / :func:`ssim` follow the super-resolution literature: optional evaluation on the Y channel
  of YCbCr (ITU-R BT.601, as MATLAB's ``rgb2ycbcr``), ``crop`` border pixels removed (usually = scale).
  SSIM is Wang et al. 2004 with an 11×11 Gaussian window, σ = 1.5, K₁ = 0.01, K₂ = 0.03, computed over
  valid window positions and averaged.
"""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from thesislib.runtime import model_device, resolve_device


def _as_args(example_inputs) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


@torch.no_grad()
def count_macs(model: nn.Module, example_inputs) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (FLOPs of matmul/conv ÷ 2)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(*_as_args(example_inputs))
    model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)`` (``None``: unchanged), restored afterwards."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def time_calls(fn: Callable[[], Any], repeats: int = 30, warmup: int = 5, cuda: bool = False) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    On CPU each call is timed with ``time.perf_counter``; on CUDA (``cuda=True``) the device is
    synchronised before each call and the call is timed with CUDA events, so queued kernels of an
    earlier call are never billed to the next one.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def measure_latency(model: nn.Module, example_inputs, repeats: int = 30, warmup: int = 5,
                    threads: int | None = 1) -> float:
    """Median seconds of one forward pass (eval mode, no grad) over ``repeats`` after ``warmup`` passes
    (:func:`time_calls`).

    On CPU the thread count is fixed to ``threads`` for the measurement (``None`` keeps the current one);
    on CUDA each pass is timed with CUDA events after a synchronisation.
    """
    args = _as_args(example_inputs)
    was_training = model.training
    model.eval()
    cuda = model_device(model).type == "cuda"
    try:
        with fixed_threads(None if cuda else threads):
            times = time_calls(lambda: model(*args), repeats, warmup, cuda)
    finally:
        model.train(was_training)
    return statistics.median(times)


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` (eval mode, restored after) on ``(inputs, labels)`` batches."""
    device = resolve_device(model, device)
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y.cpu()).sum())
        total += y.numel()
    model.train(was_training)
    if total == 0:
        raise ValueError("accuracy got an empty loader")
    return correct / total


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """Luma Y of ITU-R BT.601 of RGB images in [0, 1] (``[..., 3, H, W]`` → ``[..., 1, H, W]``), as MATLAB's
    ``rgb2ycbcr``: ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255`` ∈ [16/255, 235/255]."""
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs RGB images [..., 3, H, W] (3 channels in dim -3), "
                         f"got shape {tuple(image.shape)}")
    r, g, b = image.unbind(-3)
    return ((65.481 * r + 128.553 * g + 24.966 * b + 16.0) / 255.0).unsqueeze(-3)


def _prepare(pred: torch.Tensor, target: torch.Tensor, crop: int, y_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() not in (3, 4):
        raise ValueError(f"expected [C, H, W] or [N, C, H, W] images, got shape {tuple(pred.shape)}")
    if crop < 0 or 2 * crop >= min(pred.shape[-2:]):
        raise ValueError(f"crop must be >= 0 and leave pixels, got {crop} for size {tuple(pred.shape[-2:])}")
    pred, target = pred.double(), target.double()
    if pred.dim() == 3:
        pred, target = pred[None], target[None]
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    if crop:
        pred, target = pred[..., crop:-crop, crop:-crop], target[..., crop:-crop, crop:-crop]
    return pred, target


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, crop: int = 0,
         y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio ``10 log10(R² / MSE)`` in dB over the whole (cropped) batch."""
    pred, target = _prepare(pred, target, crop, y_channel)
    mse = torch.mean((pred - target) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, crop: int = 0,
         y_channel: bool = False, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004), mean over valid windows,
    channels and images: ``(2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``,
    ``C1 = (0.01 R)²``, ``C2 = (0.03 R)²``, Gaussian window 11×11, σ = 1.5."""
    pred, target = _prepare(pred, target, crop, y_channel)
    if min(pred.shape[-2:]) < window:
        raise ValueError(f"images of size {tuple(pred.shape[-2:])} are smaller than the {window}x{window} window")
    c = pred.shape[1]
    w = _gaussian_window(window, sigma, c, pred.dtype, pred.device)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=c)

    mu_x, mu_y = filt(pred), filt(target)
    sxx = filt(pred * pred) - mu_x ** 2
    syy = filt(target * target) - mu_y ** 2
    sxy = filt(pred * target) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean().item()


@torch.no_grad()
def correct_predictions(model: nn.Module, loader: Iterable, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-image top-1 correctness (bool, CPU, loader order) of ``model`` in eval mode (restored after); its
    mean is :func:`accuracy`, its values feed :func:`bootstrap_interval`."""
    device = resolve_device(model, device)
    was_training = model.training
    model.eval()
    hits = [(model(x.to(device)).argmax(1).cpu() == y.cpu()) for x, y in loader]
    model.train(was_training)
    if not hits:
        raise ValueError("correct_predictions got an empty loader")
    return torch.cat(hits)


def bootstrap_interval(values: Any, resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, Ch. 13) of the mean of ``values`` (one number per
    test example: correctness, a per-image PSNR, or a paired difference of two methods), resampling the examples
    with replacement ``resamples`` times with a seeded generator."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"level must be in (0, 1) and resamples >= 1, got level={level}, resamples={resamples}")
    gen = torch.Generator().manual_seed(seed)
    means = torch.empty(resamples, dtype=torch.float64)
    chunk = max(1, 2_000_000 // v.numel())
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        means[start:start + n] = v[torch.randint(v.numel(), (n, v.numel()), generator=gen)].mean(1)
    alpha = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return float(low), float(high)
