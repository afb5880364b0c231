"""The comparison loop of ``notebooks/baselines.ipynb``: every method at every kept ratio, one trained model."""

from __future__ import annotations

import copy
import time
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from thesislib.metrics import accuracy, count_macs, count_params

from .pruner import _SCORED, METHODS, channel_scores, prune
from .schedule import GMPSchedule, fine_tune


def sweep(net: nn.Module, methods: Sequence[str], ratios: Sequence[float], example_inputs: torch.Tensor,
          calib: Iterable, test: Iterable, recalibrate: bool = True, calib_batches: int = 20,
          allocation: str = "uniform", seed: int = 0, skip_errors: Sequence[type] = ()) -> list[dict]:
    """Prune ``net`` with each method at each ratio (no fine-tuning) and measure it.

    Returns one record per (method, ratio): ``accuracy`` on ``test``, ``macs``, ``params``, ``seconds``
    (pruning time, including the method's scoring, which is computed once per method and reused across
    ratios) -- or ``error`` when the method raised one of ``skip_errors`` (e.g. ``ImportError`` for
    a continuous package that is not there).  The same ``calib`` batches feed scores and recalibration.
    At ratio 1.0 every one-shot method keeps every channel, so that model is pruned and measured once and
    its record (``"shared": True``) repeated for the other methods; ``continuous`` is measured itself.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; METHODS = {', '.join(METHODS)}")
    records = []
    shared_full: dict | None = None  # ratio 1.0 keeps every channel: one model for every one-shot method
    for method in methods:
        if any(r == 1.0 for r in ratios) and method != "continuous" and shared_full is not None:
            records.append({**shared_full, "method": method})
        start = time.perf_counter()
        scores = (channel_scores(net, method, example_inputs, calib, calib_batches, seed)
                  if method in _SCORED and any(r < 1 for r in ratios) else None)
        score_seconds = time.perf_counter() - start
        for ratio in ratios:
            if ratio == 1.0 and method != "continuous" and shared_full is not None:
                continue
            start = time.perf_counter()
            try:
                small = prune(net, method, ratio, example_inputs, calib=calib, allocation=allocation,
                              recalibrate=recalibrate, calib_batches=calib_batches, seed=seed, scores=scores)
            except tuple(skip_errors) as error:  # noqa: PERF203
                records.append({"method": method, "ratio": ratio, "error": f"{type(error).__name__}: {error}"})
                continue
            seconds = time.perf_counter() - start + score_seconds
            records.append({
                "method": method, "ratio": ratio, "accuracy": accuracy(small, test),
                "macs": count_macs(small, example_inputs), "params": count_params(small),
                "seconds": round(seconds, 3),
            })
            if ratio == 1.0 and method != "continuous":
                shared_full = {**records[-1], "shared": True}
    records.sort(key=lambda r: (list(methods).index(r["method"]), -r["ratio"]))
    return records


def fine_tune_column(net: nn.Module, methods: Sequence[str], ratio: float, example_inputs: torch.Tensor,
                     calib: Iterable, train: Iterable, test: Iterable, steps: int, lr: float = 0.01,
                     recalibrate: bool = True, calib_batches: int = 20, seed: int = 0) -> list[dict]:
    """Accuracy after ``steps`` of fine-tuning for each method at ``ratio``.

    One-shot methods are pruned (with the same recalibration), then fine-tuned; ``gmp`` starts from the
    unpruned network and removes channels gradually during the same number of steps (Zhu & Gupta 2017).
    """
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


def first_images(loader: DataLoader, n: int | None) -> DataLoader:
    """A loader over the first ``n`` examples of ``loader``'s dataset (same batch size, no shuffling);
    ``loader`` itself when ``n`` is ``None`` or covers the dataset."""
    if n is None or n >= len(loader.dataset):
        return loader
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return DataLoader(Subset(loader.dataset, range(n)), batch_size=loader.batch_size, shuffle=False)


BASELINE_SETTINGS: dict[str, dict] = {
    # ratios: kept fractions; calib_batches: batches of the calibration loader for scores and BN recalibration;
    # fine-tuning column at ratio ft_ratio: ft_steps SGD steps for ft_methods; test_images: the first images
    # of the scale's test set used in the sweep (None: all), calib_images: the first calibration images (None:
    # all), both to fit the notebook's time budget.
    "smoke": {"ratios": (1.0, 0.5), "calib_batches": 1, "ft_ratio": 0.5, "ft_steps": 2, "ft_lr": 0.01,
              "ft_methods": ("continuous", "gmp"), "test_images": 256, "calib_images": 32},
    "cpu": {"ratios": (1.0, 0.75, 0.5, 0.375, 0.25), "calib_batches": 5, "ft_ratio": 0.5, "ft_steps": 60,
            "ft_lr": 0.01, "ft_methods": ("obs", "fold", "continuous", "gmp"), "test_images": 2000,
            "calib_images": None},
    "gpu": {"ratios": (1.0, 0.75, 0.5, 0.375, 0.25), "calib_batches": 20, "ft_ratio": 0.5, "ft_steps": 1000,
            "ft_lr": 0.01, "ft_methods": ("l1", "taylor", "hessian", "obs", "fold", "ifm", "continuous", "gmp"),
            "test_images": None, "calib_images": None},
}


def ratio_key(ratio: float) -> str:
    """A kept ratio as a results key: ``0.5`` → ``"0.5"`` (the book's {result} role accepts dotted keys)."""
    return f"{ratio:g}"


def by_method(records: Sequence[dict], key: str = "accuracy") -> dict[str, dict[str, float]]:
    """``{method: {ratio_key: record[key]}}`` for the records that have ``key`` (ratios in descending order)."""
    grid: dict[str, dict[str, float]] = {}
    for rec in sorted(records, key=lambda r: -r["ratio"]):
        if key in rec:
            grid.setdefault(rec["method"], {})[ratio_key(rec["ratio"])] = rec[key]
    return grid


def table_rows(records: Sequence[dict], key: str = "accuracy", scale: float = 100.0) -> list[dict]:
    """Rows for :func:`thesislib.results.save_table`: a method column, then ``key`` × ``scale`` per ratio."""
    grid = by_method(records, key)
    ratios = [ratio_key(r) for r in sorted({r["ratio"] for r in records}, reverse=True)]
    return [{"method": m, **{r: (scale * row[r] if r in row else "—") for r in ratios}} for m, row in grid.items()]


def summary_table(records: Sequence[dict], key: str = "accuracy") -> str:
    """Text table: one row per method, one column per ratio, ``key`` in percent (accuracy) or as is."""
    rows = table_rows(records, key, scale=100.0 if key == "accuracy" else 1.0)
    ratios = [c for c in rows[0] if c != "method"]
    lines = ["method      " + "".join(f"{r:>8}" for r in ratios)]
    for row in rows:
        cells = [f"{row[r]:8.1f}" if key == "accuracy" and row[r] != "—" else
                 (f"{row[r]:8.3g}" if row[r] != "—" else f"{'—':>8}") for r in ratios]
        lines.append(f"{row['method']:<12}" + "".join(cells))
    return "\n".join(lines)


def plot_sweep(records: Sequence[dict], axes) -> None:
    """Accuracy vs kept ratio (``axes[0]``) and vs MACs (``axes[1]``), one line per method."""
    from matplotlib import colormaps

    methods = list(dict.fromkeys(r["method"] for r in records if "accuracy" in r))
    palette = colormaps["tab20"]
    for i, m in enumerate(methods):
        rows = sorted((r for r in records if r["method"] == m and "accuracy" in r), key=lambda r: r["ratio"])
        style = {"marker": "o", "color": palette(i % 20), "label": m}
        if m == "continuous":
            style.update(linewidth=2.5, color="black")
        axes[0].plot([r["ratio"] for r in rows], [100 * r["accuracy"] for r in rows], **style)
        axes[1].plot([r["macs"] / 1e6 for r in rows], [100 * r["accuracy"] for r in rows], **style)
    axes[0].set_xlabel("доля сохранённых каналов")
    axes[1].set_xlabel("MMAC на изображение")
    for ax in axes:
        ax.set_ylabel("точность, %")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
