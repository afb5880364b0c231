"""``notebooks/batchnorm.ipynb``: BatchNorm under continuous resampling (``book/part1/batchnorm.md``).

On the Fashion-MNIST ResNet-18 of the scale (:mod:`.fashion_mnist`; the gpu scale uses the full-width
Fashion-MNIST model too -- CIFAR-10 needs a user's data folder and is not run here):

1. accuracy after ``cnet.resample(r)`` at every ``ratios`` entry, naive and anti-aliased sampling, for:
   ``none`` (BatchNorm parameters and statistics resampled with the group, no data), ``recal_k<k>``
   (:meth:`ContinuousNet.recalibrate` on ``k`` batches of training images, every ``recal_batches`` entry),
   ``fused`` (BatchNorm folded into the convolutions before conversion, :func:`.batchnorm.fuse_batchnorm`) and
   ``analytic`` (data-free variances from eq. ``eq-bn-var``, :func:`thesislib.continuous.batchnorm.analytic_correction`);
   the error of the stored / corrected running variances against the recalibrated ones (largest ``k``):
   mean ``|ln σ²/σ²_recal|``;
2. eq. ``eq-bn-var``: the variance of the next layer's pre-activations against the width ``m`` of one group
   (naive sampling, the others at full width, stored statistics), for every group with one consumer,
   fitted by ``A + B/m`` (R² per group). The law holds when every group has ``B > 0`` and R² ≥ 0.9
   (fixed before measuring);
3. the fairness table: every pruning method at ``fairness_ratio`` with and without BatchNorm recalibration
   (``recal_batches[-1]`` batches) and the paired bootstrap interval of the difference over test images;
4. the INN-trained net of :mod:`.inn_training` (``inn_trained(scale, start="checkpoint")``: INN fine-tuning
   of the same checkpoint with random widths, cached by that notebook): ``none`` against recalibration.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from thesislib.config import settings_for
from thesislib.graph import keep_count
from thesislib.metrics import bootstrap_interval, correct_predictions
from thesislib.results import ratio_key
from thesislib.runtime import batch_inputs

from .common import ResultMixin, unsaved

NAME = "batchnorm"
SAMPLINGS: tuple[str, ...] = ("naive", "antialias")

__all__ = ["Settings", "SETTINGS", "settings", "Result", "run", "variant_names", "recalibration_loader",
           "variance_law", "fairness", "plot_recalibration", "plot_variance", "fairness_rows", "grid_rows"]


@dataclass(frozen=True)
class Settings:
    """Sizes of the BatchNorm experiment at one scale.

    ``ratios``: kept fractions; ``recal_batches``: the k of recalibration (batches of ``recal_batch_size``
    training images: the calibration split, then the training split, in a fixed order); ``test_images``: the
    first test images; ``variance_ratios`` / ``variance_batches``: the widths m/n and batches of the
    variance law; ``fairness_ratio``: the ratio of the fairness table (one of ``ratios``); ``inn``: include
    the INN-trained net; ``bootstrap``: resamples of the intervals.
    """

    scale: str
    ratios: tuple[float, ...]
    recal_batches: tuple[int, ...]
    recal_batch_size: int
    test_images: int | None
    variance_ratios: tuple[float, ...]
    variance_batches: int
    fairness_ratio: float
    inn: bool
    bootstrap: int


SETTINGS: dict[str, Settings] = {
    "smoke": Settings("smoke", ratios=(0.5,), recal_batches=(1, 5), recal_batch_size=32, test_images=256,
                      variance_ratios=(1.0, 0.5, 0.25), variance_batches=1, fairness_ratio=0.5, inn=True,
                      bootstrap=200),
    "cpu": Settings("cpu", ratios=(0.75, 0.5, 0.375), recal_batches=(1, 2, 5, 10, 20, 50), recal_batch_size=64,
                    test_images=2000, variance_ratios=(1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125),
                    variance_batches=4, fairness_ratio=0.5, inn=True, bootstrap=1000),
    "gpu": Settings("gpu", ratios=(0.75, 0.5, 0.375), recal_batches=(1, 2, 5, 10, 20, 50), recal_batch_size=128,
                    test_images=None, variance_ratios=(1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125),
                    variance_batches=10, fairness_ratio=0.5, inn=True, bootstrap=1000),
}


def settings(scale: str) -> Settings:
    """The settings of ``scale`` (``ValueError`` naming the scales for an unknown one)."""
    return settings_for(SETTINGS, scale)


def variant_names(recal_batches: Sequence[int]) -> list[str]:
    """``none``, ``recal_k<k>`` per k, ``fused``, ``analytic``: the columns of the accuracy grid."""
    return ["none", *(f"recal_k{k}" for k in recal_batches), "fused", "analytic"]


def recalibration_loader(loaders: Any, batch_size: int) -> DataLoader:
    """Training images for recalibration in a fixed order: the calibration split, then the training split."""
    return DataLoader(ConcatDataset([loaders.calib.dataset, loaders.train.dataset]), batch_size=batch_size,
                      shuffle=False)


def _conv_inputs(net: nn.Module) -> dict[str, int]:
    return {n: m.in_channels for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def _log_error(small: nn.Module, reference: dict[str, torch.Tensor]) -> float:
    errs = [float((m.running_var.double().clamp_min(1e-12) / reference[n].double().clamp_min(1e-12)).log().abs().mean())
            for n, m in small.named_modules() if isinstance(m, nn.BatchNorm2d) and n in reference]
    return sum(errs) / len(errs)


def _running_vars(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.running_var.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def resampling_grid(model: nn.Module, s: Settings, example: torch.Tensor, recal: Iterable, test: Iterable
                    ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """One record per (sampling, ratio, variant): ``accuracy`` (and ``var_error`` for ``none``/``analytic``),
    and ``{(sampling, ratio, variant): per-image correctness}`` for the intervals."""
    from thesislib.continuous import to_continuous
    from thesislib.continuous.batchnorm import analytic_correction, fuse_batchnorm

    cnet = to_continuous(model, example)
    fused = to_continuous(fuse_batchnorm(model), example)
    full_in = _conv_inputs(model)
    records: list[dict[str, Any]] = []
    hits: dict[str, torch.Tensor] = {}

    def add(sampling: str, ratio: float, variant: str, net: nn.Module, **extra: Any) -> None:
        c = correct_predictions(net, test)
        hits[f"{sampling}_{ratio_key(ratio)}_{variant}"] = c
        records.append({"sampling": sampling, "ratio": ratio, "variant": variant, "accuracy": float(c.float().mean()),
                        **extra})

    for sampling in SAMPLINGS:
        aa = sampling == "antialias"
        for ratio in s.ratios:
            cnet.resample(ratio, antialias=aa)
            stored = cnet.export()
            corrected = cnet.export()
            analytic_correction(corrected, full_in)
            cnet.recalibrate(recal, s.recal_batches[-1])
            reference = _running_vars(cnet.export())
            add(sampling, ratio, "none", stored, var_error=_log_error(stored, reference))
            for k in s.recal_batches:
                cnet.recalibrate(recal, k)
                add(sampling, ratio, f"recal_k{k}", cnet)
            fused.resample(ratio, antialias=aa)
            add(sampling, ratio, "fused", fused)
            add(sampling, ratio, "analytic", corrected, var_error=_log_error(corrected, reference))
    return records, hits


def variance_law(model: nn.Module, s: Settings, example: torch.Tensor, loader: Iterable) -> list[dict[str, Any]]:
    """Eq. ``eq-bn-var`` measured: for every group with exactly one consumer, the mean variance of the
    consumer's outputs at each ``variance_ratios`` width of that group (naive sampling), and its A + B/m fit."""
    from thesislib.continuous import to_continuous
    from thesislib.continuous.batchnorm import consumer_modules, fit_inverse_width, preactivation_variance

    cnet = to_continuous(model, example)
    rows = []
    for g in cnet.groups:
        consumers = consumer_modules(cnet, g.name)
        if len(consumers) != 1:
            continue
        widths = sorted({keep_count(r, g.size) for r in s.variance_ratios}, reverse=True)
        var = preactivation_variance(cnet, g.name, widths, loader, s.variance_batches, antialias=False)
        fit = fit_inverse_width(widths, var)
        rows.append({"group": g.name, "consumer": consumers[0], "size": g.size, "widths": widths, "variance": var,
                     **fit, "b_positive": fit["B"] > 0})
    if not rows:
        raise ValueError("no channel group has exactly one consumer layer: the variance law needs one")
    return sorted(rows, key=lambda r: r["group"])


