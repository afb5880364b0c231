"""Cost of one training step of each way to train one network for every width, ratios measured in one run.

On the cpu-scale Fashion-MNIST ResNet-18 (width 0.25, small stem, batch 128 of 28×28 images):

* ``inn_full_width_step_ratio`` -- a :func:`thesislib.width_training.train_continuous` step of the
  ContinuousNet at full width (every sampling operator the identity) / a plain SGD step of the discrete
  network (:func:`thesislib.training.train`, same optimiser); target <= 1.3 (issue 9);
* ``inn_random_width_step_ratio`` -- the INN step at random widths (uniform in [0.25, 1] per group) / the
  discrete full-width step;
* ``slimmable_step_ratio`` -- the universally slimmable step (sandwich rule: largest, smallest and two random
  width multipliers, in-place distillation; four forward-backward passes) / the discrete full-width step.

Steps run in interleaved blocks (the machine is shared) and each figure is the median per-step wall time,
so the ratios of one run are comparable. Run on an idle machine:
``OMP_NUM_THREADS=1 python benchmarks/inn_training.py [--blocks 6 --steps 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thesislib.continuous import to_continuous  # noqa: E402
from thesislib.models import resnet18  # noqa: E402
from thesislib.pruning.calibration import task_loss  # noqa: E402
from thesislib.slimmable import to_slimmable  # noqa: E402
from thesislib.training import train  # noqa: E402
from thesislib.width_training import StepTimer, WidthSampler, train_continuous  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=6, help="interleaved blocks per method")
    parser.add_argument("--steps", type=int, default=5, help="steps per block")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(512, 1, 28, 28), torch.randint(0, 10, (512,)))
    loader = DataLoader(data, batch_size=128, shuffle=True, drop_last=True)
    x = data.tensors[0][:2]
    discrete = resnet18(num_classes=10, in_channels=1, stem="small", width=0.25)
    inn = to_continuous(discrete, x, permute=False)
    slim = to_slimmable(discrete, x)
    opt = torch.optim.SGD(discrete.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def discrete_block() -> list[float]:
        timer = StepTimer()
        train(discrete, loader, args.steps, task_loss, opt, callbacks=[timer])
        return timer.seconds

    def width_block(net, widths, sandwich: bool) -> list[float]:
        return train_continuous(net, loader, args.steps, widths, sandwich=sandwich, distill=sandwich, lr=0.01).step_seconds

    blocks = {
        "discrete": discrete_block,
        "inn_full": lambda: width_block(inn, (1.0, 1.0), False),
        "inn_random": lambda: width_block(inn, (0.25, 1.0), False),
        "slimmable": lambda: width_block(slim, WidthSampler(slim.full_widths, 0.25, 1.0, per_group=False), True),
    }
    for fn in blocks.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(args.blocks):
        for name, fn in blocks.items():
            times[name] += fn()[1:]  # the first step of a block carries the block's set-up
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"threads: {torch.get_num_threads()}")
    for name, value in median.items():
        print(f"{name}_step_seconds: {value:.4f}")
    base = median["discrete"]
    print(f"inn_full_width_step_ratio: {median['inn_full'] / base:.3f}  (target <= 1.3)")
    print(f"inn_random_width_step_ratio: {median['inn_random'] / base:.3f}")
    print(f"slimmable_step_ratio: {median['slimmable'] / base:.3f}")


if __name__ == "__main__":
    main()
