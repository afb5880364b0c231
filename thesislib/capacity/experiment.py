"""The capacity experiment of ``notebooks/capacity.ipynb``: estimators vs knees, and allocations.

On the trained Fashion-MNIST ResNet-18 of a scale, converted with
:func:`thesislib.continuous.to_continuous`:

1. the weight and feature spectra of every channel group;
2. every estimator's predicted widths against the measured knees (anti-aliased
   resampling of one group, BatchNorm recalibration, accuracy within ``tol``);
3. accuracy, MACs and measured latency of uniform widths, the Nyquist
   (capacity-proportional) allocation and the greedy MACs- and latency-aware
   allocations at equal budgets, with and without anti-aliasing, every model with
   the same BatchNorm recalibration.

Everything the notebook prints or plots comes from :func:`run`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from thesislib.capacity.allocation import CostModel, allocate, proportional_widths, uniform_widths
from thesislib.capacity.estimators import METHODS, capacities_at, feature_spectra, weight_spectrum
from thesislib.capacity.knee import KneeTable, full_widths, knee_table, preserved_state
from thesislib.capacity.profiling import profile
from thesislib.config import check_scale, seed_everything


@dataclass(frozen=True)
class CapacitySettings:
    """Sizes of the capacity experiment at one scale."""

    eval_images: int          # fixed test subset for knees and allocations
    recal_batches: int        # BatchNorm recalibration batches after every resampling
    calib_images: int         # calibration images for the "output" and "features" estimators
    knee_grid: int | None     # candidate widths ceil(i * n / grid) per group (None: every width)
    budgets: tuple[float, ...]
    latency_batch: int
    latency_repeats: int
    smooth_steps: int = 60    # Sobolev fine-tuning steps of the band-limited-by-training estimator
    smooth_penalty: float = 50.0
    smooth_lr: float = 0.02
    tol: float = 0.01
    energies: tuple[float, ...] = (0.5, 0.7, 0.9, 0.99)


SETTINGS: dict[str, CapacitySettings] = {
    "smoke": CapacitySettings(eval_images=128, recal_batches=1, calib_images=16, knee_grid=4,
                              budgets=(0.5,), latency_batch=16, latency_repeats=3, tol=0.02, smooth_steps=3,
                              energies=(0.9, 0.99)),
    "cpu": CapacitySettings(eval_images=1000, recal_batches=5, calib_images=64, knee_grid=16,
                            budgets=(0.3, 0.5, 0.7), latency_batch=64, latency_repeats=10),
    "gpu": CapacitySettings(eval_images=10000, recal_batches=20, calib_images=1024, knee_grid=None,
                            budgets=(0.2, 0.3, 0.5, 0.7), latency_batch=256, latency_repeats=50),
}


@dataclass
class Setup:
    """The converted model and the data every step of the experiment shares."""

    cnet: Any
    calib: DataLoader
    train: DataLoader
    calib_x: torch.Tensor     # the estimators' calibration images
    evaluate: Callable[[Any], float]
    recalibrate: Callable[[Any], None]
    example: torch.Tensor
    settings: CapacitySettings
    base_accuracy: float
    device: torch.device


def setup(scale: str, seed: int = 0, device: torch.device | str | None = None) -> Setup:
    """Load the scale's trained ResNet-18, convert it, and build evaluate/recalibrate callbacks."""
    from thesislib.continuous import to_continuous
    from thesislib.data import fashion_loaders
    from thesislib.training import evaluate_accuracy, fashion_resnet18

    check_scale(scale)
    seed_everything(seed)
    s = SETTINGS[scale]
    model = fashion_resnet18(scale, device=device)
    device = next(model.parameters()).device
    loaders = fashion_loaders(scale, seed=seed)
    test = loaders.test.dataset
    subset = Subset(test, list(range(min(s.eval_images, len(test)))))
    eval_loader = DataLoader(subset, batch_size=256, shuffle=False)
    xs, seen = [], 0
    for x, _ in loaders.calib:
        xs.append(x)
        seen += len(x)
        if seen >= s.calib_images:
            break
    calib_x = torch.cat(xs)[:s.calib_images].to(device)
    example = calib_x[:8]
    base = evaluate_accuracy(model, eval_loader, device)
    cnet = to_continuous(model, example).to(device).eval()

    def evaluate(net: Any) -> float:
        return evaluate_accuracy(net, eval_loader, device)

    def recalibrate(net: Any) -> None:
        net.recalibrate(loaders.calib, batches=s.recal_batches)

    return Setup(cnet, loaders.calib, loaders.train, calib_x, evaluate, recalibrate, example, s, base, device)