def fairness(model: nn.Module, methods: Sequence[str], ratio: float, example: torch.Tensor, calib: Iterable,
             recal: Iterable, batches: int, test: Iterable, resamples: int, seed: int = 0) -> list[dict[str, Any]]:
    """Every method at ``ratio`` without and with BatchNorm recalibration (``batches`` batches of ``recal``):
    accuracies, their difference and its paired bootstrap interval over the test images."""
    from thesislib.pruning import prune, recalibrate_batchnorm

    rows = []
    for method in methods:
        small = prune(model, method, ratio, example, calib=calib, recalibrate=False, seed=seed)
        without = correct_predictions(small, test)
        recalibrate_batchnorm(small, recal, batches)
        with_ = correct_predictions(small, test)
        diff = with_.double() - without.double()
        low, high = bootstrap_interval(diff, resamples=resamples, seed=seed)
        rows.append({"method": method, "without": float(without.float().mean()), "with": float(with_.float().mean()),
                     "gain": float(diff.mean()), "gain_low": low, "gain_high": high})
    return rows


def inn_case(s: Settings, recal: Iterable, test: Iterable, seed: int, device: torch.device | str | None = None
             ) -> list[dict[str, Any]]:
    """The INN-trained net of :func:`.inn_training.inn_trained` (fine-tuned from the checkpoint with random
    widths; its statistics recalibrated at full width), ``none`` and ``recal_k<max>`` accuracy at full width
    and every ratio, both samplings."""
    from .inn_training import inn_trained

    cnet = inn_trained(s.scale, seed=seed, start="checkpoint", device=device)
    k = s.recal_batches[-1]
    records = []
    cnet.eval()
    for sampling in SAMPLINGS:
        for ratio in (1.0, *s.ratios):
            cnet.resample(ratio, antialias=sampling == "antialias")
            records.append({"sampling": sampling, "ratio": ratio, "variant": "none",
                            "accuracy": float(correct_predictions(cnet, test).float().mean())})
            cnet.recalibrate(recal, k)
            records.append({"sampling": sampling, "ratio": ratio, "variant": f"recal_k{k}",
                            "accuracy": float(correct_predictions(cnet, test).float().mean())})
    return records


