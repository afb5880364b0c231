"""Pruning benchmarks: one ``name: value`` line each, all measured in one run.

* ``prune_seconds_<method>``: time of ``prune(..., ratio=0.5)`` on an untrained ResNet-18 (small stem,
  width 0.25, 28x28 inputs) with 2 calibration batches of 64;
* ``latency_ratio_half``: measured CPU latency (1 thread) of the half-width model over the full one;
* ``macs_ratio_half``: MACs of the same pair;
* ``fisher_speedup``: per-sample squared gradients, vmap reference time / batched-hook time.

Run: ``OMP_NUM_THREADS=1 python benchmarks/pruning.py``.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from thesislib.metrics import count_macs, measure_latency
from thesislib.models import resnet18
from thesislib.pruning import METHODS, prune
from thesislib.pruning.importance import squared_gradients, squared_gradients_vmap


def main() -> None:
    torch.manual_seed(0)
    net = resnet18(num_classes=10, in_channels=1, stem="small", width=0.25).eval()
    x = torch.rand(128, 1, 28, 28)
    y = torch.randint(0, 10, (128,))
    calib = DataLoader(TensorDataset(x, y), batch_size=64)
    example = x[:1]
    half = None
    for method in METHODS:
        start = time.perf_counter()
        small = prune(net, method, 0.5, example, calib=calib, calib_batches=2)
        print(f"prune_seconds_{method}: {time.perf_counter() - start:.2f}")
        if method == "l1":
            half = small
    assert half is not None
    batch = x[:32]
    full_s = measure_latency(net, batch, repeats=20, warmup=3, threads=1)
    half_s = measure_latency(half, batch, repeats=20, warmup=3, threads=1)
    print(f"latency_ratio_half: {half_s / full_s:.3f}")
    print(f"macs_ratio_half: {count_macs(half, example) / count_macs(net, example):.3f}")
    start = time.perf_counter()
    squared_gradients(net, calib, 1)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    squared_gradients_vmap(net, calib, 1)
    print(f"fisher_speedup: {(time.perf_counter() - start) / fast:.2f}")


if __name__ == "__main__":
    main()
