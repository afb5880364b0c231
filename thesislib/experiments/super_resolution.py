"""``notebooks/super_resolution.ipynb``: a tiny EDSR (×2) compressed without fine-tuning.

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
* **INN-trained EDSR** (Solodskikh et al. CVPR 2023, Sec. 4.2 and their EDSR case): the same EDSR from
  the same initialisation, converted to a :class:`~thesislib.continuous.ContinuousNet` before training
  (no channel permutation: there is no trained order yet) and trained with random widths of its body
  groups (:meth:`ContinuousNet.train_widths`: every forward draws, per group, a width uniform in
  ``[inn_low · n, n]``), with the same loss, optimiser, learning rate, batches and number of steps as
  the discrete EDSR (:func:`train_sr`); then resampled to each kept ratio and exported — ``inn``
  sampling the control points directly (as in training), ``inn_aa`` anti-aliased. The discrete EDSR
  resampled (``continuous``, ``continuous_naive``) and pruned (``l1``, ``random``, ``fold``) at the same
  widths is the comparison; ``inn_gain`` is the INN's PSNR minus the best of those at each ratio.

MACs (:func:`thesislib.metrics.count_macs`) are counted for one ``macs_lr_size``² LR input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dataclasses_field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from thesislib.config import seed_everything, settings_for
from thesislib.data.sr import SR_PHOTOS_TEST, SRImages, SRPatches, sr_photo, sr_photos
from thesislib.metrics import count_macs, count_params, psnr, ssim
from thesislib.models import edsr
from thesislib.runtime import model_device

from .common import ResultMixin, best_method, by_method, sweep, unsaved

NAME = "super_resolution"

METHODS: tuple[str, ...] = ("continuous", "continuous_naive", "l1", "random", "fold")
SR_METHODS = METHODS
#: the INN-trained EDSR at evaluation: naive sampling (as trained) and anti-aliased resampling
INN_METHODS: tuple[str, ...] = ("inn", "inn_aa")


@dataclass(frozen=True)
class Settings:
    """The SR experiment at one scale: model size, training, evaluation crops, kept ratios."""

    scale: str
    upscale: int
    n_feats: int
    n_blocks: int
    steps: int
    batch_size: int
    patch_size: int
    lr: float
    eval_crop: int | None
    n_test: int
    ratios: tuple[float, ...]
    macs_lr_size: int
    inn_low: float | None = 0.25  # smallest kept ratio of the INN training widths (None: no INN-trained EDSR)


SETTINGS: dict[str, Settings] = {
    # seconds on 2 cores: a few dozen steps, two small test crops
    "smoke": Settings("smoke", upscale=2, n_feats=16, n_blocks=2, steps=40, batch_size=8, patch_size=32, lr=2e-3,
                      eval_crop=96, n_test=2, ratios=(1.0, 0.75, 0.5), macs_lr_size=128),
    # minutes on 2 cores
    "cpu": Settings("cpu", upscale=2, n_feats=32, n_blocks=4, steps=1000, batch_size=16, patch_size=32, lr=2e-3,
                    eval_crop=256, n_test=5, ratios=(1.0, 0.75, 0.5, 0.25), macs_lr_size=128),
    # one GPU: wider, longer, whole test photos
    "gpu": Settings("gpu", upscale=2, n_feats=64, n_blocks=8, steps=20000, batch_size=16, patch_size=96, lr=5e-4,
                    eval_crop=None, n_test=5, ratios=(1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25), macs_lr_size=128),
}


def settings(scale: str) -> Settings:
    """The settings of ``scale`` (``ValueError`` naming the scales for an unknown one)."""
    return settings_for(SETTINGS, scale)


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
def build_model(s: Settings, seed: int = 0) -> nn.Module:
    """The tiny EDSR of ``s`` (RGB, ×``upscale``), initialised from ``seed``."""
    torch.manual_seed(seed)
    return edsr(scale=s.upscale, n_feats=s.n_feats, n_blocks=s.n_blocks, channels=3)


def permuted_batches(patches: torch.utils.data.Dataset, batch_size: int, seed: int = 0
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(LR, HR)`` batches drawn without replacement from a permutation seeded with ``seed``
    (a new permutation each pass; the last incomplete batch of a pass is skipped)."""
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(patches), generator=generator), 0
    while True:
        if position + batch_size > len(order):
            order, position = torch.randperm(len(patches), generator=generator), 0
        items = [patches[int(i)] for i in order[position:position + batch_size]]
        position += batch_size
        yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def train_sr(model: nn.Module, patches: torch.utils.data.Dataset, steps: int, batch_size: int,
             lr: float = 1e-3, seed: int = 0, device: torch.device | str | None = None) -> list[float]:
    """Train ``model`` with the L1 loss (Lim et al. 2017) and Adam for ``steps`` batches of ``patches``
    (:func:`permuted_batches`, one :func:`thesislib.training.train` run). Returns the loss of every step;
    the model is left in eval mode."""
    from thesislib.training import train

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if len(patches) < batch_size:
        raise ValueError(f"{len(patches)} patches cannot fill a batch of {batch_size}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = train(model, permuted_batches(patches, batch_size, seed), steps, F.l1_loss, optimizer, device=device)
    model.eval()
    return state.losses


def train_inn_sr(s: Settings, patches: torch.utils.data.Dataset, seed: int = 0,
                 device: torch.device | str | None = None) -> tuple[Any, list[float]]:
    """The INN-trained EDSR of ``s``: :func:`build_model` (same initialisation as the discrete EDSR) →
    :func:`thesislib.continuous.to_continuous` (no permutation) → :func:`train_sr` with random widths
    uniform in ``[inn_low, 1]`` of every group (:meth:`ContinuousNet.train_widths`). Returns the
    continuous net in eval mode at full width and every step's loss."""
    from thesislib.continuous import to_continuous

    if s.inn_low is None or not 0 < s.inn_low <= 1:
        raise ValueError(f"inn_low must be a kept ratio in (0, 1] for INN training, got {s.inn_low!r}")
    model = build_model(s, seed=seed)
    trace = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    cnet = to_continuous(model, trace, permute=False, seed=seed)
    if device is not None:
        cnet = cnet.to(device)
    cnet.train_widths((s.inn_low, 1.0))
    losses = train_sr(cnet, patches, s.steps, s.batch_size, s.lr, seed=seed, device=device)
    cnet.train_widths(None)
    cnet.resample(1.0, antialias=False)
    return cnet.eval(), losses


def inn_compress(cnet: Any, method: str, ratio: float) -> nn.Module:
    """The INN-trained net at ``ratio`` of every group, exported: ``inn`` naive, ``inn_aa`` anti-aliased."""
    if method not in INN_METHODS:
        raise ValueError(f"unknown INN evaluation {method!r}; valid: {', '.join(INN_METHODS)}")
    with cnet.preserved():
        cnet.resample(ratio, antialias=method == "inn_aa")
        return cnet.export().eval()


def inn_gain(psnr_grid: Mapping[str, Mapping[str, float]], method: str = "inn",
             against: Sequence[str] = METHODS) -> dict[str, float]:
    """``{ratio_key: PSNR(method) − max over against}`` at every ratio both have (dB; > 0: INN better)."""
    out = {}
    for key, value in psnr_grid.get(method, {}).items():
        rivals = [psnr_grid[m][key] for m in against if m in psnr_grid and key in psnr_grid[m]]
        if rivals:
            out[key] = value - max(rivals)
    return out


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
    device = model_device(model)
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


def compress_all(model: nn.Module, images: Sequence[tuple[torch.Tensor, torch.Tensor]], upscale: int,
                 methods: Sequence[str] = METHODS, ratios: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                 macs_lr_size: int = 128, seed: int = 0,
                 keep: Callable[[str, float], bool] | None = None) -> dict[str, Any]:
    """PSNR, SSIM and MACs of every ``method × ratio`` compression of ``model`` on ``images``
    (:func:`.common.sweep`).

    Returns ``{"psnr": {method: {ratio_key: dB}}, "ssim": {...}, "macs": {...}, "records": [...],
    "models": {(method, ratio): net}}`` where ``models`` holds the networks for which ``keep(method, ratio)``.
    """
    device = model_device(model)
    example = torch.zeros(1, 3, macs_lr_size, macs_lr_size, device=device)
    trace = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).to(device)

    def measure(small: nn.Module) -> dict[str, Any]:
        return {**evaluate_sr(small, images, upscale), "macs": count_macs(small, example)}

    records, models = sweep(methods, ratios, lambda m, r, _: compress(model, m, r, trace, seed=seed), measure,
                            keep=keep)
    return {"psnr": by_method(records, "psnr"), "ssim": by_method(records, "ssim"),
            "macs": by_method(records, "macs"), "records": records, "models": models}