def _grid(records: Sequence[dict[str, Any]], key: str = "accuracy") -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in records:
        if key in r:
            out.setdefault(r["sampling"], {}).setdefault(r["variant"], {})[ratio_key(r["ratio"])] = r[key]
    return out


@dataclass
class Result(ResultMixin):
    """Every number ``book/part1/batchnorm.md`` quotes. ``accuracy.<sampling>.<variant>.<r-key>`` (e.g.
    ``accuracy.naive.recal_k20.r0_5``); ``var_error`` likewise for ``none``/``analytic``; ``variance`` one row
    per group (``group``, ``widths``, ``variance``, ``A``, ``B``, ``r2``); ``fairness`` one row per method,
    ``fairness_gain.<method>``; ``inn_accuracy.<sampling>.<variant>.<r-key>``; ``predictions``: which
    predictions of the section held (booleans)."""

    base_accuracy: float
    ratios: list[float]
    recal_batches: list[int]
    grid: list[dict[str, Any]]
    accuracy: dict[str, dict[str, dict[str, float]]]
    var_error: dict[str, dict[str, dict[str, float]]]
    recal_vs_none: dict[str, dict[str, list[float]]]
    variance: list[dict[str, Any]]
    variance_r2_min: float
    variance_r2_median: float
    variance_groups: int
    variance_b_positive: int
    fairness: list[dict[str, Any]]
    fairness_gain: dict[str, float]
    fairness_ratio: float
    inn: list[dict[str, Any]]
    inn_accuracy: dict[str, dict[str, dict[str, float]]]
    predictions: dict[str, bool]
    verdicts: dict[str, str]
    at_ratio: dict[str, float]
    headline_ratio: float
    k_first: int
    k_last: int
    hits: dict[str, torch.Tensor] = unsaved(default_factory=dict)