def spectra(st: Setup) -> dict[str, dict[str, list[float]]]:
    """``{"weights" | "features": {group: normalised DCT power}}`` of every group."""
    cnet = st.cnet
    feats = feature_spectra(cnet, st.calib_x)
    return {"weights": {g.name: weight_spectrum(cnet, g.name).tolist() for g in cnet.groups},
            "features": {n: p.tolist() for n, p in feats.items()}}


def predictions(st: Setup) -> dict[str, dict[str, int]]:
    """``{"<method>@<energy>": {group: predicted width}}`` for every estimator and energy."""
    out = {}
    for m in METHODS:
        for e, widths in capacities_at(st.cnet, st.settings.energies, m, st.calib_x).items():
            out[f"{m}@{e:g}"] = widths
    return out


def knees(st: Setup, predicted: dict[str, dict[str, int]]) -> KneeTable:
    """Measured knees of every group and their comparison with ``predicted``."""
    s = st.settings
    return knee_table(st.cnet, st.evaluate, predicted, tol=s.tol, antialias=True,
                      recalibrate=st.recalibrate, grid=s.knee_grid)


def smoothed(st: Setup) -> dict[str, Any]:
    """The band-limited-by-training estimator: Sobolev fine-tuning, then weight spectra and new knees.

    Runs on ``st.cnet`` and restores it afterwards; the knees are those of the
    fine-tuned model (its own full-width accuracy is the reference).
    """
    from thesislib.capacity.smoothing import smooth_finetune

    s = st.settings
    with preserved_state(st.cnet):
        history = smooth_finetune(st.cnet, st.train, s.smooth_steps, penalty=s.smooth_penalty, lr=s.smooth_lr,
                                  device=st.device)
        st.cnet.eval()
        accuracy = st.evaluate(st.cnet)
        predicted = {f"smoothed_weights@{e:g}": widths
                     for e, widths in capacities_at(st.cnet, s.energies, "weights").items()}
        table = knee_table(st.cnet, st.evaluate, predicted, tol=s.tol, antialias=True,
                           recalibrate=st.recalibrate, grid=s.knee_grid)
    return {"accuracy": accuracy, "penalty_first": history[0], "penalty_last": history[-1], "table": table}


def _measure(st: Setup, widths: dict[str, int], antialias: bool, model: CostModel,
             macs_model: CostModel) -> dict[str, Any]:
    cnet = st.cnet
    with preserved_state(cnet):
        cnet.resample(widths, antialias=antialias)
        st.recalibrate(cnet)
        cnet.eval()
        accuracy = st.evaluate(cnet)
        plain = cnet.export().eval()
    x = st.example[:1].repeat(st.settings.latency_batch, 1, 1, 1)
    prof = profile(plain, x, repeats=st.settings.latency_repeats, warmup=2, threads=1)
    return {"accuracy": accuracy, "macs": prof.macs, "macs_fraction": macs_model.fraction(widths),
            "modelled_latency_fraction": model.fraction(widths), "latency_s": prof.latency}


