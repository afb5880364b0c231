"""``notebooks/inn_training.ipynb``: one network for every width — INN training against slimmable networks and
individually trained widths (issue 9).

On the Fashion-MNIST ResNet-18 of the scale (its architecture from :mod:`.fashion_mnist`), at every kept
ratio ``r`` of :attr:`Settings.ratios` (every group at ``keep_count(r, n)`` channels), BatchNorm recalibrated
at each width for every method on the same calibration images, accuracy on the same test images:

**From scratch, the same number of steps ``scratch_steps`` for each trained network** (same SGD, learning
rate and batches):

* ``discrete`` — one plain network per width, each trained alone (the "individually trained" reference);
* ``inn`` — one :class:`~thesislib.continuous.ContinuousNet` trained with random widths (Solodskikh et al.
  2023, Sec. 4.2), one uniform ratio in ``[low, 1]`` per group per step, evaluated with naive resampling
  (as trained); ``inn_aa`` is the same network evaluated with anti-aliased resampling; ``inn_small`` the
  log-uniform distribution (biased to small widths);
* ``slimmable`` — a universally slimmable network (Yu & Huang 2019): channel prefixes, shared BatchNorm
  recalibrated per width, sandwich rule (largest, smallest and ``random_widths`` random width multipliers
  per step), in-place distillation;
* ``posthoc`` — the full-width ``discrete`` network converted and resampled after training (anti-aliased).

**From the trained checkpoint** (:func:`.fashion_mnist.fashion_resnet18`), **the same budget ``ft_steps``**:
``inn_ft`` (one INN fine-tuning for every width), ``obs_ft`` (OBS-pruned at each width, then ``ft_steps``
steps per width: the checkpoint itself at ``r = 1``), ``slimmable_ft`` (one sandwich fine-tuning, channels
ordered by L1 norm). ``total_steps`` says how many steps each needed, ``passes`` how many forward-backward
passes of a batch.

At ``gpu`` the same protocol runs on the full Fashion-MNIST with the width-1.0 base model and 3 seeds (on the
CPU, as every trained network here; the CIFAR-10 ResNet-18/20 variant of issue 9 is not implemented).

Every number is over ``seeds`` seeds (mean, spread = sample standard deviation) with a 95 % bootstrap interval
over test images of the seed-mean accuracy (:func:`thesislib.metrics.bootstrap_interval`). Every trained
network is cached under ``checkpoints/`` keyed by its recipe. Wall time per step is measured while training
(under whatever load the machine had).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from matplotlib.figure import Figure
from torch import nn

from thesislib.config import seed_everything, settings_for
from thesislib.metrics import bootstrap_interval, correct_predictions, count_macs
from thesislib.results import atomic_write_bytes, ratio_key

from .common import ResultMixin, first_images, unsaved

NAME = "inn_training"

#: from scratch (``inn_aa``: the ``inn`` network evaluated with anti-aliased resampling)
SCRATCH_METHODS: tuple[str, ...] = ("discrete", "inn", "inn_aa", "inn_small", "slimmable", "posthoc")
#: from the trained checkpoint
FT_METHODS: tuple[str, ...] = ("inn_ft", "obs_ft", "slimmable_ft")
METHODS: tuple[str, ...] = SCRATCH_METHODS + FT_METHODS
#: what each method trains (one cached network per entry and seed; ``discrete``/``obs_ft``: one per width)
_TRAINED = {"inn": "inn", "inn_aa": "inn", "inn_small": "inn_small", "slimmable": "slimmable",
            "posthoc": "discrete", "discrete": "discrete", "inn_ft": "inn_ft", "obs_ft": "obs_ft",
            "slimmable_ft": "slimmable_ft"}

__all__ = ["Settings", "SETTINGS", "settings", "Result", "run", "check_methods", "inn_trained", "METHODS",
           "SCRATCH_METHODS", "FT_METHODS", "plot_accuracy", "accuracy_rows", "steps_rows", "goal_lines"]


@dataclass(frozen=True)
class Settings:
    """Sizes of the INN training experiment at one scale.

    ``ratios``: evaluated kept ratios; ``seeds``: seeds ``seed, seed + 1, ...``; from scratch ``scratch_steps``
    SGD steps at ``scratch_lr`` for every trained network; from the checkpoint ``ft_steps`` at ``ft_lr``;
    ``low``: the smallest trained ratio; ``random_widths``: random widths per sandwich step; ``calib_batches``:
    BatchNorm recalibration batches; ``test_images``: the first test images of the scale (``None``: all);
    ``bootstrap``: bootstrap resamples; ``methods``: the compared methods (:data:`METHODS`).
    """

    scale: str
    ratios: tuple[float, ...]
    seeds: int
    scratch_steps: int
    scratch_lr: float
    ft_steps: int
    ft_lr: float
    low: float
    random_widths: int
    calib_batches: int
    test_images: int | None
    bootstrap: int
    methods: tuple[str, ...] = METHODS


SETTINGS: dict[str, Settings] = {
    "smoke": Settings("smoke", ratios=(1.0, 0.5, 0.25), seeds=1, scratch_steps=3, scratch_lr=0.05, ft_steps=2,
                      ft_lr=0.01, low=0.25, random_widths=2, calib_batches=1, test_images=256, bootstrap=200),
    "cpu": Settings("cpu", ratios=(1.0, 0.75, 0.5, 0.375, 0.25), seeds=2, scratch_steps=300, scratch_lr=0.05,
                    ft_steps=100, ft_lr=0.01, low=0.25, random_widths=2, calib_batches=5, test_images=5000,
                    bootstrap=1000),
    "gpu": Settings("gpu", ratios=(1.0, 0.75, 0.5, 0.375, 0.25), seeds=3, scratch_steps=5000, scratch_lr=0.05,
                    ft_steps=1000, ft_lr=0.01, low=0.25, random_widths=2, calib_batches=20, test_images=None,
                    bootstrap=1000),
}


def settings(scale: str) -> Settings:
    """The settings of ``scale`` (``ValueError`` naming the scales for an unknown one)."""
    return settings_for(SETTINGS, scale)


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """``methods`` as a tuple after checking each is one of :data:`METHODS` (``ValueError`` naming them)."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or '(none given)'} in the comparison; valid: {', '.join(METHODS)}")
    return methods


# ------------------------------------------------------------------------------------------ the networks
def _fashion_settings(scale: str) -> Any:
    from . import fashion_mnist

    return fashion_mnist.settings(scale)


def _fresh(scale: str, seed: int, width_factor: float = 1.0) -> nn.Module:
    """The untrained architecture of the scale's base model (width × ``width_factor``), initialised from ``seed``."""
    from .fashion_mnist import build_model

    fs = _fashion_settings(scale)
    torch.manual_seed(seed)
    return build_model(dataclasses.replace(fs, width=fs.width * width_factor))


def _signature(model: nn.Module) -> str:
    return hashlib.sha256(json.dumps([[k, list(v.shape)] for k, v in model.state_dict().items()]).encode()
                          ).hexdigest()[:10]


def _data_signature(scale: str) -> str:
    from thesislib.data.fashion import FASHION_SCALES

    return repr(FASHION_SCALES[scale])


class _Cache:
    """Trained networks under ``checkpoints/inn_training-<scale>-<kind>-<key>.pt`` (``key``: a hash of the recipe)."""

    def __init__(self, scale: str) -> None:
        self.scale = scale

    def path(self, kind: str, recipe: dict[str, Any]):
        from .fashion_mnist import checkpoint_dir

        key = hashlib.sha256(json.dumps({"scale": self.scale, "kind": kind, **recipe}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:10]
        return checkpoint_dir() / f"{NAME}-{self.scale}-{kind}-{key}.pt"

    def get(self, kind: str, recipe: dict[str, Any], model: nn.Module,
            train_fn: Callable[[nn.Module], dict[str, Any]]) -> tuple[nn.Module, dict[str, Any]]:
        """``model`` with the cached state of this recipe, or trained by ``train_fn(model)`` (which returns the
        record: step seconds, steps, passes) and cached atomically."""
        path = self.path(kind, recipe)
        if path.exists():
            record = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(record["state_dict"])
            return model, record
        started = time.perf_counter()
        record = train_fn(model)
        record = {**record, "train_seconds": time.perf_counter() - started, "recipe": recipe,
                  "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
        buffer = io.BytesIO()
        torch.save(record, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return model, record


@dataclass
class _Data:
    train: Any
    calib: Any
    test: Any
    example: torch.Tensor
    shuffle_seed: int

    def rewind(self) -> Any:
        """The training loader with its shuffling generator reset: every method sees the same batches."""
        gen = getattr(self.train, "generator", None)
        if gen is not None:
            gen.manual_seed(self.shuffle_seed)
        return self.train


def _data(s: Settings, seed: int) -> _Data:
    from thesislib.data import fashion_loaders

    loaders = fashion_loaders(s.scale, seed=seed)
    test = first_images(loaders.test, s.test_images)
    return _Data(loaders.train, loaders.calib, test, next(iter(test))[0][:2], seed + 1)


def _median(seconds: Sequence[float]) -> float:
    return float(statistics.median(seconds)) if seconds else float("nan")


def _sgd_train(model: nn.Module, loader: Iterable, steps: int, lr: float) -> dict[str, Any]:
    """Plain training with the optimiser, schedule and loss of :func:`thesislib.width_training.train_continuous`."""
    from thesislib.pruning.calibration import task_loss
    from thesislib.training import cosine_factor, train
    from thesislib.width_training import StepTimer

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: cosine_factor(k, steps))
    timer = StepTimer()
    train(model, loader, steps, task_loss, optimizer, scheduler, [timer])
    model.eval()
    return {"step_seconds": _median(timer.seconds), "steps": steps, "passes": steps}


def _width_train(net: nn.Module, loader: Iterable, steps: int, lr: float, widths: Any, sandwich: bool,
                 random_widths: int, seed: int) -> dict[str, Any]:
    from thesislib.width_training import train_continuous

    out = train_continuous(net, loader, steps, widths, sandwich=sandwich, distill=sandwich,
                           random_widths=random_widths if sandwich else 1, lr=lr, seed=seed)
    return {"step_seconds": _median(out.step_seconds), "steps": steps, "passes": out.passes}


def _scratch_recipe(s: Settings, seed: int, model: nn.Module, **extra: Any) -> dict[str, Any]:
    return {"version": 1, "arch": _signature(model), "data": _data_signature(s.scale), "steps": s.scratch_steps,
            "lr": s.scratch_lr, "seed": seed, **extra}


def _discrete(s: Settings, seed: int, ratio: float, data: _Data, cache: _Cache) -> tuple[nn.Module, dict]:
    """The plain network of the base architecture at ``ratio`` of every group, trained alone from scratch."""
    from thesislib.continuous import to_continuous
    from thesislib.graph import keep_count

    model = _fresh(s.scale, seed, ratio)
    expected = to_continuous(_fresh(s.scale, seed), data.example, permute=False)
    if {g: keep_count(ratio, n) for g, n in expected.full_widths.items()} != \
            to_continuous(model, data.example, permute=False).full_widths:
        raise ValueError(f"the width multiplier {ratio} does not give keep_count({ratio}, n) channels in every group")
    recipe = _scratch_recipe(s, seed, model, ratio=ratio)
    return cache.get("discrete", recipe, model, lambda m: _sgd_train(m, data.rewind(), s.scratch_steps, s.scratch_lr))


def _scratch_width_net(s: Settings, seed: int, kind: str, data: _Data, cache: _Cache) -> tuple[nn.Module, dict]:
    """``inn`` / ``inn_small`` (ContinuousNet, per-group ratios) or ``slimmable`` (prefixes, sandwich) from scratch."""
    from thesislib.continuous import to_continuous
    from thesislib.slimmable import to_slimmable
    from thesislib.width_training import WidthSampler

    fresh = _fresh(s.scale, seed)
    if kind == "slimmable":
        net = to_slimmable(fresh, data.example, order="none")
        sampler = WidthSampler(net.full_widths, s.low, 1.0, "uniform", per_group=False)
    else:
        net = to_continuous(fresh, data.example, permute=False)
        sampler = WidthSampler(net.full_widths, s.low, 1.0, "uniform" if kind == "inn" else "log_uniform")
    sandwich = kind == "slimmable"
    recipe = _scratch_recipe(s, seed, fresh, low=s.low, random_widths=s.random_widths if sandwich else 1)
    return cache.get(kind, recipe, net, lambda n: _width_train(n, data.rewind(), s.scratch_steps, s.scratch_lr,
                                                               sampler, sandwich, s.random_widths, seed))


def _base(scale: str) -> tuple[nn.Module, str]:
    from .fashion_mnist import checkpoint_path, fashion_resnet18

    return fashion_resnet18(scale, device="cpu"), checkpoint_path(scale).name


def _ft_recipe(s: Settings, seed: int, base_name: str, **extra: Any) -> dict[str, Any]:
    return {"version": 1, "base": base_name, "data": _data_signature(s.scale), "steps": s.ft_steps,
            "lr": s.ft_lr, "seed": seed, **extra}


def _ft_width_net(s: Settings, seed: int, kind: str, data: _Data, cache: _Cache) -> tuple[nn.Module, dict]:
    """``inn_ft`` (INN fine-tuning, uniform per-group ratios) or ``slimmable_ft`` (sandwich) from the checkpoint."""
    from thesislib.continuous import to_continuous
    from thesislib.slimmable import to_slimmable
    from thesislib.width_training import WidthSampler

    base, base_name = _base(s.scale)
    if kind == "slimmable_ft":
        net = to_slimmable(base, data.example, order="l1")
        sampler = WidthSampler(net.full_widths, s.low, 1.0, per_group=False)
    else:
        net = to_continuous(base, data.example, seed=seed)
        sampler = WidthSampler(net.full_widths, s.low, 1.0)
    sandwich = kind == "slimmable_ft"
    recipe = _ft_recipe(s, seed, base_name, low=s.low, random_widths=s.random_widths if sandwich else 1)
    torch.manual_seed(seed)
    return cache.get(kind, recipe, net, lambda n: _width_train(n, data.rewind(), s.ft_steps, s.ft_lr, sampler,
                                                               sandwich, s.random_widths, seed))


def _obs_ft(s: Settings, seed: int, ratio: float, data: _Data, cache: _Cache) -> tuple[nn.Module, dict]:
    """OBS-pruned to ``ratio`` (BatchNorm recalibrated), then ``ft_steps`` of fine-tuning; the checkpoint at 1."""
    from thesislib.pruning import fine_tune, prune

    base, base_name = _base(s.scale)
    if ratio == 1.0:
        return base, {"step_seconds": float("nan"), "steps": 0, "passes": 0}

    def train_fn(model: nn.Module) -> dict[str, Any]:
        pruned = prune(base, "obs", ratio, data.example, calib=data.calib, recalibrate=True,
                       calib_batches=s.calib_batches, seed=seed)
        model.load_state_dict(pruned.state_dict())
        torch.manual_seed(seed)
        started = time.perf_counter()
        fine_tune(model, data.rewind(), s.ft_steps, lr=s.ft_lr)
        return {"step_seconds": (time.perf_counter() - started) / s.ft_steps, "steps": s.ft_steps,
                "passes": s.ft_steps}

    from thesislib.continuous import to_continuous

    shape = to_continuous(base, data.example, permute=False).resample(ratio).export()  # the pruned architecture
    return cache.get("obs_ft", _ft_recipe(s, seed, base_name, ratio=ratio), shape, train_fn)


def inn_trained(scale: str, seed: int = 0, start: str = "scratch", device: torch.device | str | None = None) -> nn.Module:
    """The INN-trained :class:`~thesislib.continuous.ContinuousNet` of this experiment (cached; trained when
    missing): ``start="scratch"`` — the ``inn`` network (random uniform widths from initialisation),
    ``"checkpoint"`` — the ``inn_ft`` network (INN fine-tuning of :func:`.fashion_mnist.fashion_resnet18`).
    Returned at full width, BatchNorm recalibrated there on the scale's calibration images, eval mode."""
    if start not in ("scratch", "checkpoint"):
        raise ValueError(f"start must be 'scratch' or 'checkpoint', got {start!r}")
    s = settings(scale)
    data = _data(s, seed)
    cache = _Cache(scale)
    if start == "scratch":
        net, _ = _scratch_width_net(s, seed, "inn", data, cache)
    else:
        net, _ = _ft_width_net(s, seed, "inn_ft", data, cache)
    net.eval().resample(1.0)
    net.recalibrate(data.calib, s.calib_batches)
    return net.to(device) if device is not None else net


# ------------------------------------------------------------------------------------------ evaluation
def _evaluate_width_net(net: nn.Module, ratios: Sequence[float], data: _Data, batches: int,
                        antialias: bool) -> dict[float, tuple[torch.Tensor, int]]:
    from thesislib.width_training import calibrate_widths

    out = {}
    for r, state in calibrate_widths(net, data.calib, ratios, batches, antialias).items():
        net.restore(state)
        out[r] = (correct_predictions(net, data.test), count_macs(net.export(), data.example[:1]))
    return out


def _evaluate_plain(model: nn.Module, data: _Data, batches: int) -> tuple[torch.Tensor, int]:
    from thesislib.pruning import recalibrate_batchnorm

    recalibrate_batchnorm(model, data.calib, batches)
    return correct_predictions(model, data.test), count_macs(model, data.example[:1])


def _one_seed(s: Settings, seed: int, methods: tuple[str, ...]) -> tuple[dict, dict]:
    """``{method: {ratio: (correct, macs)}}`` and ``{method: training record}`` (per width for one-per-width ones)."""
    from thesislib.continuous import to_continuous

    data, cache = _data(s, seed), _Cache(s.scale)
    evals: dict[str, dict[float, tuple[torch.Tensor, int]]] = {}
    records: dict[str, Any] = {}
    if "discrete" in methods or "posthoc" in methods:
        nets = {}
        for r in (s.ratios if "discrete" in methods else (1.0,)):
            nets[r], records.setdefault("discrete", {})[r] = _discrete(s, seed, r, data, cache)
        if "discrete" in methods:
            evals["discrete"] = {r: _evaluate_plain(m, data, s.calib_batches) for r, m in nets.items()}
        if "posthoc" in methods:
            posthoc = to_continuous(nets[1.0], data.example, seed=seed)
            evals["posthoc"] = _evaluate_width_net(posthoc, s.ratios, data, s.calib_batches, antialias=True)
    for kind in ("inn", "inn_small", "slimmable"):
        wanted = [m for m in methods if _TRAINED[m] == kind and m != "posthoc"]
        if not wanted:
            continue
        net, records[kind] = _scratch_width_net(s, seed, kind, data, cache)
        for m in wanted:
            evals[m] = _evaluate_width_net(net, s.ratios, data, s.calib_batches, antialias=m == "inn_aa")
    for kind in ("inn_ft", "slimmable_ft"):
        if kind in methods:
            net, records[kind] = _ft_width_net(s, seed, kind, data, cache)
            evals[kind] = _evaluate_width_net(net, s.ratios, data, s.calib_batches, antialias=False)
    if "obs_ft" in methods:
        evals["obs_ft"] = {}
        for r in s.ratios:
            model, records.setdefault("obs_ft", {})[r] = _obs_ft(s, seed, r, data, cache)
            evals["obs_ft"][r] = _evaluate_plain(model, data, s.calib_batches)
    return evals, records


# ------------------------------------------------------------------------------------------ the result
@dataclass
class Result(ResultMixin):
    """Every number ``book/`` quotes. Grids are ``{method: {ratio_key: value}}``: ``accuracy`` (seed mean, in
    [0, 1]), ``spread`` (standard deviation over seeds), ``ci_low`` / ``ci_high`` (95 % bootstrap over test
    images of the seed-mean accuracy), ``macs`` (per image); ``records``: one row per method, ratio and seed;
    ``step_seconds`` (median wall time of one training step, measured while training; ``discrete``: the full
    width), ``total_steps`` / ``passes`` (steps and forward-backward passes each method's networks needed);
    ``goals`` (met or not), ``goal_values`` (the compared numbers), ``goal_intervals`` (95 % paired bootstrap
    interval of each goal's difference, in accuracy points over test images)."""

    scale: str
    seeds: list[int]
    ratios: list[float]
    methods: list[str]
    scratch_steps: int
    ft_steps: int
    test_images: int
    records: list[dict[str, Any]]
    accuracy: dict[str, dict[str, float]]
    spread: dict[str, dict[str, float]]
    ci_low: dict[str, dict[str, float]]
    ci_high: dict[str, dict[str, float]]
    macs: dict[str, dict[str, int]]
    step_seconds: dict[str, float]
    discrete_step_seconds: dict[str, float]
    total_steps: dict[str, int]
    passes: dict[str, int]
    step_ratio_inn: float
    step_ratio_slimmable: float
    goals: dict[str, bool]
    goal_values: dict[str, dict[str, float]]
    goal_intervals: dict[str, list[float]]
    goals_met: int
    goals_total: int
    goal_status: dict[str, str]
    wins: dict[str, str]
    losses: dict[str, str]
    base_accuracy: float
    correct: dict[str, dict[float, torch.Tensor]] = unsaved(default_factory=dict)


def _diff_interval(a: torch.Tensor, b: torch.Tensor, resamples: int, seed: int) -> list[float]:
    low, high = bootstrap_interval((a - b) * 100.0, resamples, seed=seed)
    return [low, high]


def _goals(s: Settings, acc: dict, correct: dict, steps: dict) -> tuple[dict, dict, dict]:
    """The four goals of issue 9 on the seed-mean accuracies (headline INN: uniform widths, naive resampling)."""
    goals, values, intervals = {}, {}, {}
    k = ratio_key
    b = s.bootstrap
    if {"inn", "discrete"} <= set(acc):
        values["full_width"] = {"inn": acc["inn"][k(1.0)], "discrete": acc["discrete"][k(1.0)]}
        goals["full_width"] = acc["inn"][k(1.0)] >= acc["discrete"][k(1.0)] - 0.005
        intervals["full_width"] = _diff_interval(correct["inn"][1.0], correct["discrete"][1.0], b, 1)
    if "inn" in acc and 0.5 in s.ratios:
        values["half_width"] = {"inn_half": acc["inn"][k(0.5)], "inn_full": acc["inn"][k(1.0)]}
        goals["half_width"] = acc["inn"][k(0.5)] >= acc["inn"][k(1.0)] - 0.01
        intervals["half_width"] = _diff_interval(correct["inn"][0.5], correct["inn"][1.0], b, 2)
    if {"inn", "slimmable"} <= set(acc):
        margins = {k(r): acc["inn"][k(r)] - acc["slimmable"][k(r)] for r in s.ratios}
        values["beats_slimmable"] = margins
        goals["beats_slimmable"] = all(v >= 0 for v in margins.values())
        worst = min(s.ratios, key=lambda r: margins[k(r)])
        intervals["beats_slimmable"] = _diff_interval(correct["inn"][worst], correct["slimmable"][worst], b, 3)
    if "inn" in acc and 0.25 in s.ratios:
        values["quarter_width"] = {"inn_quarter": acc["inn"][k(0.25)], "inn_full": acc["inn"][k(1.0)],
                                   "fraction": acc["inn"][k(0.25)] / acc["inn"][k(1.0)]}
        goals["quarter_width"] = acc["inn"][k(0.25)] >= 0.9 * acc["inn"][k(1.0)]
        intervals["quarter_width"] = _diff_interval(correct["inn"][0.25], 0.9 * correct["inn"][1.0], b, 4)
    if {"inn_ft", "obs_ft"} <= set(acc):
        high = [r for r in s.ratios if r >= 0.5]
        margins = {k(r): acc["inn_ft"][k(r)] - acc["obs_ft"][k(r)] for r in high}
        values["fine_tuning"] = {**margins, "inn_ft_steps": steps["inn_ft"], "obs_ft_steps": steps["obs_ft"]}
        goals["fine_tuning"] = all(v >= 0 for v in margins.values()) and steps["inn_ft"] < steps["obs_ft"]
        worst = min(high, key=lambda r: margins[k(r)])
        intervals["fine_tuning"] = _diff_interval(correct["inn_ft"][worst], correct["obs_ft"][worst], b, 5)
    return goals, values, intervals


#: ``(method, opponent)`` pairs of :attr:`Result.wins` / :attr:`Result.losses` (keys ``<method>_vs_<opponent>``)
PAIRS: tuple[tuple[str, str], ...] = (("inn", "discrete"), ("inn", "slimmable"), ("inn", "posthoc"), ("inn_aa", "inn"),
                                      ("inn_small", "inn"), ("slimmable", "discrete"), ("inn_ft", "obs_ft"),
                                      ("inn_ft", "slimmable_ft"))


def _ratio_text(ratios: Sequence[float]) -> str:
    return "; ".join(f"{r:g}".replace(".", ",") for r in ratios) or "—"


def _wins(acc: dict, ratios: Sequence[float]) -> tuple[dict[str, str], dict[str, str]]:
    """For each pair of :data:`PAIRS` present: the ratios where the method is at least as accurate as the
    opponent (seed means), and those where it is less accurate, as Russian text (``"1; 0,75"``, ``"—"``)."""
    wins, losses = {}, {}
    for a, b in PAIRS:
        if a in acc and b in acc:
            key = f"{a}_vs_{b}"
            wins[key] = _ratio_text([r for r in ratios if acc[a][ratio_key(r)] >= acc[b][ratio_key(r)]])
            losses[key] = _ratio_text([r for r in ratios if acc[a][ratio_key(r)] < acc[b][ratio_key(r)]])
    return wins, losses


def summarize(s: Settings, seeds: Sequence[int], per_seed: Sequence[tuple[dict, dict]], base_accuracy: float) -> Result:
    """The :class:`Result` of the per-seed evaluations and training records."""
    methods = [m for m in s.methods if m in per_seed[0][0]]
    records, acc, spread, lo, hi, macs, correct = [], {}, {}, {}, {}, {}, {}
    for m in methods:
        for r in s.ratios:
            hits = [ev[m][r][0].double() for ev, _ in per_seed]
            per = [float(h.mean()) for h in hits]
            mean_hits = torch.stack(hits).mean(0)
            correct.setdefault(m, {})[r] = mean_hits
            key = ratio_key(r)
            acc.setdefault(m, {})[key] = float(mean_hits.mean())
            spread.setdefault(m, {})[key] = statistics.stdev(per) if len(per) > 1 else 0.0
            low, high = bootstrap_interval(mean_hits, s.bootstrap, seed=0)
            lo.setdefault(m, {})[key], hi.setdefault(m, {})[key] = low, high
            macs.setdefault(m, {})[key] = int(per_seed[0][0][m][r][1])
            records += [{"part": "scratch" if m in SCRATCH_METHODS else "finetune", "method": m, "ratio": r,
                         "seed": seed, "accuracy": a, "macs": int(ev[m][r][1])}
                        for seed, a, (ev, _) in zip(seeds, per, per_seed)]
    train_records = [rec for _, rec in per_seed]

    def record_of(m: str, seed_rec: dict) -> Any:
        return seed_rec.get(_TRAINED[m])

    step_seconds, total_steps, passes, discrete_steps = {}, {}, {}, {}
    for m in methods:
        recs = [record_of(m, rec) for rec in train_records]
        if m in ("discrete", "obs_ft"):
            per_width = [rec for rr in recs for rec in rr.values()]
            total_steps[m] = sum(rec["steps"] for rec in recs[0].values())
            passes[m] = sum(rec["passes"] for rec in recs[0].values())
            if m == "discrete":
                step_seconds[m] = statistics.median(rr[1.0]["step_seconds"] for rr in recs)
                discrete_steps.update({ratio_key(r): statistics.median(rr[r]["step_seconds"] for rr in recs)
                                       for r in recs[0]})
            else:
                timed = [rec["step_seconds"] for rec in per_width if rec["steps"] > 0]
                step_seconds[m] = statistics.median(timed) if timed else float("nan")
        elif m == "posthoc":
            total_steps[m], passes[m] = recs[0][1.0]["steps"], recs[0][1.0]["passes"]
            step_seconds[m] = statistics.median(rr[1.0]["step_seconds"] for rr in recs)
        else:
            total_steps[m], passes[m] = recs[0]["steps"], recs[0]["passes"]
            step_seconds[m] = statistics.median(rec["step_seconds"] for rec in recs)
    full = step_seconds.get("discrete", float("nan"))
    goals, values, intervals = _goals(s, acc, correct, total_steps)
    wins, losses = _wins(acc, s.ratios)
    return Result(scale=s.scale, seeds=list(seeds), ratios=list(s.ratios), methods=methods,
                  scratch_steps=s.scratch_steps, ft_steps=s.ft_steps, test_images=int(correct[methods[0]][1.0].numel()),
                  records=records, accuracy=acc, spread=spread, ci_low=lo, ci_high=hi, macs=macs,
                  step_seconds=step_seconds, discrete_step_seconds=discrete_steps, total_steps=total_steps,
                  passes=passes, step_ratio_inn=step_seconds.get("inn", float("nan")) / full,
                  step_ratio_slimmable=step_seconds.get("slimmable", float("nan")) / full, goals=goals,
                  goal_values=values, goal_intervals=intervals, goals_met=sum(goals.values()),
                  goals_total=len(goals), goal_status={k: "выполнена" if v else "не выполнена" for k, v in goals.items()},
                  wins=wins, losses=losses, base_accuracy=base_accuracy, correct=correct)


def run(settings: Settings, seed: int = 0, device: torch.device | str | None = None) -> Result:
    """The whole experiment at ``settings`` over seeds ``seed .. seed + settings.seeds - 1`` (CPU; ``device`` is
    accepted for the common signature and must be CPU or ``None``: cached networks are trained there)."""
    from thesislib.metrics import accuracy

    s = settings
    methods = check_methods(s.methods)
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"inn_training runs on the CPU (device=None or 'cpu'), got {device!r}")
    if s.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {s.seeds}")
    if 1.0 not in s.ratios:
        raise ValueError(f"ratios must include 1.0 (the full width), got {s.ratios}")
    seeds = [seed + i for i in range(s.seeds)]
    per_seed = []
    for sd in seeds:
        seed_everything(sd)
        per_seed.append(_one_seed(s, sd, methods))
    base_accuracy = accuracy(_base(s.scale)[0], _data(s, seed).test) if set(methods) & set(FT_METHODS) else float("nan")
    return summarize(s, seeds, per_seed, base_accuracy)


# ------------------------------------------------------------------------------------------ presentation
def goal_lines(result: Result) -> list[str]:
    """One line per goal: met / not met, with the compared numbers."""
    names = {"full_width": "INN at r = 1 within 0.5 pt of the discrete net (same steps)",
             "half_width": "INN at r = 0.5 within 1 pt of its own full width",
             "beats_slimmable": "INN >= universally slimmable at every width",
             "quarter_width": "INN at r = 0.25 >= 90 % of its own full-width accuracy",
             "fine_tuning": "one INN fine-tune >= OBS + fine-tune per width at r >= 0.5, fewer total steps"}
    lines = []
    for key, met in result.goals.items():
        vals = ", ".join(f"{k}={v:.4g}" for k, v in result.goal_values[key].items())
        lo, hi = result.goal_intervals[key]
        lines.append(f"[{'met' if met else 'NOT met'}] {names[key]}: {vals} (95 % CI of the difference, pt: "
                     f"[{lo:.2f}, {hi:.2f}])")
    return lines


def accuracy_rows(result: Result, part: str | None = None) -> list[dict[str, Any]]:
    """Rows of the book's table: per method, accuracy (%) per ratio as ``mean ± spread``, MACs (M) at each ratio
    in the last row."""
    methods = [m for m in result.methods if part is None or (m in SCRATCH_METHODS) == (part == "scratch")]
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m}
        for r in result.ratios:
            k = ratio_key(r)
            row[k] = f"{100 * result.accuracy[m][k]:.1f} ± {100 * result.spread[m][k]:.1f}"
        rows.append(row)
    rows.append({"method": "MMAC", **{ratio_key(r): f"{result.macs[methods[0]][ratio_key(r)] / 1e6:.2f}"
                                       for r in result.ratios}})
    return rows


def steps_rows(result: Result) -> list[dict[str, Any]]:
    """Rows of the cost table: total steps, forward-backward passes and measured seconds per step, per method."""
    return [{"method": m, "steps": result.total_steps[m], "passes": result.passes[m],
             "s_per_step": round(result.step_seconds[m], 4)} for m in result.methods if m in result.total_steps]


def plot_accuracy(result: Result, part: str = "scratch", title: str | None = None) -> Figure:
    """Accuracy (%) against the kept ratio (left) and MMAC per image (right), one line per method of ``part``
    (``"scratch"`` or ``"finetune"``), the 95 % bootstrap band shaded."""
    from thesislib.plotting import figure, finish, method_style, plot_methods

    if part not in ("scratch", "finetune"):
        raise ValueError(f"part must be 'scratch' or 'finetune', got {part!r}")
    methods = [m for m in result.methods if (m in SCRATCH_METHODS) == (part == "scratch")]
    ratios = sorted(result.ratios)
    keys = [ratio_key(r) for r in ratios]
    fig, axes = figure(2, width=6.0, height=4.5)
    acc = {m: [100 * result.accuracy[m][k] for k in keys] for m in methods}
    xs = {"ratio": {m: ratios for m in methods}, "mmacs": {m: [result.macs[m][k] / 1e6 for k in keys] for m in methods}}
    for ax, (xlabel, x) in zip(axes, xs.items()):
        plot_methods(ax, x, acc)
        for m in methods:
            ax.fill_between(x[m], [100 * result.ci_low[m][k] for k in keys], [100 * result.ci_high[m][k] for k in keys],
                            color=method_style(m)["color"], alpha=0.15, linewidth=0)
        finish(ax, xlabel, "accuracy", legend=xlabel == "mmacs")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
