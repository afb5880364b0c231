"""Cost of the capacity tools on a small-stem ResNet-18 (width 0.25, random weights, 1 thread).

Prints ``name: value`` lines, all measured in one run:
profile seconds, per-layer time covered by the hooks relative to the end-to-end forward,
seconds of every capacity estimator and of the greedy allocation.
"""

from __future__ import annotations

import time

import torch

from thesislib.capacity import allocate, capacities, profile, uniform_widths
from thesislib.continuous import to_continuous
from thesislib.models import resnet18


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = resnet18(num_classes=10, in_channels=1, stem="small", width=0.25).eval()
    x = torch.randn(32, 1, 28, 28)
    t = time.perf_counter()
    prof = profile(net, x, repeats=10, warmup=2, threads=1)
    print(f"profile_seconds: {time.perf_counter() - t:.3f}")
    print(f"profiled_layer_time_over_forward: {prof.layer_latency / prof.latency:.3f}")
    cnet = to_continuous(net, x[:8]).eval()
    for method in ("weights", "features", "output"):
        t = time.perf_counter()
        caps = capacities(cnet, 0.99, method, calib=x)
        print(f"capacities_{method}_seconds: {time.perf_counter() - t:.3f}")
    t = time.perf_counter()
    widths = allocate(cnet, 0.5, "latency", capacity=caps, profile=prof)
    print(f"allocate_seconds: {time.perf_counter() - t:.3f}")
    t = time.perf_counter()
    uniform_widths(cnet, 0.5, "latency", profile=prof)
    print(f"uniform_widths_seconds: {time.perf_counter() - t:.3f}")
    print(f"allocated_channels_fraction: {sum(widths.values()) / sum(g.size for g in cnet.groups):.3f}")


if __name__ == "__main__":
    main()
