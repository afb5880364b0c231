"""Benchmarks of thesislib.continuous, one ``name: value`` line each, all measured in this run.

* ``conversion_seconds_resnet18`` -- ``to_continuous`` of torchvision's ResNet-18 (all 12 groups,
  permutation included); target <= 10 s on the 2-core CPU machine;
* ``tv_ratio_vs_plain_2opt`` -- total variation after our permutation / after the plain 2-opt
  reference, summed over ResNet-18's groups (<= 1), with the reference's seconds and the TV of the
  unpermuted order for scale;
* ``train_step_ratio`` -- one SGD step of the continuous ResNet-18 (small stem) whose every tensor is
  sampled at 75 % width (banded cubic sampling inside the step) / the step of the plain model of the
  same widths (its export); ``train_step_ratio_full_width`` -- continuous at full width / the
  original; ``inn_step_ratio`` -- INN training (random widths in [0.5, 1] per step) / the original;
* ``export_inference_ratio`` -- inference of the export at ratio 0.5 / a plain model built with the
  same widths (target <= 1.05).

Timings interleave the compared models and take medians (the machine is shared). Run:
``OMP_NUM_THREADS=1 python benchmarks/continuous.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thesislib.continuous import channel_distances, to_continuous, total_variation, two_opt_reference  # noqa: E402
from thesislib.models import resnet18  # noqa: E402


def _interleaved(fns: list, repeats: int, warmup: int = 2) -> list[float]:
    for f in fns:
        for _ in range(warmup):
            f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def conversion() -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    start = time.perf_counter()
    cnet = to_continuous(net, x)
    print(f"conversion_seconds_resnet18: {time.perf_counter() - start:.2f}")
    ours = ref = unpermuted = 0.0
    ref_seconds = 0.0
    raw = to_continuous(net, x, permute=False)
    for g in cnet.groups:
        weights = ("producer", "consumer")  # the tensors the permutation is chosen on
        d = channel_distances([(t, m.dim) for m, t in cnet.group_tensors(g.name) if m.role in weights])
        ours += total_variation(d, range(g.size))
        d_raw = channel_distances([(t, m.dim) for m, t in raw.group_tensors(g.name) if m.role in weights])
        t = time.perf_counter()
        order = two_opt_reference(d_raw)
        ref_seconds += time.perf_counter() - t
        ref += total_variation(d_raw, order)
        unpermuted += total_variation(d_raw, range(g.size))
    print(f"tv_ours_resnet18: {ours:.1f}")
    print(f"tv_plain_2opt_resnet18: {ref:.1f}")
    print(f"tv_unpermuted_resnet18: {unpermuted:.1f}")
    print(f"tv_ratio_vs_plain_2opt: {ours / ref:.4f}")
    print(f"plain_2opt_seconds_resnet18: {ref_seconds:.2f}")


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    def run() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return run


def training(repeats: int = 9) -> None:
    torch.manual_seed(0)
    net = resnet18(num_classes=10, in_channels=1, stem="small", width=0.5)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    cnet = to_continuous(net, x[:2]).train()
    # sampled at 75 % width inside every step vs the plain model of the same widths
    cnet.train_widths(lambda g, gen: max(1, round(0.75 * g.size)))
    plain = cnet.eval().resample(0.75, antialias=False).export().train()
    cnet.train()
    runs = [_step(cnet, torch.optim.SGD(cnet.parameters(), lr=1e-3), x, y),
            _step(plain, torch.optim.SGD(plain.parameters(), lr=1e-3), x, y)]
    t_cont, t_plain = _interleaved(runs, repeats)
    print(f"train_step_ratio: {t_cont / t_plain:.3f}")
    # full width: identity operators, the original forward
    full = to_continuous(net, x[:2]).train()
    orig = resnet18(num_classes=10, in_channels=1, stem="small", width=0.5).train()
    orig.load_state_dict(net.state_dict())
    inn = to_continuous(net, x[:2]).train().train_widths((0.5, 1.0))
    runs = [_step(full, torch.optim.SGD(full.parameters(), lr=1e-3), x, y),
            _step(orig, torch.optim.SGD(orig.parameters(), lr=1e-3), x, y),
            _step(inn, torch.optim.SGD(inn.parameters(), lr=1e-3), x, y)]
    t_full, t_orig, t_inn = _interleaved(runs, repeats)
    print(f"train_step_ratio_full_width: {t_full / t_orig:.3f}")
    print(f"inn_step_ratio: {t_inn / t_orig:.3f}")
    print(f"discrete_step_seconds: {t_orig:.4f}")


@torch.no_grad()
def inference(repeats: int = 61) -> None:
    torch.manual_seed(0)
    net = resnet18(num_classes=10, in_channels=1, stem="small", width=0.5).eval()
    x = torch.randn(64, 1, 28, 28)
    small = to_continuous(net, x[:2]).eval().resample(0.5).export().eval()
    plain = resnet18(num_classes=10, in_channels=1, stem="small", width=0.25).eval()
    shapes = [p.shape for p in small.parameters()]
    assert shapes == [p.shape for p in plain.parameters()], "export and plain model differ in shape"
    t_small, t_plain = _interleaved([lambda: small(x), lambda: plain(x)], repeats)
    print(f"export_inference_ratio: {t_small / t_plain:.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    conversion()
    training()
    inference()