def allocations(st: Setup, capacity: dict[str, int], knees: dict[str, int] | None = None) -> dict[str, Any]:
    """Uniform, Nyquist (capacity-proportional) and greedy MACs/latency-aware widths per budget.

    ``capacity`` is the best estimator's prediction; with ``knees`` the greedy
    latency-aware allocation is also run on the measured knees as capacities
    (``greedy_latency_knees``: what a perfect estimator would give). Each allocation is evaluated
    with and without anti-aliasing, always after BatchNorm recalibration; latency
    is measured on the exported plain model (batch ``latency_batch``, 1 thread).
    """
    cnet, s = st.cnet, st.settings
    with preserved_state(cnet):
        cnet.resample(full_widths(cnet), antialias=False)
        full_plain = cnet.export().eval()
    x = st.example[:1].repeat(s.latency_batch, 1, 1, 1)
    prof = profile(full_plain, x, repeats=s.latency_repeats, warmup=2, threads=1)
    lat_model, macs_model = CostModel(cnet, prof, "latency"), CostModel(cnet, prof, "macs")
    full = {"accuracy": None, "macs": prof.macs, "latency_s": prof.latency}
    with preserved_state(cnet):
        cnet.resample(full_widths(cnet), antialias=False)
        st.recalibrate(cnet)
        cnet.eval()
        full["accuracy"] = st.evaluate(cnet)
    out: dict[str, Any] = {"full": full, "budgets": {}}
    for budget in s.budgets:
        schemes = {
            "uniform": uniform_widths(cnet, budget, "macs", profile=prof),
            "nyquist": proportional_widths(cnet, budget, capacity, "macs", profile=prof),
            "greedy_macs": allocate(cnet, budget, "macs", capacity=capacity, profile=prof),
            "greedy_latency": allocate(cnet, budget, "latency", capacity=capacity, profile=prof),
        }
        if knees is not None:
            schemes["greedy_latency_knees"] = allocate(cnet, budget, "latency", capacity=knees, profile=prof)
        row = {}
        for name, widths in schemes.items():
            with_aa = _measure(st, widths, True, lat_model, macs_model)
            without = _measure(st, widths, False, lat_model, macs_model)
            row[name] = {**with_aa, "accuracy_naive": without["accuracy"], "widths": widths}
        out["budgets"][str(budget)] = row
    return out


def run(scale: str, seed: int = 0, device: torch.device | str | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole experiment; returns JSON-ready results (and the KneeTable under ``"table"``)."""
    t0 = time.perf_counter()
    st = setup(scale, seed, device)
    log(f"groups: {len(st.cnet.groups)}, base accuracy on the eval subset: {st.base_accuracy:.4f}")
    spec = spectra(st)
    predicted = predictions(st)
    log(f"estimators done ({time.perf_counter() - t0:.1f} s)")
    table = knees(st, predicted)
    log(f"knees done ({time.perf_counter() - t0:.1f} s)")
    smooth = smoothed(st)
    smooth_table = smooth.pop("table")
    log(f"band-limited-by-training estimator done ({time.perf_counter() - t0:.1f} s)")
    best = table.best or f"weights@{st.settings.energies[-1]:g}"
    alloc = allocations(st, predicted[best], table.knees)
    log(f"allocations done ({time.perf_counter() - t0:.1f} s)")
    return {
        "base_accuracy": st.base_accuracy,
        "groups": {g.name: int(g.size) for g in st.cnet.groups},
        "predicted": table.predicted,
        "knees": table.knees,
        "spearman": table.spearman,
        "spearman_ratio": table.spearman_ratio,
        "mean_relative_error": table.mean_relative_error,
        "best_estimator": best,
        "allocations": alloc,
        "spectra": spec,
        "table": table,
        "smoothed": {**smooth, "predicted": smooth_table.predicted, "knees": smooth_table.knees,
                     "spearman": smooth_table.spearman, "spearman_ratio": smooth_table.spearman_ratio,
                     "mean_relative_error": smooth_table.mean_relative_error},
        "smoothed_table": smooth_table,
        "settings": st.settings.__dict__,
    }
