"""The comparison loop of ``notebooks/baselines.ipynb``: every method at every kept ratio, one trained model."""

from __future__ import annotations

import copy
import time
from typing import Iterable, Sequence

import torch
from torch import nn

from thesislib.metrics import accuracy, count_macs, count_params

from .pruner import METHODS, prune
from .schedule import GMPSchedule, fine_tune


def sweep(net: nn.Module, methods: Sequence[str], ratios: Sequence[float], example_inputs: torch.Tensor,
          calib: Iterable, test: Iterable, recalibrate: bool = True, calib_batches: int = 20,
          allocation: str = "uniform", seed: int = 0, skip_errors: Sequence[type] = ()) -> list[dict]:
    """Prune ``net`` with each method at each ratio (no fine-tuning) and measure it.

    Returns one record per (method, ratio): ``accuracy`` on ``test``, ``macs``, ``params``, ``seconds``
    (pruning time) -- or ``error`` when the method raised one of ``skip_errors`` (e.g. ``ImportError`` for
    a continuous package that is not there).  The same ``calib`` batches feed scores and recalibration.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; METHODS = {', '.join(METHODS)}")
    records = []
    for method in methods:
        for ratio in ratios:
            start = time.perf_counter()
            try:
                small = prune(net, method, ratio, example_inputs, calib=calib, allocation=allocation,
                              recalibrate=recalibrate, calib_batches=calib_batches, seed=seed)
            except tuple(skip_errors) as error:  # noqa: PERF203
                records.append({"method": method, "ratio": ratio, "error": f"{type(error).__name__}: {error}"})
                continue
            seconds = time.perf_counter() - start
            records.append({
                "method": method, "ratio": ratio, "accuracy": accuracy(small, test),
                "macs": count_macs(small, example_inputs), "params": count_params(small),
                "seconds": round(seconds, 3),
            })
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
