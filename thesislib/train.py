"""One training entry point for every experiment that trains, on one process or under ``torchrun``.

::

    python -m thesislib.train fashion --scale smoke
    torchrun --nproc_per_node 2 -m thesislib.train fashion --scale smoke      # CPU: gloo, CUDA: nccl
    python -m thesislib.train cifar10-resnet20 --scale gpu --data /data/cifar10 --wandb --compile

The run lives in ``--out`` (default ``runs/<experiment>/<scale>/``): ``checkpoint.pt`` (every
``--checkpoint-every`` steps and at the end, atomically, :mod:`thesislib.checkpointing`), ``metrics.csv``
(:mod:`thesislib.tracking`), ``wandb/`` with ``--wandb`` (offline by default) and ``result.json`` (final
metrics with provenance). Rank 0 alone writes. Rerunning the same command resumes from the checkpoint
at the step it holds (the log says which) and ends with the weights an uninterrupted run ends with;
``--restart`` ignores an existing checkpoint (it is replaced at the first checkpoint step).

The engine is :func:`thesislib.training.train` (the package's one step loop) with DDP around the model
(:mod:`thesislib.distributed`), a :class:`ResumableLoader` over a ``DistributedSampler``, and the
checkpoint, the logging and per-step width draws (INN, slimmable) as callbacks. On CUDA the forward
runs under bf16 autocast in channels_last layout (``--no-amp``, ``--no-channels-last`` turn them off);
``--compile`` wraps the model in ``torch.compile``.

Experiments (:data:`EXPERIMENTS`): ``toy`` (an MLP on synthetic data, for tests of the engine),
``fashion`` (the Fashion-MNIST ResNet-18 recipe of :mod:`thesislib.experiments.fashion_mnist`),
``cifar10-resnet18``, ``cifar10-resnet20``, ``imagenet-resnet18`` (a user's ImageFolder), ``sr`` (EDSR ×2:
built-in photos at smoke/cpu, DIV2K training with Set5/Set14/B100 evaluation at gpu), ``inn`` (INN
training of the continuous Fashion ResNet-18) and ``finetune`` (the pruned Fashion ResNet-18 fine-tuned).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from thesislib.checkpointing import Checkpointer, load_checkpoint, restore_rng
from thesislib.config import SCALES, check_scale, seed_everything
from thesislib.distributed import (DistInfo, barrier, broadcast_draw, broadcast_object, distributed_sampler,
                                   init_distributed, is_main, per_rank_batch, rank, rank_seed, shutdown,
                                   world_size, wrap_ddp)
from thesislib.results import REPO_ROOT, atomic_write_text
from thesislib.tracking import Tracker
from thesislib.training import Callback, TrainState, cosine_factor, train

__all__ = ["EXPERIMENTS", "Task", "Options", "ResumableLoader", "WidthSync", "inn_width_draw", "fit", "main",
           "check_device", "run_dir"]

CHECKPOINT_NAME = "checkpoint.pt"
RESULT_NAME = "result.json"


# ------------------------------------------------------------------------------------------- pieces
@dataclass
class Task:
    """What the engine trains: a model, a training set, a loss, an optimiser and schedule, an evaluation.

    ``settings`` (plain values) is the recipe: recorded in the checkpoint and the result, and compared on
    resume. ``steps`` / ``batch_size`` (global, over all ranks) size the run; ``random_items``: items
    draw torch random numbers (augmentation) and are seeded per ``(seed, epoch, index)`` so a resumed run
    sees the same augmentations; ``callbacks`` run before the engine's (e.g. :class:`WidthSync`).
    """

    experiment: str
    scale: str
    model: nn.Module
    train_set: Dataset
    loss_fn: Callable[[Any, Any], torch.Tensor]
    steps: int
    batch_size: int
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    schedule: Callable[[int, int], float] = cosine_factor
    evaluate: Callable[[nn.Module, torch.device], dict[str, float]] | None = None
    eval_every: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    random_items: bool = False
    ddp_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """Command-line options of a run (``None``: the experiment's settings at the scale)."""

    experiment: str
    scale: str
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    checkpoint_every: int | None = None
    eval_every: int | None = None
    log_every: int = 10
    seed: int = 0
    out: Path | None = None
    data: Path | None = None
    workers: int | None = None
    wandb: bool = False
    compile: bool = False
    amp: bool = True
    channels_last: bool = True
    restart: bool = False
    progress: bool = True
    ratio: float = 0.5


def check_device(scale: str) -> torch.device:
    """The device of a run at ``scale``: CUDA when present; ``gpu`` without CUDA is a ``ValueError``."""
    check_scale(scale)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if scale == "gpu":
        raise ValueError("--scale gpu needs CUDA, and torch.cuda.is_available() is False on this machine: "
                         "run --scale cpu (or smoke) here, or move to a machine with an NVIDIA GPU")
    return torch.device("cpu")


def run_dir(experiment: str, scale: str) -> Path:
    """``runs/<experiment>/<scale>/`` in the repository (ignored by git)."""
    return REPO_ROOT / "runs" / experiment / scale


class _SeededItems(Dataset):
    """``dataset[i]`` with torch's random state forked and seeded from ``(seed, epoch, i)``: the same
    augmentation of item ``i`` in epoch ``epoch`` whatever the worker, the batch position or a resume."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0]))
            return self.dataset[index]


class ResumableLoader:
    """Endless batches of this rank's :func:`thesislib.distributed.distributed_sampler` share, epoch after
    epoch, from a position ``(epoch, offset)`` (``offset``: batches of the epoch already drawn).

    :meth:`state_dict` is the position after the batches handed out so far, so a checkpoint written after
    step ``s`` resumes with the batch of step ``s + 1``. It has no ``len``: :func:`thesislib.training.train`
    draws from it without looking ahead.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True,
                 epoch: int = 0, offset: int = 0, random_items: bool = False,
                 loader_kwargs: Mapping[str, Any] | None = None) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.sampler = distributed_sampler(dataset, shuffle=shuffle, seed=seed, drop_last=True)  # type: ignore[arg-type]
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch < 1:
            raise ValueError(f"this rank's share of the training set ({len(self.sampler)} items over "
                             f"{world_size()} processes) cannot fill one batch of {batch_size}: use a smaller "
                             "--batch-size or fewer processes")
        self.epoch, self.offset = epoch, offset
        self.random_items = random_items
        self.loader_kwargs = dict(loader_kwargs or {})

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "offset", "batches_per_epoch"}`` of the next batch to draw."""
        return {"epoch": self.epoch, "offset": self.offset, "batches_per_epoch": self.per_epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        if self.offset >= self.per_epoch:
            self.epoch, self.offset = self.epoch + 1, 0

    def __iter__(self) -> Iterator[Any]:
        while True:
            self.sampler.set_epoch(self.epoch)
            b = self.batch_size
            indices = list(self.sampler)[self.offset * b: self.per_epoch * b]
            data = _SeededItems(self.dataset, self.seed, self.epoch) if self.random_items else self.dataset
            generator = torch.Generator().manual_seed(rank_seed(self.seed) + self.epoch)
            loader = DataLoader(data, batch_size=b, sampler=indices, drop_last=True, generator=generator,
                                **self.loader_kwargs)
            for batch in loader:
                self.offset += 1  # before the yield: the state counts the batches handed out
                if self.offset == self.per_epoch:
                    self.epoch, self.offset = self.epoch + 1, 0
                yield batch


class WidthSync(Callback):
    """Before every step, ``draw(step)`` on rank 0 (:func:`thesislib.distributed.broadcast_draw`) and
    ``apply(value)`` on every rank: all ranks train the same sub-network in a step.

    ``draw`` returns any picklable value — the widths of an INN step (:func:`inn_width_draw`) or, for
    slimmable training (issue 9), a width multiplier; ``last`` keeps the value of the latest step.
    """

    def __init__(self, draw: Callable[[int], Any], apply: Callable[[Any], None]) -> None:
        self.draw, self.apply = draw, apply
        self.last: Any = None

    def on_step_begin(self, state: TrainState) -> None:
        value = broadcast_draw(lambda: self.draw(state.step))
        self.apply(value)
        self.last = value


def inn_width_draw(full_widths: Mapping[str, int], low: float = 0.5, high: float = 1.0, seed: int = 0
                   ) -> Callable[[int], dict[str, int]]:
    """INN widths of a step (Solodskikh et al. 2023, Sec. 4.2): per group a uniform integer in
    ``[max(1, ceil(low·size)), round(high·size)]`` (the rule of ``ContinuousNet.train_widths``), from a
    generator seeded by ``(seed, step)``, so a resumed run draws the same widths at the same step."""
    if not 0 < low <= high <= 1:
        raise ValueError(f"width ratios must satisfy 0 < low <= high <= 1, got ({low}, {high})")
    names = sorted(full_widths)

    def draw(step: int) -> dict[str, int]:
        rng = np.random.default_rng([seed, step])
        out = {}
        for name in names:
            size = full_widths[name]
            lo = max(1, math.ceil(low * size))
            hi = max(lo, int(round(high * size)))
            out[name] = int(rng.integers(lo, hi + 1))
        return out

    return draw


def apply_inn_widths(cnet: Any) -> Callable[[Mapping[str, int]], None]:
    """``apply`` of :class:`WidthSync` for a ``ContinuousNet``: its train-mode forwards use the given widths."""

    def apply(widths: Mapping[str, int]) -> None:
        fixed = dict(widths)
        cnet.train_widths(lambda group, _generator: fixed[group.name])

    return apply


class _Forward(nn.Module):
    """The model's forward in channels_last layout and/or under bf16 autocast (CUDA); outputs in float32."""

    def __init__(self, module: nn.Module, amp: bool, channels_last: bool) -> None:
        super().__init__()
        self.wrapped_module = module
        self.amp, self.channels_last = amp, channels_last

    def forward(self, x: Any) -> Any:
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.amp:
            return self.wrapped_module(x)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            out = self.wrapped_module(x)
        return out.float() if isinstance(out, torch.Tensor) else out


# ---------------------------------------------------------------------------------------- the engine
def _recipe(task: Task) -> dict[str, Any]:
    return {"experiment": task.experiment, "scale": task.scale, "steps": task.steps,
            "batch_size": task.batch_size, **task.settings}


def _print(message: str) -> None:
    if is_main():
        print(message, flush=True)


class _LastEval(Callback):
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.metrics = dict(metrics)


def _provenance(info: DistInfo, seconds: float) -> dict[str, Any]:
    from thesislib.provenance import code_state, git_commit, source_hash

    return {"git_commit": git_commit(), "code_state": code_state(), "source_hash": source_hash(),
            "torch_version": torch.__version__, "device": str(info.device),
            "device_name": torch.cuda.get_device_name(info.device) if info.device.type == "cuda" else "cpu",
            "world_size": info.world_size, "backend": info.backend, "wall_time_s": round(seconds, 2)}


def fit(task: Task, opts: Options, info: DistInfo) -> dict[str, Any]:
    """Train ``task`` as ``opts`` say in the process group ``info`` describes; return the result
    (written to ``<out>/result.json`` by rank 0). Resumes from ``<out>/checkpoint.pt`` when it exists."""
    started = time.perf_counter()
    out = Path(opts.out) if opts.out is not None else run_dir(task.experiment, task.scale)
    ckpt = out / CHECKPOINT_NAME
    local_batch = per_rank_batch(task.batch_size, info.world_size)
    model = task.model
    optimizer = task.make_optimizer(model)
    total = task.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: task.schedule(s, total))
    from thesislib.data.gpu import loader_options

    loader = ResumableLoader(task.train_set, local_batch, seed=opts.seed, random_items=task.random_items,
                             loader_kwargs=loader_options(info.device, opts.workers))
    recipe = _recipe(task)
    record = None
    if ckpt.is_file() and not opts.restart:
        record = load_checkpoint(ckpt, task.experiment, model)  # refuses another experiment / model shape
        saved = record.get("settings", {})
        changed = sorted(k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k))
        if changed:
            diff = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {recipe.get(k)!r}" for k in changed)
            raise ValueError(f"{ckpt} was written with other settings ({diff}): rerun with the same options, "
                             "use another --out folder, or --restart to start over")
        if record["optimizer"] is not None:
            optimizer.load_state_dict(record["optimizer"])
        if record["scheduler"] is not None:
            scheduler.load_state_dict(record["scheduler"])
        loader.load_state_dict(record["data"])
        start = int(record["step"])
        exact = restore_rng(record, rank_seed(opts.seed) + start)
        _print(f"[thesislib.train] resuming {task.experiment} ({task.scale}) from step {start} of {total}: {ckpt}"
               + ("" if exact else f" (written by {record.get('world_size')} processes: RNG streams reseeded)"))
    else:
        start = 0
        seed_everything(rank_seed(opts.seed))
        _print(f"[thesislib.train] starting {task.experiment} ({task.scale}) at step 0 of {total} on "
               f"{info.world_size} process(es), {info.device}, global batch {task.batch_size}: {out}")
    device = info.device
    cuda = device.type == "cuda"
    if cuda and opts.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    net: nn.Module = wrap_ddp(model, device) if not task.ddp_kwargs else _ddp_with(model, device, task.ddp_kwargs)
    if cuda and (opts.amp or opts.channels_last):
        net = _Forward(net, amp=opts.amp, channels_last=opts.channels_last)
    if opts.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    last_eval = _LastEval()
    tracker = Tracker(out, recipe, total, start_step=start, log_every=opts.log_every, wandb=opts.wandb,
                      wandb_id=(record or {}).get("extra", {}).get("wandb_id"), name=f"{task.experiment}-{task.scale}",
                      progress=opts.progress, images_per_step=task.batch_size)
    checkpointer = Checkpointer(ckpt, task.experiment, model, opts.checkpoint_every, scheduler=scheduler,
                                data=loader.state_dict, settings=recipe,
                                extra=lambda: {"wandb_id": tracker.wandb_id})

    def evaluate(_: nn.Module) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if is_main() and task.evaluate is not None:
            metrics = task.evaluate(model, device)
        model.train()
        metrics = broadcast_object(metrics)
        barrier()
        return metrics

    eval_every = opts.eval_every or task.eval_every
    losses: list[float] = []
    try:
        if start < total:
            state = train(net, loader, total - start, task.loss_fn, optimizer, scheduler,
                          callbacks=[*task.callbacks, last_eval, tracker, checkpointer], device=device,
                          evaluate=evaluate if task.evaluate is not None else None,
                          eval_every=eval_every if task.evaluate is not None else None, start_step=start)
            losses = state.losses
        else:
            _print(f"[thesislib.train] {ckpt} already holds all {total} steps: evaluating only")
        metrics = last_eval.metrics
        if not metrics and task.evaluate is not None:
            metrics = evaluate(net)
            tracker.on_eval(TrainState(model, optimizer, total, step=total - 1), metrics)
    finally:
        tracker.close()
    result = {"experiment": task.experiment, "scale": task.scale, "steps": total, "resumed_from": start,
              "global_batch": task.batch_size, "metrics": metrics, "train_loss_last": tracker.last.get("loss"),
              "settings": recipe, "checkpoint": str(ckpt), "provenance": _provenance(info, time.perf_counter() - started)}
    if is_main():
        atomic_write_text(out / RESULT_NAME, json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
        _print(f"[thesislib.train] done: {json.dumps(metrics)} -> {out / RESULT_NAME}")
    barrier()
    return {**result, "losses": losses}


def _ddp_with(model: nn.Module, device: torch.device, kwargs: Mapping[str, Any]) -> nn.Module:
    from thesislib.distributed import is_distributed

    model.to(device)
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


# ---------------------------------------------------------------------------------------- experiments
def _sgd(lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, nesterov: bool = True
         ) -> Callable[[nn.Module], torch.optim.Optimizer]:
    def make(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                               weight_decay=weight_decay, nesterov=nesterov)

    return make


def _accuracy_on(loader: Any) -> Callable[[nn.Module, torch.device], dict[str, float]]:
    from thesislib.metrics import accuracy

    return lambda model, device: {"test_accuracy": accuracy(model, loader, device)}


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _toy(opts: Options, device: torch.device) -> Task:
    """An MLP (16 → 64 → 4, no BatchNorm) on a fixed synthetic classification set: the engine's tests."""
    g = torch.Generator().manual_seed(1234)
    teacher = torch.randn(16, 4, generator=g)
    x = torch.randn(1280, 16, generator=g)
    y = (x @ teacher + 0.3 * torch.randn(1280, 4, generator=g)).argmax(1)
    train_set, test = TensorDataset(x[:1024], y[:1024]), TensorDataset(x[1024:], y[1024:])
    steps = {"smoke": 40, "cpu": 400, "gpu": 2000}[opts.scale]
    lr = _pick(opts.lr, 0.1)
    model = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 4))
    return Task("toy", opts.scale, model, train_set, F.cross_entropy, _pick(opts.steps, steps),
                _pick(opts.batch_size, 32), _sgd(lr, weight_decay=0.0, nesterov=False),
                evaluate=_accuracy_on(DataLoader(test, batch_size=256)), settings={"lr": lr})


def _fashion(opts: Options, device: torch.device) -> Task:
    """The Fashion-MNIST ResNet-18 recipe of :mod:`thesislib.experiments.fashion_mnist` (SGD Nesterov,
    cosine, cross-entropy; ``epochs`` passes over the scale's training subset), evaluated every epoch."""
    from thesislib.data.fashion import FASHION_SCALES, fashion_loaders
    from thesislib.experiments import fashion_mnist as fm

    s = fm.settings(opts.scale)
    loaders = fashion_loaders(opts.scale, seed=s.seed, root=opts.data)
    batch = _pick(opts.batch_size, FASHION_SCALES[opts.scale].batch_size)
    per_epoch = len(loaders.train.dataset) // batch
    lr = _pick(opts.lr, s.lr)
    return Task("fashion", opts.scale, fm.build_model(s), loaders.train.dataset, F.cross_entropy,
                _pick(opts.steps, s.epochs * per_epoch), batch, _sgd(lr), evaluate=_accuracy_on(loaders.test),
                eval_every=per_epoch, settings={"width": s.width, "lr": lr, "recipe_seed": s.seed})


def _first_images(train_set: Dataset, test_set: Dataset, n_train: int | None) -> tuple[Dataset, Dataset]:
    """Below gpu scale: ``n_train`` training images drawn once with seed 0 and the first ``n_train // 4``
    test images; at gpu scale (``None``) both sets whole."""
    if n_train is None:
        return train_set, test_set
    from torch.utils.data import Subset

    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
    return (Subset(train_set, order[:n_train].tolist()),
            Subset(test_set, range(min(len(test_set), n_train // 4))))  # type: ignore[arg-type]


_CIFAR = {"smoke": (0.125, 1024, 64, 1), "cpu": (0.25, 10000, 128, 2), "gpu": (1.0, None, 128, 200)}


def _cifar(model_name: str) -> Callable[[Options, torch.device], Task]:
    def build(opts: Options, device: torch.device) -> Task:
        """CIFAR-10 with He et al.'s augmentation; SGD 0.1, momentum 0.9 (Nesterov), cosine; 200 epochs at gpu."""
        from thesislib.data.gpu import cifar10_transforms, require_data
        from thesislib.data.vision import cifar10
        from thesislib.models import resnet18, resnet20

        root = require_data("cifar10", opts.data)
        width, n_train, batch, epochs = _CIFAR[opts.scale]
        train_set: Dataset = cifar10(root, True, transform=cifar10_transforms(True))
        test_set: Dataset = cifar10(root, False, transform=cifar10_transforms(False))
        train_set, test_set = _first_images(train_set, test_set, n_train)
        batch = _pick(opts.batch_size, batch)
        per_epoch = len(train_set) // batch  # type: ignore[arg-type]
        wd = 5e-4 if model_name == "resnet18" else 1e-4
        model = (resnet18(num_classes=10, in_channels=3, stem="small", width=width) if model_name == "resnet18"
                 else resnet20(num_classes=10, width=width))
        lr = _pick(opts.lr, 0.1)
        test = DataLoader(test_set, batch_size=500, **_eval_loader_kwargs(device, opts.workers))
        return Task(f"cifar10-{model_name}", opts.scale, model, train_set, F.cross_entropy,
                    _pick(opts.steps, epochs * per_epoch), batch, _sgd(lr, weight_decay=wd),
                    evaluate=_accuracy_on(test), eval_every=per_epoch * max(1, epochs // 20),
                    settings={"width": width, "lr": lr, "weight_decay": wd, "train_images": len(train_set)},  # type: ignore[arg-type]
                    random_items=True)

    return build


def _eval_loader_kwargs(device: torch.device, workers: int | None) -> dict[str, Any]:
    from thesislib.data.gpu import loader_options

    return loader_options(device, workers)


_IMAGENET = {"smoke": (0.125, 64, 2048, 64, 1), "cpu": (0.25, 128, 20000, 64, 1), "gpu": (1.0, 224, None, 256, 90)}


def _imagenet(opts: Options, device: torch.device) -> Task:
    """ImageNet ResNet-18 (He et al. 2016) from the user's ImageFolder: SGD 0.1 (for batch 256),
    weight decay 1e-4, cosine over 90 epochs at gpu."""
    from thesislib.data.gpu import imagenet_transforms, require_data
    from thesislib.data.vision import imagenet
    from thesislib.models import resnet18

    root = require_data("imagenet", opts.data)
    width, size, n_train, batch, epochs = _IMAGENET[opts.scale]
    train_set: Dataset = imagenet(root, "train", transform=imagenet_transforms(True, size))
    val_set: Dataset = imagenet(root, "val", transform=imagenet_transforms(False, size))
    train_set, val_set = _first_images(train_set, val_set, n_train)
    batch = _pick(opts.batch_size, batch)
    per_epoch = len(train_set) // batch  # type: ignore[arg-type]
    lr = _pick(opts.lr, 0.1 * batch / 256)
    val = DataLoader(val_set, batch_size=250, **_eval_loader_kwargs(device, opts.workers))
    return Task("imagenet-resnet18", opts.scale, resnet18(num_classes=1000, width=width), train_set,
                F.cross_entropy, _pick(opts.steps, epochs * per_epoch), batch, _sgd(lr, weight_decay=1e-4, nesterov=False),
                evaluate=_accuracy_on(val), eval_every=per_epoch, random_items=True,
                settings={"width": width, "image_size": size, "lr": lr, "train_images": len(train_set)})  # type: ignore[arg-type]


def _step_halving(every: int) -> Callable[[int, int], float]:
    return lambda step, total: 0.5 ** (step // every)


def _sr(opts: Options, device: torch.device) -> Task:
    """EDSR ×2 with the L1 loss and Adam (Lim et al. 2017). smoke/cpu: the tiny EDSR of
    :mod:`thesislib.experiments.super_resolution` on the built-in photos; gpu: EDSR-baseline (64 features,
    16 blocks) on 96-pixel DIV2K patches, batch 16, lr 1e-4 halved every 200 000 steps, evaluated on
    Set5 / Set14 / B100 (PSNR and SSIM on Y, ``scale`` border pixels cropped)."""
    from thesislib.experiments import super_resolution as sr
    from thesislib.models import edsr

    up = 2
    if opts.scale == "gpu":
        from thesislib.data.gpu import SR_EVAL_SETS, SRFilePatches, require_data
        from thesislib.data.sr import _images_in, sr_folder

        root = require_data("sr", opts.data)
        steps, batch, lr = _pick(opts.steps, 300_000), _pick(opts.batch_size, 16), _pick(opts.lr, 1e-4)
        files = _images_in(root / "DIV2K_train_HR")
        train_set: Dataset = SRFilePatches(files, up, 96, length=max(len(files), 1000 * batch), seed=opts.seed)
        eval_sets = {name: sr_folder(root / name, up) for name in SR_EVAL_SETS}
        model = edsr(scale=up, n_feats=64, n_blocks=16, channels=3)
        schedule: Callable[[int, int], float] = _step_halving(200_000)
        settings = {"n_feats": 64, "n_blocks": 16, "patch_size": 96, "lr": lr, "upscale": up}
    else:
        s = sr.settings(opts.scale)
        steps, batch, lr = _pick(opts.steps, s.steps), _pick(opts.batch_size, s.batch_size), _pick(opts.lr, s.lr)
        train_set = sr.train_patches(up, s.patch_size, steps, batch, seed=opts.seed)
        eval_sets = {"photos": sr.eval_pairs(up, s.eval_crop, s.n_test)}
        model = sr.build_model(s, seed=opts.seed)
        schedule = lambda step, total: 1.0  # noqa: E731 - the experiment's constant rate
        settings = {"n_feats": s.n_feats, "n_blocks": s.n_blocks, "patch_size": s.patch_size, "lr": lr, "upscale": up}

    def evaluate(net: nn.Module, dev: torch.device) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, images in eval_sets.items():
            m = sr.evaluate_sr(net, images, up)
            out[f"{name}_psnr"], out[f"{name}_ssim"] = m["psnr"], m["ssim"]
        return out

    def adam(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)

    return Task("sr", opts.scale, model, train_set, F.l1_loss, steps, batch, adam, schedule=schedule,
                evaluate=evaluate, eval_every=max(1, steps // 10), settings=settings)


_INN = {"smoke": (16, 0.01), "cpu": (300, 0.01), "gpu": (3000, 0.01)}


def _fashion_base(opts: Options) -> tuple[nn.Module, Any]:
    from thesislib.data.fashion import fashion_loaders
    from thesislib.experiments import fashion_mnist as fm

    s = fm.settings(opts.scale)
    if world_size() > 1:  # the cached model is trained (once) by rank 0, the others wait and read it
        if is_main():
            fm.fashion_resnet18_record(opts.scale)
        barrier()
    base = fm.fashion_resnet18(opts.scale, device="cpu").train()
    return base, fashion_loaders(opts.scale, seed=s.seed, root=opts.data)


def _inn(opts: Options, device: torch.device) -> Task:
    """INN training (Solodskikh et al. 2023, Sec. 4.2) of the continuous Fashion ResNet-18: every step all
    ranks train the same random widths (uniform in [0.5, 1] of each group, :class:`WidthSync`); evaluated
    at full width."""
    from thesislib.continuous import to_continuous
    from thesislib.data.fashion import FASHION_SCALES

    base, loaders = _fashion_base(opts)
    example = next(iter(loaders.calib))[0][:2]
    cnet = to_continuous(base, example, seed=opts.seed)
    draw = WidthSync(inn_width_draw(cnet.full_widths, 0.5, 1.0, seed=opts.seed), apply_inn_widths(cnet))
    steps, lr = _INN[opts.scale]
    lr = _pick(opts.lr, lr)
    batch = _pick(opts.batch_size, FASHION_SCALES[opts.scale].batch_size)
    return Task("inn", opts.scale, cnet, loaders.train.dataset, F.cross_entropy, _pick(opts.steps, steps), batch,
                _sgd(lr), evaluate=_accuracy_on(loaders.test), settings={"lr": lr, "widths": [0.5, 1.0]},
                callbacks=[draw])


_FINETUNE = {"smoke": (16, 0.01), "cpu": (300, 0.01), "gpu": (3000, 0.01)}


def _finetune(opts: Options, device: torch.device) -> Task:
    """The Fashion ResNet-18 pruned by L2 magnitude (``l1`` method of :func:`thesislib.pruning.prune`) to
    ``--ratio``, fine-tuned with the recipe of :func:`thesislib.pruning.fine_tune` (SGD, cosine, task loss)."""
    from thesislib.data.fashion import FASHION_SCALES
    from thesislib.pruning import prune
    from thesislib.pruning.calibration import task_loss

    base, loaders = _fashion_base(opts)
    example = next(iter(loaders.calib))[0][:2]
    small = prune(base.eval(), "l1", opts.ratio, example, seed=opts.seed).train()
    steps, lr = _FINETUNE[opts.scale]
    lr = _pick(opts.lr, lr)
    batch = _pick(opts.batch_size, FASHION_SCALES[opts.scale].batch_size)
    return Task("finetune", opts.scale, small, loaders.train.dataset, task_loss, _pick(opts.steps, steps), batch,
                _sgd(lr, nesterov=False), evaluate=_accuracy_on(loaders.test),
                settings={"lr": lr, "method": "l1", "ratio": opts.ratio})


#: experiment name → task builder ``(options, device) -> Task``
EXPERIMENTS: dict[str, Callable[[Options, torch.device], Task]] = {
    "toy": _toy,
    "fashion": _fashion,
    "cifar10-resnet18": _cifar("resnet18"),
    "cifar10-resnet20": _cifar("resnet20"),
    "imagenet-resnet18": _imagenet,
    "sr": _sr,
    "inn": _inn,
    "finetune": _finetune,
}


# ------------------------------------------------------------------------------------------------ CLI
def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m thesislib.train``."""
    p = argparse.ArgumentParser(prog="python -m thesislib.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(EXPERIMENTS), help="what to train")
    p.add_argument("--scale", default="cpu", choices=SCALES, help="settings row (gpu needs CUDA)")
    p.add_argument("--steps", type=_positive, help="optimisation steps (default: the scale's recipe)")
    p.add_argument("--batch-size", type=_positive, help="global batch over all processes")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--checkpoint-every", type=_positive, default=None, help="steps between checkpoints "
                   "(default: about 20 per run); a checkpoint is always written at the end")
    p.add_argument("--eval-every", type=_positive, help="steps between evaluations")
    p.add_argument("--log-every", type=_positive, default=10, help="steps between logged training metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="run folder (default runs/<experiment>/<scale>)")
    p.add_argument("--data", type=Path, help="data folder (default data/<cifar10|imagenet|sr>, Fashion: data/fashion-mnist)")
    p.add_argument("--workers", type=int, help="data-loader workers per process (default 4 on CUDA, 0 on CPU)")
    p.add_argument("--ratio", type=float, default=0.5, help="kept ratio of the finetune experiment")
    p.add_argument("--wandb", action="store_true", help="log to wandb (WANDB_MODE=offline unless set)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--no-channels-last", action="store_true", help="no channels_last layout on CUDA")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def options(argv: Sequence[str] | None = None) -> Options:
    """:class:`Options` from command-line arguments."""
    a = parser().parse_args(argv)
    return Options(a.experiment, a.scale, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                   checkpoint_every=a.checkpoint_every, eval_every=a.eval_every, log_every=a.log_every,
                   seed=a.seed, out=a.out, data=a.data, workers=a.workers, wandb=a.wandb, compile=a.compile,
                   amp=not a.no_amp, channels_last=not a.no_channels_last, restart=a.restart,
                   progress=not a.no_progress, ratio=a.ratio)


def run(opts: Options) -> dict[str, Any]:
    """Build the experiment's task and :func:`fit` it (opening and closing the process group)."""
    if opts.experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {opts.experiment!r}: choose one of {', '.join(sorted(EXPERIMENTS))}")
    device = check_device(opts.scale)
    info = init_distributed(device)
    try:
        per_rank_batch(opts.batch_size, info.world_size) if opts.batch_size else None
        seed_everything(opts.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        task = EXPERIMENTS[opts.experiment](opts, info.device)
        if opts.checkpoint_every is None:
            opts = dataclasses.replace(opts, checkpoint_every=max(1, task.steps // 20))
        return fit(task, opts, info)
    finally:
        shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: clear one-line errors (exit status 2) for bad input, else 0."""
    opts = options(argv)
    try:
        run(opts)
    except (ValueError, FileNotFoundError) as error:
        print(f"thesislib.train: error (rank {rank()}): {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