def run(settings: Settings, seed: int = 0, device: torch.device | str | None = None) -> Result:
    """The whole experiment at ``settings`` (see the module docstring)."""
    from thesislib.pruning import METHODS

    from .fashion_mnist import trained_setup

    s = settings
    model, dev, loaders, test = trained_setup(s.scale, seed, device, s.test_images)
    recal = recalibration_loader(loaders, s.recal_batch_size)
    example = batch_inputs(next(iter(test)))[:1].to(dev)
    base = float(correct_predictions(model, test).float().mean())
    records, hits = resampling_grid(model, s, example, recal, test)
    k = s.recal_batches[-1]
    intervals = {}
    for sampling in SAMPLINGS:
        for ratio in s.ratios:
            pre = f"{sampling}_{ratio_key(ratio)}"
            diff = hits[f"{pre}_recal_k{k}"].double() - hits[f"{pre}_none"].double()
            intervals.setdefault(sampling, {})[ratio_key(ratio)] = list(
                bootstrap_interval(diff, resamples=s.bootstrap, seed=seed))
    variance = variance_law(model, s, example, recal)
    r2 = sorted(r["r2"] for r in variance)
    table = fairness(model, METHODS, s.fairness_ratio, example, loaders.calib, recal, k, test, s.bootstrap, seed)
    inn = inn_case(s, recal, test, seed, device=dev) if s.inn else []
    acc = _grid(records)
    err = _grid(records, "var_error")
    law = all(r["b_positive"] for r in variance) and r2[0] >= 0.9
    predictions = {
        "variance_law": law,
        "recalibration_helps_every_method": all(r["gain_low"] > 0 for r in table),
        "recalibration_beats_none": all(acc[sp][f"recal_k{k}"][q] > acc[sp]["none"][q] for sp in acc for q in acc[sp]["none"]),
        "analytic_beats_none": all(acc[sp]["analytic"][q] > acc[sp]["none"][q] for sp in acc for q in acc[sp]["none"]),
        "analytic_closer_statistics": all(err[sp]["analytic"][q] < err[sp]["none"][q] for sp in err for q in err[sp]["none"]),
        "continuous_bn_beats_fused": all(acc[sp]["none"][q] > acc[sp]["fused"][q] for sp in acc for q in acc[sp]["none"]),
    }
    if s.fairness_ratio not in s.ratios:
        raise ValueError(f"fairness_ratio {s.fairness_ratio} must be one of the ratios {s.ratios} (the headline keys)")
    return Result(
        base_accuracy=base, ratios=list(s.ratios), recal_batches=list(s.recal_batches), grid=records,
        accuracy=acc, var_error=err, recal_vs_none=intervals, variance=variance, variance_r2_min=r2[0],
        variance_r2_median=statistics.median(r2),
        variance_groups=len(variance), variance_b_positive=sum(r["b_positive"] for r in variance),
        fairness=table, fairness_gain={r["method"]: r["gain"] for r in table}, fairness_ratio=s.fairness_ratio,
        inn=inn, inn_accuracy=_grid(inn), predictions=predictions,
        verdicts={k: "да" if v else "нет" for k, v in predictions.items()}, at_ratio=_at_ratio(acc, inn, s),
        headline_ratio=s.fairness_ratio, k_first=s.recal_batches[0], k_last=k, hits=hits)


def _at_ratio(acc: dict[str, dict[str, dict[str, float]]], inn: Sequence[dict[str, Any]], s: Settings
              ) -> dict[str, float]:
    """The headline accuracies at ``fairness_ratio`` under scale-independent names: ``<variant>_<sampling>``
    with ``recal_first`` / ``recal_last`` for the smallest / largest k, ``inn_none_<sampling>`` and
    ``inn_recal_<sampling>`` for the INN-trained net."""
    q = ratio_key(s.fairness_ratio)
    names = {"none": "none", f"recal_k{s.recal_batches[0]}": "recal_first", f"recal_k{s.recal_batches[-1]}": "recal_last",
             "fused": "fused", "analytic": "analytic"}
    out = {f"{alias}_{sp}": acc[sp][v][q] for sp in acc for v, alias in names.items() if q in acc[sp].get(v, {})}
    for r in inn:
        if r["ratio"] == s.fairness_ratio:
            out[f"inn_{'none' if r['variant'] == 'none' else 'recal'}_{r['sampling']}"] = r["accuracy"]
    return out


# ------------------------------------------------------------------------------------------ tables, figures
def grid_rows(result: Result, sampling: str) -> list[dict[str, Any]]:
    """Accuracy (%) per variant (rows) and ratio (columns) for one sampling."""
    grid = result.accuracy[sampling]
    return [{"вариант": v, **{ratio_key(r): 100 * grid[v][ratio_key(r)] for r in result.ratios}} for v in grid]


def fairness_rows(result: Result) -> list[dict[str, Any]]:
    """The fairness table: accuracy (%) without / with recalibration, the gain and its 95 % interval."""
    return [{"метод": r["method"], "без перекалибровки": 100 * r["without"], "с перекалибровкой": 100 * r["with"],
             "прирост (п. п.)": 100 * r["gain"],
             "95 % интервал прироста": f"[{100 * r['gain_low']:.1f}; {100 * r['gain_high']:.1f}]".replace(".", ",")}
            for r in result.fairness]


def plot_recalibration(result: Result) -> Figure:
    """Accuracy against the number of recalibration batches k, one line per ratio and sampling; the
    no-data variants as horizontal marks at k → 0 (left of the axis)."""
    from thesislib.plotting import figure, finish

    fig, axes = figure(len(SAMPLINGS), width=4.5, height=3.6, sharey=True)
    ks = result.recal_batches
    for ax, sampling in zip(axes, SAMPLINGS):
        grid = result.accuracy[sampling]
        for i, ratio in enumerate(result.ratios):
            q = ratio_key(ratio)
            line = ax.plot(ks, [100 * grid[f"recal_k{k}"][q] for k in ks], marker="o", label=f"r = {ratio}")[0]
            for variant, marker in (("none", "x"), ("fused", "s"), ("analytic", "^")):
                ax.scatter([0.6], [100 * grid[variant][q]], marker=marker, color=line.get_color(),
                           label=None if i else {"none": "без данных", "fused": "слитая BN", "analytic": "аналитическая"}[variant])
        ax.axhline(100 * result.base_accuracy, color="gray", linestyle="--", linewidth=1)
        finish(ax, "пакетов перекалибровки k", "accuracy", title={"naive": "без антиалиасинга", "antialias": "с антиалиасингом"}[sampling],
               logx=True, legend=sampling == SAMPLINGS[-1])
    fig.tight_layout()
    return fig


def plot_variance(result: Result) -> Figure:
    """Eq. ``eq-bn-var``: the consumer's mean pre-activation variance (relative to full width) against m/n,
    measured (points) and the A + B/m fit (lines), one colour per group, R² in the legend."""
    import numpy as np

    from thesislib.plotting import figure, finish

    fig, ax = figure(1, width=6.0, height=4.2)
    for row in result.variance:
        m = np.asarray(row["widths"], dtype=float)
        v = np.asarray(row["variance"], dtype=float)
        full = v[np.argmax(m)]
        grid = np.linspace(m.min(), m.max(), 100)
        line = ax.plot(grid / row["size"], (row["A"] + row["B"] / grid) / full, linewidth=1)[0]
        ax.scatter(m / row["size"], v / full, color=line.get_color(), s=12,
                   label=f"{row['group']} (R² = {row['r2']:.3f})")
    finish(ax, "m / n", "дисперсия / дисперсия при m = n", title="Дисперсия предактиваций следующего слоя")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig

