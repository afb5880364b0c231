"""The super-resolution experiment: a tiny EDSR (×2) compressed without fine-tuning.

Protocol (as in the SR literature, e.g. Lim et al. 2017):

* **Model**: EDSR-baseline structure (Lim et al., CVPRW 2017) shrunk to ``n_feats`` features and
  ``n_blocks`` residual blocks, on **RGB** input (the LR image itself, not a bicubic-upsampled one);
  trained with the L1 loss and Adam on random aligned ``(LR, HR)`` patches
  (:class:`thesislib.data.sr.SRPatches`) of the built-in *train* photos, each patch seen once.
* **Evaluation**: the built-in *test* photos, center-cropped to at most ``eval_crop`` pixels, degraded
  with :func:`thesislib.data.sr.bicubic_lr`; the model's output is clamped to [0, 1] and rounded to
  8-bit levels (as the benchmarks save PNGs), then PSNR and SSIM (:mod:`thesislib.metrics`) are
  taken on the BT.601 luminance Y with ``scale`` border pixels removed, and averaged over the images.
* **Baseline**: bicubic upsampling of the same LR images (``F.interpolate(mode="bicubic")``).
* **Compression** of the trained model to kept ratios, no fine-tuning: ``continuous``
  (:func:`thesislib.continuous.to_continuous` → ``resample(ratio, antialias=True)`` → ``export``),
  ``continuous_naive`` (the same with ``antialias=False``: the control-point interpolant sampled
  directly), and the ``l1``, ``random`` and ``fold`` baselines of :func:`thesislib.pruning.prune`.
  The pixel-shuffle convolution's output channels are not pruned by any method (its channel order
  is fixed by the shuffle), nor is the output convolution's.

MACs (:func:`thesislib.metrics.count_macs`) are counted for one ``macs_lr_size``² LR input.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from thesislib.data.sr import SR_PHOTOS_TEST, SRImages, SRPatches, sr_photo, sr_photos
from thesislib.metrics import count_macs, psnr, ssim
from thesislib.models import edsr

SR_METHODS: tuple[str, ...] = ("continuous", "continuous_naive", "l1", "random", "fold")

SR_SETTINGS: dict[str, dict[str, Any]] = {
    # < 30 s on 2 cores: a few dozen steps, two small test crops
    "smoke": dict(upscale=2, n_feats=16, n_blocks=2, steps=40, batch_size=8, patch_size=32, lr=2e-3,
                  eval_crop=96, n_test=2, ratios=(1.0, 0.75, 0.5), macs_lr_size=128),
    # ≤ 5 min on 2 cores (training is ~0.05 s/step on 2 idle cores, 4-8× that when the machine is shared;
    # 1500 steps took 6.4 min on the shared machine: 32.47 dB vs bicubic 30.83 dB)
    "cpu": dict(upscale=2, n_feats=32, n_blocks=4, steps=1000, batch_size=16, patch_size=32, lr=2e-3,
                eval_crop=256, n_test=5, ratios=(1.0, 0.75, 0.5, 0.25), macs_lr_size=128),
    # one GPU (not run here): wider, longer, whole test photos
    "gpu": dict(upscale=2, n_feats=64, n_blocks=8, steps=20000, batch_size=16, patch_size=96, lr=5e-4,
                eval_crop=None, n_test=5, ratios=(1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25), macs_lr_size=128),
}


def sr_settings(scale: str) -> dict[str, Any]:
    """The settings of ``scale`` (a copy); ``ValueError`` naming the valid scales."""
    if scale not in SR_SETTINGS:
        raise ValueError(f"unknown scale {scale!r}: choose one of {', '.join(SR_SETTINGS)}")
    return dict(SR_SETTINGS[scale])


def ratio_key(ratio: float) -> str:
    """Key of a kept ratio in the results: ``0.5 -> "0.5"``."""
    return f"{float(ratio):g}"


# ---------------------------------------------------------------------------------------------- data
def center_crop(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``min(size, H) × min(size, W)`` window of ``[..., H, W]`` (``None``: unchanged)."""
    if size is None:
        return image
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"crop size must be a positive int or None, got {size!r}")
    h, w = image.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top:top + ch, left:left + cw]


def eval_pairs(upscale: int, eval_crop: int | None, n_test: int | None = None) -> SRImages:
    """Pairs ``(LR, HR)`` of the first ``n_test`` built-in test photos, center-cropped to ``eval_crop``."""
    n = len(SR_PHOTOS_TEST) if n_test is None else n_test
    if not 1 <= n <= len(SR_PHOTOS_TEST):
        raise ValueError(f"n_test must be in 1..{len(SR_PHOTOS_TEST)}, got {n_test!r}")
    names = list(SR_PHOTOS_TEST[:n])
    return SRImages([center_crop(sr_photo(name), eval_crop) for name in names], upscale, names=names)


def train_patches(upscale: int, patch_size: int, steps: int, batch_size: int, seed: int = 0) -> SRPatches:
    """Enough patches of the built-in train photos for ``steps`` batches, each patch used once."""
    photos = sr_photos("train")
    per_image = math.ceil(steps * batch_size / len(photos))
    return SRPatches(photos, upscale, patch_size, per_image, seed=seed)


# ------------------------------------------------------------------------------------------ training
def build_model(settings: Mapping[str, Any], seed: int = 0) -> nn.Module:
    """The tiny EDSR of ``settings`` (RGB, ×``upscale``), initialised from ``seed``."""
    torch.manual_seed(seed)
    return edsr(scale=settings["upscale"], n_feats=settings["n_feats"], n_blocks=settings["n_blocks"], channels=3)


def train_sr(model: nn.Module, patches: torch.utils.data.Dataset, steps: int, batch_size: int,
             lr: float = 1e-3, seed: int = 0, device: torch.device | str | None = None) -> list[float]:
    """Train ``model`` with the L1 loss (Lim et al. 2017) and Adam for ``steps`` batches of ``patches``.

    Batches are drawn without replacement from a permutation seeded with ``seed`` (a new one each pass
    over the data). Returns the loss of every step; the model is left in eval mode.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if len(patches) < batch_size:
        raise ValueError(f"{len(patches)} patches cannot fill a batch of {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    order, position, losses = torch.randperm(len(patches), generator=generator), 0, []
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(patches), generator=generator), 0
        items = [patches[int(i)] for i in order[position:position + batch_size]]
        position += batch_size
        lr_batch = torch.stack([a for a, _ in items]).to(device)
        hr_batch = torch.stack([b for _, b in items]).to(device)
        loss = F.l1_loss(model(lr_batch), hr_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------- evaluation
def quantize(image: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to multiples of 1/255 (an 8-bit image)."""
    return image.clamp(0, 1).mul(255).round().div(255)


def bicubic_upscale(lr: torch.Tensor, upscale: int) -> torch.Tensor:
    """Bicubic interpolation of ``[C, H, W]`` or ``[B, C, H, W]`` to ``upscale`` times the size."""
    batch = lr if lr.dim() == 4 else lr[None]
    out = F.interpolate(batch, scale_factor=upscale, mode="bicubic", align_corners=False)
    return out if lr.dim() == 4 else out[0]


class Bicubic(nn.Module):
    """Bicubic upsampling as a model (the baseline every SR paper reports)."""

    def __init__(self, upscale: int) -> None:
        super().__init__()
        self.upscale = upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_upscale(x, self.upscale)


@torch.no_grad()
def super_resolve(model: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """The model's 8-bit output for one ``[C, H, W]`` LR image (eval mode, on the model's device), on CPU."""
    device = next(iter(list(model.parameters()) + list(model.buffers())), torch.empty(0)).device
    was_training = model.training
    model.eval()
    out = quantize(model(lr[None].to(device))[0]).cpu()
    model.train(was_training)
    return out


def evaluate_sr(model: nn.Module, images: Sequence[tuple[torch.Tensor, torch.Tensor]], upscale: int
                ) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over ``images`` of ``(LR, HR)`` pairs: Y channel, border ``upscale`` cropped."""
    if len(images) == 0:
        raise ValueError("evaluate_sr needs at least one (LR, HR) pair")
    p, s = [], []
    for lr, hr in images:
        sr = super_resolve(model, lr)
        if sr.shape != hr.shape:
            raise ValueError(f"model output {tuple(sr.shape)} does not match HR {tuple(hr.shape)}: wrong upscale?")
        p.append(psnr(sr, hr, crop=upscale, y_channel=True))
        s.append(ssim(sr, hr, crop=upscale, y_channel=True))
    return {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s)}


# ---------------------------------------------------------------------------------------- compression
def compress(model: nn.Module, method: str, ratio: float, example_inputs: torch.Tensor, seed: int = 0) -> nn.Module:
    """A smaller copy of ``model`` keeping ``ratio`` of every prunable group's channels, no fine-tuning.

    ``continuous``/``continuous_naive``: ``to_continuous`` → ``resample(ratio, antialias=True/False)`` →
    ``export``; other methods: :func:`thesislib.pruning.prune` (uniform allocation).
    """
    from thesislib.pruning import METHODS, prune

    if method in ("continuous", "continuous_naive"):
        from thesislib.continuous import to_continuous

        cnet = to_continuous(model, example_inputs, seed=seed)
        cnet.resample(ratio, antialias=method == "continuous")
        return cnet.export().eval()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: continuous_naive, {', '.join(METHODS)}")
    return prune(model, method, ratio, example_inputs, seed=seed)


def sweep(model: nn.Module, images: Sequence[tuple[torch.Tensor, torch.Tensor]], upscale: int,
          methods: Sequence[str] = SR_METHODS, ratios: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
          macs_lr_size: int = 128, seed: int = 0,
          keep: Callable[[str, float], bool] | None = None) -> dict[str, Any]:
    """PSNR, SSIM and MACs of every ``method × ratio`` compression of ``model`` on ``images``.

    Returns ``{"psnr": {method: {"0.5": dB}}, "ssim": {...}, "macs": {...}, "models": {(method, ratio): net}}``
    where ``models`` holds the compressed networks for which ``keep(method, ratio)`` is true.
    """
    if not methods or not ratios:
        raise ValueError("sweep needs at least one method and one ratio")
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, macs_lr_size, macs_lr_size, device=device)
    trace = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).to(device)
    out: dict[str, Any] = {"psnr": {}, "ssim": {}, "macs": {}, "models": {}}
    for method in methods:
        for key in ("psnr", "ssim", "macs"):
            out[key][method] = {}
        for ratio in ratios:
            small = compress(model, method, ratio, trace, seed=seed)
            metrics = evaluate_sr(small, images, upscale)
            k = ratio_key(ratio)
            out["psnr"][method][k] = metrics["psnr"]
            out["ssim"][method][k] = metrics["ssim"]
            out["macs"][method][k] = count_macs(small, example)
            if keep is not None and keep(method, ratio):
                out["models"][(method, ratio)] = small
    return out


def summary_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table rows ``method, ratio, psnr, ssim, macs`` of a :func:`sweep` result."""
    return [{"method": m, "ratio": float(k), "psnr": result["psnr"][m][k], "ssim": result["ssim"][m][k],
             "macs": result["macs"][m][k]}
            for m in result["psnr"] for k in result["psnr"][m]]


# ------------------------------------------------------------------------------------------- figures
def plot_psnr_vs_ratio(result: Mapping[str, Any], bicubic_psnr: float, ax: Any | None = None) -> Any:
    """PSNR vs kept ratio per method, with the bicubic baseline as a dashed line."""
    import matplotlib.pyplot as plt

    from thesislib.plotting import plot_curves

    ax = ax if ax is not None else plt.gca()
    x = {m: [float(k) for k in v] for m, v in result["psnr"].items()}
    y = {m: list(v.values()) for m, v in result["psnr"].items()}
    plot_curves(x, y, ax=ax, xlabel="доля сохранённых каналов", ylabel="PSNR (Y), дБ")
    ax.axhline(bicubic_psnr, color="gray", linestyle="--", label="бикубическая")
    ax.legend()
    return ax


def plot_crops(hr: torch.Tensor, panels: Mapping[str, torch.Tensor], box: tuple[int, int, int], upscale: int) -> Any:
    """Side-by-side ``box = (top, left, size)`` crops of the HR image and of each ``{title: SR image}``
    panel, with its PSNR on Y (border ``upscale`` removed, over the whole image) in the title."""
    import matplotlib.pyplot as plt

    top, left, size = box
    titles = ["HR"] + list(panels)
    images = [hr] + list(panels.values())
    fig, axes = plt.subplots(1, len(images), figsize=(2.4 * len(images), 2.7))
    for ax, title, image in zip(axes, titles, images):
        crop = image[:, top:top + size, left:left + size].permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(crop, interpolation="nearest")
        label = title if image is hr else f"{title}\n{psnr(image, hr, crop=upscale, y_channel=True):.2f} дБ"
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig
