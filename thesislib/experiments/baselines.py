"""``notebooks/baselines.ipynb``: every structured-pruning method at every kept ratio, one trained model.

On the Fashion-MNIST ResNet-18 of the scale (:mod:`.fashion_mnist`): each method of
:data:`thesislib.pruning.METHODS` prunes to each kept ratio (every group keeps
``keep_count(ratio, n)`` channels, as ``cnet.resample(ratio)``), BatchNorm is recalibrated on the
same calibration images for every method, and accuracy and MACs are measured without fine-tuning;
then a short fine-tuning column at ``ft_ratio`` (``gmp``: gradual magnitude pruning during the same
steps, Zhu & Gupta 2017).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from thesislib.config import settings_for
from thesislib.metrics import accuracy, count_macs, count_params
from thesislib.results import ratio_key
from thesislib.runtime import batch_inputs

from .common import ResultMixin, best_method, by_method, first_images, summary_table, sweep, table_rows

NAME = "baselines"

__all__ = ["Settings", "SETTINGS", "settings", "Result", "run", "prune_all", "fine_tune_column", "headline",
           "fine_tuning_rows", "plot_sweep", "first_images", "by_method", "table_rows", "summary_table"]


@dataclass(frozen=True)
class Settings:
    """Sizes of the baselines experiment at one scale.

    ``ratios``: kept fractions; ``calib_batches``: batches of the calibration loader for scores and BN
    recalibration; fine-tuning column at ``ft_ratio``: ``ft_steps`` SGD steps (``ft_lr``) for
    ``ft_methods``; ``test_images`` / ``calib_images``: the first images of the scale's test /
    calibration set (``None``: all), to fit the notebook's time budget.
    """

    scale: str
    ratios: tuple[float, ...]
    calib_batches: int
    ft_ratio: float
    ft_steps: int
    ft_lr: float
    ft_methods: tuple[str, ...]
    test_images: int | None
    calib_images: int | None


SETTINGS: dict[str, Settings] = {
    "smoke": Settings("smoke", ratios=(1.0, 0.5), calib_batches=1, ft_ratio=0.5, ft_steps=2, ft_lr=0.01,
                      ft_methods=("continuous", "gmp"), test_images=256, calib_images=32),
    "cpu": Settings("cpu", ratios=(1.0, 0.75, 0.5, 0.375, 0.25), calib_batches=5, ft_ratio=0.5, ft_steps=60,
                    ft_lr=0.01, ft_methods=("obs", "fold", "continuous", "gmp"), test_images=2000, calib_images=None),
    "gpu": Settings("gpu", ratios=(1.0, 0.75, 0.5, 0.375, 0.25), calib_batches=20, ft_ratio=0.5, ft_steps=1000,
                    ft_lr=0.01, ft_methods=("l1", "taylor", "hessian", "obs", "fold", "ifm", "continuous", "gmp"),
                    test_images=None, calib_images=None),
}


def settings(scale: str) -> Settings:
    """The settings of ``scale`` (``ValueError`` naming the scales for an unknown one)."""
    return settings_for(SETTINGS, scale)


def prune_all(net: nn.Module, methods: Sequence[str], ratios: Sequence[float], example_inputs: torch.Tensor,
              calib: Iterable, test: Iterable, recalibrate: bool = True, calib_batches: int = 20,
              allocation: str = "uniform", seed: int = 0, skip_errors: Sequence[type] = ()) -> list[dict]:
    """Prune ``net`` with each method at each ratio (no fine-tuning) and measure it (:func:`.common.sweep`).

    One record per (method, ratio): ``accuracy`` on ``test``, ``macs``, ``params``, ``seconds`` (pruning
    time, including the method's scoring, computed once per method and reused across ratios) — or
    ``error`` when the method raised one of ``skip_errors``. The same ``calib`` batches feed scores and
    recalibration. At ratio 1.0 every one-shot method keeps every channel, so that model is pruned and
    measured once and its record (``"shared": True``) repeated; ``continuous`` is measured itself.
    """
    from thesislib.pruning import METHODS, channel_scores, prune
    from thesislib.pruning.pruner import SCORED

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; METHODS = {', '.join(METHODS)}")

    def prepare(method: str) -> Any:
        if method in SCORED and any(r < 1 for r in ratios):
            return channel_scores(net, method, example_inputs, calib, calib_batches, seed)
        return None

    def compress(method: str, ratio: float, scores: Any) -> nn.Module:
        return prune(net, method, ratio, example_inputs, calib=calib, allocation=allocation,
                     recalibrate=recalibrate, calib_batches=calib_batches, seed=seed, scores=scores)

    def measure(small: nn.Module) -> dict[str, Any]:
        return {"accuracy": accuracy(small, test), "macs": count_macs(small, example_inputs),
                "params": count_params(small)}

    records, _ = sweep(methods, ratios, compress, measure, prepare=prepare,
                       shared_full=lambda m: m != "continuous", skip_errors=skip_errors)
    return records


def fine_tune_column(net: nn.Module, methods: Sequence[str], ratio: float, example_inputs: torch.Tensor,
                     calib: Iterable, train: Iterable, test: Iterable, steps: int, lr: float = 0.01,
                     recalibrate: bool = True, calib_batches: int = 20, seed: int = 0) -> list[dict]:
    """Accuracy after ``steps`` of fine-tuning (:func:`thesislib.pruning.fine_tune`) for each method at ``ratio``.

    One-shot methods are pruned (with the same recalibration), then fine-tuned; ``gmp`` starts from the
    unpruned network and removes channels gradually during the same number of steps (Zhu & Gupta 2017).
    """
    from thesislib.pruning import GMPSchedule, fine_tune, prune

    records = []
    for method in methods:
        torch.manual_seed(seed)
        start = time.perf_counter()
        if method == "gmp":
            model = copy.deepcopy(net)
            schedule = GMPSchedule(final_ratio=ratio, begin_step=0, end_step=max(1, steps // 2),
                                   frequency=max(1, steps // 10))
            fine_tune(model, train, steps, schedule=schedule, lr=lr)
        else:
            model = prune(net, method, ratio, example_inputs, calib=calib, recalibrate=recalibrate,
                          calib_batches=calib_batches, seed=seed)
            fine_tune(model, train, steps, lr=lr)
        records.append({"method": method, "ratio": ratio, "steps": steps, "accuracy": accuracy(model, test),
                        "macs": count_macs(model, example_inputs), "seconds": round(time.perf_counter() - start, 3)})
    return records


@dataclass
class Result(ResultMixin):
    """Every number ``book/`` quotes from this notebook. Grids are ``{method: {ratio_key: value}}``
    (``accuracy.obs.r0_5``); ``best_at_half`` is the best method other than ``random`` at ratio 0.5."""

    unpruned_accuracy: float
    no_fine_tuning: list[dict[str, Any]]
    accuracy: dict[str, dict[str, float]]
    macs: dict[str, dict[str, int]]
    best_at_half: str
    fine_tuned: dict[str, float]
    fine_tuning: list[dict[str, Any]]
    ft_ratio: float
    bn_recalibration: bool = True


def headline(records: Sequence[dict], tuned: Sequence[dict], unpruned_accuracy: float, ft_ratio: float) -> Result:
    """The :class:`Result` of the sweep ``records`` and the fine-tuning column ``tuned``."""
    grid = by_method(records)
    return Result(unpruned_accuracy=unpruned_accuracy, no_fine_tuning=list(records), accuracy=grid,
                  macs=by_method(records, "macs"), best_at_half=best_method(grid, 0.5, exclude=("random",)),
                  fine_tuned={r["method"]: r["accuracy"] for r in tuned}, fine_tuning=list(tuned), ft_ratio=ft_ratio)


def run(settings: Settings, seed: int = 0, device: torch.device | str | None = None) -> Result:
    """The whole experiment at ``settings``: the sweep over every method and ratio, then the fine-tuning column."""
    from thesislib.pruning import METHODS

    from .fashion_mnist import trained_setup

    s = settings
    model, dev, loaders, test = trained_setup(s.scale, seed, device, s.test_images)
    calib = first_images(loaders.calib, s.calib_images)
    example = batch_inputs(next(iter(test)))[:1].to(dev)
    base = accuracy(model, test)
    records = prune_all(model, METHODS, s.ratios, example, calib, test, recalibrate=True,
                        calib_batches=s.calib_batches, seed=seed)
    tuned = fine_tune_column(model, s.ft_methods, s.ft_ratio, example, calib, loaders.train, test,
                             steps=s.ft_steps, lr=s.ft_lr, calib_batches=s.calib_batches, seed=seed)
    return headline(records, tuned, base, s.ft_ratio)


def fine_tuning_rows(result: Result) -> list[dict[str, Any]]:
    """Rows of the book's fine-tuning table: accuracy (%) before and after, and the steps."""
    before = {m: row.get(ratio_key(result.ft_ratio)) for m, row in result.accuracy.items()}
    return [{"method": r["method"], "до дообучения, %": 100 * before[r["method"]] if before.get(r["method"]) is not None
             else "—", "после, %": 100 * r["accuracy"], "шагов": r["steps"]} for r in result.fine_tuning]


def plot_sweep(result: Result, title: str | None = None) -> Figure:
    """Accuracy (%) against the kept ratio (left) and against MMAC per image (right), one line per method."""
    from thesislib.plotting import figure, finish, plot_methods

    fig, axes = figure(2, width=6.0, height=4.5)
    rows = {m: sorted((r for r in result.no_fine_tuning if r["method"] == m and "accuracy" in r),
                      key=lambda r: r["ratio"]) for m in result.accuracy}
    acc = {m: [100 * r["accuracy"] for r in rs] for m, rs in rows.items()}
    plot_methods(axes[0], {m: [r["ratio"] for r in rs] for m, rs in rows.items()}, acc)
    plot_methods(axes[1], {m: [r["macs"] / 1e6 for r in rs] for m, rs in rows.items()}, acc)
    finish(axes[0], "ratio", "accuracy", legend=False)
    finish(axes[1], "mmacs", "accuracy")
    axes[1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