def summary_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table rows ``method, ratio, psnr, ssim, macs`` of a :func:`compress_all` result."""
    return [{"method": r["method"], "ratio": float(r["ratio"]), "psnr": r["psnr"], "ssim": r["ssim"],
             "macs": r["macs"]} for r in result["records"]]


# ------------------------------------------------------------------------------------------ experiment
@dataclass
class Result(ResultMixin):
    """Every number ``book/`` quotes from this notebook: grids ``{method: {ratio_key: value}}`` of PSNR (dB,
    Y), SSIM and MACs; the bicubic baseline and the full-width model; ``best_at_half``: the method with the
    highest PSNR at ratio 0.5."""

    psnr: dict[str, dict[str, float]]
    ssim: dict[str, dict[str, float]]
    macs: dict[str, dict[str, int]]
    bicubic_psnr: float
    bicubic_ssim: float
    full_psnr: float
    full_ssim: float
    full_macs: int
    params: int
    train_loss_first: float
    train_loss_last: float
    test_images: list[str]
    best_at_half: str | None
    upscale: int
    inn_low: float | None = None
    inn_train_loss_last: float | None = None
    inn_gain: dict[str, float] = dataclasses_field(default_factory=dict)  # PSNR(inn) − best discrete, dB
    inn_aa_gain: dict[str, float] = dataclasses_field(default_factory=dict)
    inn_beats_discrete: dict[str, bool] = dataclasses_field(default_factory=dict)  # per ratio key, either mode
    best_discrete_at_half: str | None = None
    rows: list[dict[str, Any]] = unsaved(default_factory=list)
    losses: list[float] = unsaved(default_factory=list)
    crops: dict[str, torch.Tensor] = unsaved(default_factory=dict)
    hr: torch.Tensor | None = unsaved(default=None)


def headline_best(psnr_grid: Mapping[str, Mapping[str, float]], ratio: float = 0.5) -> str | None:
    """The method with the highest PSNR at ``ratio`` (``None`` when the sweep has no such ratio)."""
    try:
        return best_method(psnr_grid, ratio)
    except ValueError:
        return None


def run(settings: Settings, seed: int = 0, device: torch.device | str | None = None) -> Result:
    """Train the scale's EDSR, evaluate it and bicubic, compress it with every method at every ratio."""
    from thesislib.config import default_device

    s = settings
    seed_everything(seed)
    device = torch.device(device) if device is not None else default_device()
    up = s.upscale
    pairs = eval_pairs(up, s.eval_crop, s.n_test)
    patches = train_patches(up, s.patch_size, s.steps, s.batch_size, seed=seed)
    model = build_model(s, seed=seed).to(device)
    losses = train_sr(model, patches, s.steps, s.batch_size, s.lr, seed=seed, device=device)
    bicubic = evaluate_sr(Bicubic(up), pairs, up)
    full = evaluate_sr(model, pairs, up)
    swept = compress_all(model, pairs, up, METHODS, s.ratios, s.macs_lr_size, seed=seed,
                         keep=lambda m, r: r == 0.5 and m in ("continuous", "l1"))
    best_discrete = headline_best(swept["psnr"])
    inn_losses: list[float] = []
    inn_models: dict[tuple[str, float], nn.Module] = {}
    if s.inn_low is not None:
        cnet, inn_losses = train_inn_sr(s, patches, seed=seed, device=device)
        example = torch.zeros(1, 3, s.macs_lr_size, s.macs_lr_size, device=model_device(cnet))
        records, inn_models = sweep(
            INN_METHODS, s.ratios, lambda m, r, _: inn_compress(cnet, m, r),
            lambda small: {**evaluate_sr(small, pairs, up), "macs": count_macs(small, example)},
            keep=lambda m, r: r == 0.5 and m == "inn")
        swept["records"] = swept["records"] + records
        for key in ("psnr", "ssim", "macs"):
            swept[key] = {**swept[key], **by_method(records, key)}
    lr0, hr0 = pairs[0]
    crops = {"бикубическая": bicubic_upscale(lr0, up).clamp(0, 1), "EDSR 1,0": super_resolve(model, lr0)}
    for method in ("continuous", "l1"):
        if (method, 0.5) in swept["models"]:
            crops[f"{method} 0,5"] = super_resolve(swept["models"][(method, 0.5)], lr0)
    if ("inn", 0.5) in inn_models:
        crops["INN 0,5"] = super_resolve(inn_models[("inn", 0.5)], lr0)
    gain, gain_aa = inn_gain(swept["psnr"], "inn"), inn_gain(swept["psnr"], "inn_aa")
    return Result(psnr=swept["psnr"], ssim=swept["ssim"], macs=swept["macs"], bicubic_psnr=bicubic["psnr"],
                  bicubic_ssim=bicubic["ssim"], full_psnr=full["psnr"], full_ssim=full["ssim"],
                  full_macs=count_macs(model, lr0.new_zeros(1, 3, s.macs_lr_size, s.macs_lr_size).to(device)),
                  params=count_params(model), train_loss_first=losses[0], train_loss_last=losses[-1],
                  test_images=list(pairs.names), best_at_half=headline_best(swept["psnr"]), upscale=up,
                  inn_low=s.inn_low, inn_train_loss_last=inn_losses[-1] if inn_losses else None,
                  inn_gain=gain, inn_aa_gain=gain_aa,
                  inn_beats_discrete={k: bool(gain[k] > 0 or gain_aa.get(k, -1.0) > 0) for k in gain},
                  best_discrete_at_half=best_discrete,
                  rows=summary_rows(swept), losses=losses, crops=crops, hr=hr0)


def goal_lines(result: Result) -> list[str]:
    """Per ratio: does the INN-trained EDSR beat the discrete EDSR resampled or pruned (best of those) in
    PSNR? Printed as met / not met by the notebook (no goal threshold is tuned)."""
    lines = []
    for key, g in result.inn_gain.items():
        state = "met" if result.inn_beats_discrete.get(key) else "not met"
        aa = result.inn_aa_gain.get(key)
        lines.append(f"INN-trained EDSR above the best discrete compression at {key}: {state} "
                     f"(inn {g:+.2f} dB" + (f", inn_aa {aa:+.2f} dB)" if aa is not None else ")"))
    return lines


# ------------------------------------------------------------------------------------------- figures
def plot_psnr_vs_ratio(result: Result, title: str | None = None) -> Figure:
    """PSNR (Y) against the kept ratio per method, with the bicubic baseline as a dashed line."""
    from thesislib.plotting import figure, finish, method_label, plot_methods

    fig, ax = figure(1, width=6.0, height=4.0)
    x = {m: [float(k[1:].replace("_", ".")) for k in v] for m, v in result.psnr.items()}
    y = {m: list(v.values()) for m, v in result.psnr.items()}
    plot_methods(ax, x, y)
    ax.axhline(result.bicubic_psnr, color="gray", linestyle="--", label=method_label("bicubic"))
    finish(ax, "ratio", "psnr", title=title)
    fig.tight_layout()
    return fig


def plot_crops(result: Result, size: int = 64) -> Figure:
    """Central ``size``² crops of the first test image: HR and each super-resolved panel, with its PSNR on Y
    (border ``upscale`` removed, over the whole image) in the title."""
    import matplotlib.pyplot as plt

    hr = result.hr
    if hr is None:
        raise ValueError("this result has no images to crop (it was loaded from JSON, not returned by run)")
    size = min(size, *hr.shape[-2:])
    top, left = (hr.shape[-2] - size) // 2, (hr.shape[-1] - size) // 2
    titles = ["HR (оригинал)"] + list(result.crops)
    images = [hr] + list(result.crops.values())
    fig, axes = plt.subplots(1, len(images), figsize=(2.4 * len(images), 2.7))
    for ax, title, image in zip(axes, titles, images):
        crop = image[:, top:top + size, left:left + size].permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(crop, interpolation="nearest")
        value = psnr(image, hr, crop=result.upscale, y_channel=True)
        label = title if image is hr else f"{title}\n{value:.2f} дБ".replace(".", ",")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig
