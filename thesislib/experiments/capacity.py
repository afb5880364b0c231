"""``notebooks/capacity.ipynb``: capacity estimators against measured knees, and allocations at equal cost.

On the trained Fashion-MNIST ResNet-18 of a scale (:mod:`.fashion_mnist`), converted with
:func:`thesislib.continuous.to_continuous`:

1. the weight and feature spectra of every channel group;
2. every estimator's predicted widths against the measured knees (anti-aliased resampling of one
   group, BatchNorm recalibration, accuracy within ``tol``), ranked by Spearman's ρ on widths and on
   width fractions ``w/n``, with the ``size`` baseline (prediction = n);
3. the band-limited-by-training estimator (Sobolev fine-tuning, :mod:`thesislib.capacity.smoothing`);
4. accuracy, MACs and measured latency of uniform widths, the Nyquist (capacity-proportional)
   allocation and the greedy MACs- and latency-aware allocations at equal MAC budgets, with and
   without anti-aliasing, every model with the same BatchNorm recalibration.
5. Nyquist where it can hold: the same estimators and knees on the INN-trained networks of
   :mod:`.inn_training` (``inn_trained(scale, seed, start)``: random widths from scratch, and one INN
   fine-tuning of the checkpoint) — does ρ(w/n) against the knees rise above the discretely trained
   net's? ``low_band_power``: the mean share of a group's weight-spectrum power in its first
   ``keep_count(0.25, n)`` DCT bands (band-limitedness read directly).

:func:`run` computes every number the book quotes (:class:`Result`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Subset

from thesislib.capacity.allocation import CostModel, allocate, proportional_widths, uniform_widths
from thesislib.capacity.estimators import METHODS, capacities_at, feature_spectra, weight_spectrum
from thesislib.capacity.knee import KneeTable, knee_table
from thesislib.capacity.profiling import profile
from thesislib.config import seed_everything, settings_for
from thesislib.results import ratio_key
from thesislib.runtime import model_device

from .common import ResultMixin, unsaved

NAME = "capacity"


@dataclass(frozen=True)
class Settings:
    """Sizes of the capacity experiment at one scale."""

    scale: str
    eval_images: int          # fixed test subset for knees and allocations
    recal_batches: int        # BatchNorm recalibration batches after every resampling
    calib_images: int         # calibration images for the "output" and "features" estimators
    knee_grid: int | None     # candidate widths ceil(i * n / grid) per group (None: every width)
    budgets: tuple[float, ...]
    latency_batch: int
    latency_repeats: int
    smooth_steps: int = 60    # Sobolev fine-tuning steps of the band-limited-by-training estimator
    smooth_penalty: float = 50.0
    smooth_lr: float = 0.02
    tol: float = 0.01
    energies: tuple[float, ...] = (0.5, 0.7, 0.9, 0.99)
    inn_starts: tuple[str, ...] = ("scratch", "checkpoint")  # INN-trained nets of .inn_training (() : none)


SETTINGS: dict[str, Settings] = {
    "smoke": Settings("smoke", eval_images=128, recal_batches=1, calib_images=16, knee_grid=4,
                      budgets=(0.5,), latency_batch=16, latency_repeats=3, tol=0.02, smooth_steps=3,
                      energies=(0.9, 0.99)),
    "cpu": Settings("cpu", eval_images=1000, recal_batches=5, calib_images=64, knee_grid=16,
                    budgets=(0.3, 0.5, 0.7), latency_batch=64, latency_repeats=10),
    "gpu": Settings("gpu", eval_images=10000, recal_batches=20, calib_images=1024, knee_grid=None,
                    budgets=(0.2, 0.3, 0.5, 0.7), latency_batch=256, latency_repeats=50),
}


def settings(scale: str) -> Settings:
    """The settings of ``scale`` (``ValueError`` naming the scales for an unknown one)."""
    return settings_for(SETTINGS, scale)


@dataclass
class Setup:
    """The converted model and the data every step of the experiment shares."""

    cnet: Any
    calib: DataLoader
    train: DataLoader
    calib_x: torch.Tensor     # the estimators' calibration images
    evaluate: Callable[[Any], float]
    recalibrate: Callable[[Any], None]
    example: torch.Tensor
    settings: Settings
    base_accuracy: float
    device: torch.device


def setup(s: Settings, seed: int = 0, device: torch.device | str | None = None) -> Setup:
    """Load the scale's trained ResNet-18, convert it, and build evaluate/recalibrate callbacks."""
    from thesislib.continuous import to_continuous
    from thesislib.data import fashion_loaders
    from thesislib.metrics import accuracy

    from .fashion_mnist import fashion_resnet18

    seed_everything(seed)
    model = fashion_resnet18(s.scale, device=device)
    device = model_device(model)
    loaders = fashion_loaders(s.scale, seed=seed)
    test = loaders.test.dataset
    subset = Subset(test, list(range(min(s.eval_images, len(test)))))
    eval_loader = DataLoader(subset, batch_size=256, shuffle=False)
    xs, seen = [], 0
    for x, _ in loaders.calib:
        xs.append(x)
        seen += len(x)
        if seen >= s.calib_images:
            break
    calib_x = torch.cat(xs)[:s.calib_images].to(device)
    example = calib_x[:8]
    base = accuracy(model, eval_loader, device)
    cnet = to_continuous(model, example).to(device).eval()

    def evaluate(net: Any) -> float:
        return accuracy(net, eval_loader, device)

    def recalibrate(net: Any) -> None:
        net.recalibrate(loaders.calib, batches=s.recal_batches)

    return Setup(cnet, loaders.calib, loaders.train, calib_x, evaluate, recalibrate, example, s, base, device)

def spectra(st: Setup) -> dict[str, dict[str, list[float]]]:
    """``{"weights" | "features": {group: normalised DCT power}}`` of every group."""
    cnet = st.cnet
    feats = feature_spectra(cnet, st.calib_x)
    return {"weights": {g.name: weight_spectrum(cnet, g.name).tolist() for g in cnet.groups},
            "features": {n: p.tolist() for n, p in feats.items()}}


def predictions(st: Setup) -> dict[str, dict[str, int]]:
    """``{"<method>@<energy>": {group: predicted width}}`` for every estimator and energy."""
    out = {}
    for m in METHODS:
        for e, widths in capacities_at(st.cnet, st.settings.energies, m, st.calib_x).items():
            out[f"{m}@{e:g}"] = widths
    return out


def knees(st: Setup, predicted: dict[str, dict[str, int]]) -> KneeTable:
    """Measured knees of every group and their comparison with ``predicted``."""
    s = st.settings
    return knee_table(st.cnet, st.evaluate, predicted, tol=s.tol, antialias=True,
                      recalibrate=st.recalibrate, grid=s.knee_grid)


def smoothed(st: Setup) -> dict[str, Any]:
    """The band-limited-by-training estimator: Sobolev fine-tuning, then weight spectra and new knees.

    Runs on ``st.cnet`` and restores it afterwards; the knees are those of the
    fine-tuned model (its own full-width accuracy is the reference).
    """
    from thesislib.capacity.smoothing import smooth_finetune

    s = st.settings
    with st.cnet.preserved(parameters=True):
        history = smooth_finetune(st.cnet, st.train, s.smooth_steps, penalty=s.smooth_penalty, lr=s.smooth_lr,
                                  device=st.device)
        st.cnet.eval()
        accuracy = st.evaluate(st.cnet)
        predicted = {f"smoothed_weights@{e:g}": widths
                     for e, widths in capacities_at(st.cnet, s.energies, "weights").items()}
        table = knee_table(st.cnet, st.evaluate, predicted, tol=s.tol, antialias=True,
                           recalibrate=st.recalibrate, grid=s.knee_grid)
    return {"accuracy": accuracy, "penalty_first": history[0], "penalty_last": history[-1], "table": table}


def low_band_power(cnet: Any, fraction: float = 0.25) -> float:
    """Mean over groups of the share of the weight-spectrum power (:func:`weight_spectrum`) in the first
    ``keep_count(fraction, n)`` DCT bands: 1.0 for channel functions band-limited to that many samples."""
    from thesislib.graph import keep_count

    shares = []
    for g in cnet.groups:
        p = np.asarray(weight_spectrum(cnet, g.name), dtype=np.float64)
        if p.sum() > 0:
            shares.append(float(p[:keep_count(fraction, int(g.size))].sum() / p.sum()))
    return float(np.mean(shares)) if shares else float("nan")


def _finite_max(values: Mapping[str, Any]) -> float | None:
    finite = [float(v) for k, v in values.items() if k != "size" and v is not None and np.isfinite(v)]
    return max(finite) if finite else None


def inn_capacity(st: Setup, start: str, seed: int = 0) -> dict[str, Any]:
    """Every estimator and the knees on the INN-trained net ``start`` of :func:`.inn_training.inn_trained`
    (same knee protocol as the discrete net: anti-aliased resampling of one group, BatchNorm recalibrated,
    its own full-width accuracy within ``tol``). Returns its full-width accuracy, ``low_band_power``, the
    knee table (``table``) and the best estimator's ρ on widths and on w/n."""
    from .inn_training import inn_trained

    s = st.settings
    cnet = inn_trained(s.scale, seed=seed, start=start, device=st.device).eval()
    predicted = {f"{m}@{e:g}": widths for m in METHODS
                 for e, widths in capacities_at(cnet, s.energies, m, st.calib_x).items()}
    table = knee_table(cnet, st.evaluate, predicted, tol=s.tol, antialias=True, recalibrate=st.recalibrate,
                       grid=s.knee_grid)
    best = best_estimator(table, s.energies)
    return {"start": start, "accuracy": st.evaluate(cnet), "low_band_power": low_band_power(cnet), "table": table,
            "best_estimator": best, "best_spearman": table.spearman[best],
            "best_spearman_ratio": table.spearman_ratio[best], "max_spearman_ratio": _finite_max(table.spearman_ratio)}


def _measure(st: Setup, widths: dict[str, int], antialias: bool, model: CostModel,
             macs_model: CostModel) -> dict[str, Any]:
    cnet = st.cnet
    with cnet.preserved(parameters=True):
        cnet.resample(widths, antialias=antialias)
        st.recalibrate(cnet)
        cnet.eval()
        accuracy = st.evaluate(cnet)
        plain = cnet.export().eval()
    x = st.example[:1].repeat(st.settings.latency_batch, 1, 1, 1)
    prof = profile(plain, x, repeats=st.settings.latency_repeats, warmup=2, threads=1)
    return {"accuracy": accuracy, "macs": prof.macs, "macs_fraction": macs_model.fraction(widths),
            "modelled_latency_fraction": model.fraction(widths), "latency_s": prof.latency}


def allocations(st: Setup, capacity: dict[str, int], knees: dict[str, int] | None = None) -> dict[str, Any]:
    """Uniform, Nyquist (capacity-proportional) and greedy MACs/latency-aware widths per budget.

    ``capacity`` is the best estimator's prediction; with ``knees`` the greedy
    latency-aware allocation is also run on the measured knees as capacities
    (``greedy_latency_knees``: what a perfect estimator would give). Each allocation is evaluated
    with and without anti-aliasing, always after BatchNorm recalibration; latency
    is measured on the exported plain model (batch ``latency_batch``, 1 thread).
    """
    cnet, s = st.cnet, st.settings
    with cnet.preserved(parameters=True):
        cnet.resample(cnet.full_widths, antialias=False)
        full_plain = cnet.export().eval()
    x = st.example[:1].repeat(s.latency_batch, 1, 1, 1)
    prof = profile(full_plain, x, repeats=s.latency_repeats, warmup=2, threads=1)
    lat_model, macs_model = CostModel(cnet, prof, "latency"), CostModel(cnet, prof, "macs")
    full = {"accuracy": None, "macs": prof.macs, "latency_s": prof.latency}
    with cnet.preserved(parameters=True):
        cnet.resample(cnet.full_widths, antialias=False)
        st.recalibrate(cnet)
        cnet.eval()
        full["accuracy"] = st.evaluate(cnet)
    out: dict[str, Any] = {"full": full, "budgets": {}}
    for budget in s.budgets:
        schemes = {
            "uniform": uniform_widths(cnet, budget, "macs", profile=prof),
            "nyquist": proportional_widths(cnet, budget, capacity, "macs", profile=prof),
            "greedy_macs": allocate(cnet, budget, "macs", capacity=capacity, profile=prof),
            "greedy_latency": allocate(cnet, budget, "latency", capacity=capacity, profile=prof),
        }
        if knees is not None:
            schemes["greedy_latency_knees"] = allocate(cnet, budget, "latency", capacity=knees, profile=prof)
        row = {}
        for name, widths in schemes.items():
            with_aa = _measure(st, widths, True, lat_model, macs_model)
            without = _measure(st, widths, False, lat_model, macs_model)
            row[name] = {**with_aa, "accuracy_naive": without["accuracy"], "widths": widths}
        out["budgets"][ratio_key(budget)] = row
    return out



@dataclass
class Result(ResultMixin):
    """Every number ``book/`` quotes from this notebook.

    ``best_estimator``: the estimator with the highest Spearman ρ against the knees (``size`` excluded);
    ``best_spearman`` / ``best_spearman_ratio``: its ρ on widths and on ``w/n``; ``size_spearman``: ρ of
    the ``size`` baseline; ``accuracy_at_equal_cost``: ``{ratio_key(budget): {allocation: accuracy}}``
    (anti-aliased, BatchNorm recalibrated).
    """

    base_accuracy: float
    groups: dict[str, int]
    predicted: dict[str, dict[str, int]]
    knees: dict[str, int]
    spearman: dict[str, float]
    spearman_ratio: dict[str, float]
    mean_relative_error: dict[str, float]
    best_estimator: str
    best_spearman: float
    best_spearman_ratio: float
    size_spearman: float
    allocations: dict[str, Any]
    accuracy_at_equal_cost: dict[str, dict[str, float]]
    smoothed: dict[str, Any]
    max_spearman_ratio: float | None = None  # highest finite ρ(w/n) over the estimators (size excluded)
    low_band_power: float | None = None
    inn: dict[str, Any] = field(default_factory=dict)  # {start: knee table lists, ρ, accuracy, low_band_power}
    inn_rises: dict[str, bool] = field(default_factory=dict)  # {start: INN best ρ(w/n) > discrete best ρ(w/n)}
    spectra: dict[str, dict[str, list[float]]] = unsaved(default_factory=dict)
    table: KneeTable | None = unsaved(default=None)
    smoothed_table: KneeTable | None = unsaved(default=None)


    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, every key a plain identifier: group names (which hold dots) become the ordered list
        ``group_names``, with per-group values as lists in that order (``group_sizes``, ``knees``,
        ``predicted[estimator]``, allocation ``widths``); estimator names become :func:`estimator_key`
        (``weights@0.99`` → ``weights_at_0_99``), their names listed in ``estimators``."""
        names = list(self.groups)
        out = super().to_dict()
        out.update(_table_lists(self.predicted, self.knees, self.spearman, self.spearman_ratio,
                                self.mean_relative_error, names))
        out["group_names"], out["group_sizes"] = names, [self.groups[g] for g in names]
        del out["groups"]
        smooth = dict(self.smoothed)
        if "predicted" in smooth:
            smooth.update(_table_lists(smooth["predicted"], smooth["knees"], smooth["spearman"],
                                       smooth["spearman_ratio"], smooth["mean_relative_error"], names))
        out["smoothed"] = smooth
        inn = {}
        for start, entry in self.inn.items():
            entry = dict(entry)
            if "predicted" in entry:
                entry.update(_table_lists(entry["predicted"], entry["knees"], entry["spearman"],
                                          entry["spearman_ratio"], entry["mean_relative_error"], names))
            inn[start] = entry
        out["inn"] = inn
        alloc = dict(self.allocations)
        alloc["budgets"] = {b: {scheme: {**r, "widths": [r["widths"][g] for g in names]} if "widths" in r else r
                                for scheme, r in row.items()} for b, row in alloc.get("budgets", {}).items()}
        out["allocations"] = alloc
        return out


def estimator_key(name: str) -> str:
    """An estimator name as a results key: ``"weights@0.99"`` → ``"weights_at_0_99"`` (no dots)."""
    return name.replace("@", "_at_").replace(".", "_")


def _table_lists(predicted: Mapping[str, Mapping[str, int]], knees: Mapping[str, int], spearman: Mapping[str, float],
                 spearman_ratio: Mapping[str, float], error: Mapping[str, float], names: list[str]) -> dict[str, Any]:
    return {"estimators": list(spearman),
            "predicted": {estimator_key(e): [w[g] for g in names] for e, w in predicted.items()},
            "knees": [knees[g] for g in names],
            "spearman": {estimator_key(e): v for e, v in spearman.items()},
            "spearman_ratio": {estimator_key(e): v for e, v in spearman_ratio.items()},
            "mean_relative_error": {estimator_key(e): v for e, v in error.items()}}


def best_estimator(table: KneeTable, energies: tuple[float, ...]) -> str:
    """The table's best estimator by Spearman ρ, else (no finite ρ) ``weights@<highest energy>``."""
    return table.best or f"weights@{energies[-1]:g}"


def accuracy_at_equal_cost(allocations: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``{budget key: {allocation: accuracy}}`` of an :func:`allocations` result."""
    return {b: {name: r["accuracy"] for name, r in row.items()} for b, row in allocations["budgets"].items()}


def _table_dict(table: KneeTable) -> dict[str, Any]:
    return {"predicted": table.predicted, "knees": table.knees, "spearman": table.spearman,
            "spearman_ratio": table.spearman_ratio, "mean_relative_error": table.mean_relative_error}


def headline(table: KneeTable, best: str, alloc: Mapping[str, Any], base_accuracy: float,
             groups: Mapping[str, int], smoothed: Mapping[str, Any] | None = None,
             smoothed_table: KneeTable | None = None,
             spectra: Mapping[str, Any] | None = None, inn: Mapping[str, Mapping[str, Any]] | None = None,
             low_band: float | None = None) -> Result:
    """The :class:`Result` of a knee table, the chosen estimator ``best`` and the allocations; ``inn``:
    :func:`inn_capacity` per start (its ``table`` is flattened into the result)."""
    if best not in table.spearman:
        raise ValueError(f"estimator {best!r} is not in the knee table: {', '.join(table.spearman)}")
    smooth = dict(smoothed or {})
    if smoothed_table is not None:
        smooth.update(_table_dict(smoothed_table))
    discrete_rho = table.spearman_ratio[best]
    inn_out: dict[str, Any] = {}
    rises: dict[str, bool] = {}
    for start, entry in (inn or {}).items():
        entry = dict(entry)
        inn_table = entry.pop("table", None)
        if inn_table is not None:
            entry.update(_table_dict(inn_table))
        inn_out[start] = entry
        rho = entry.get("best_spearman_ratio")
        rises[start] = bool(rho is not None and discrete_rho is not None and np.isfinite(rho)
                            and np.isfinite(discrete_rho) and rho > discrete_rho)
    return Result(base_accuracy=base_accuracy, groups=dict(groups), **_table_dict(table), best_estimator=best,
                  best_spearman=table.spearman[best], best_spearman_ratio=discrete_rho,
                  size_spearman=table.spearman["size"], allocations=dict(alloc),
                  accuracy_at_equal_cost=accuracy_at_equal_cost(alloc), smoothed=smooth,
                  max_spearman_ratio=_finite_max(table.spearman_ratio), low_band_power=low_band,
                  inn=inn_out, inn_rises=rises,
                  spectra=dict(spectra or {}), table=table, smoothed_table=smoothed_table)


def run(settings: Settings, seed: int = 0, device: torch.device | str | None = None,
        log: Callable[[str], None] = print) -> Result:
    """The whole experiment at ``settings`` (``log`` gets one line per finished stage)."""
    import time

    t0 = time.perf_counter()
    st = setup(settings, seed, device)
    log(f"groups: {len(st.cnet.groups)}, base accuracy on the eval subset: {st.base_accuracy:.4f}")
    spec = spectra(st)
    predicted = predictions(st)
    log(f"estimators done ({time.perf_counter() - t0:.1f} s)")
    table = knees(st, predicted)
    log(f"knees done ({time.perf_counter() - t0:.1f} s)")
    smooth = smoothed(st)
    smooth_table = smooth.pop("table")
    log(f"band-limited-by-training estimator done ({time.perf_counter() - t0:.1f} s)")
    best = best_estimator(table, settings.energies)
    alloc = allocations(st, predicted[best], table.knees)
    log(f"allocations done ({time.perf_counter() - t0:.1f} s)")
    inn = {}
    for start in settings.inn_starts:
        inn[start] = inn_capacity(st, start, seed)
        log(f"INN-trained net ({start}) estimators and knees done ({time.perf_counter() - t0:.1f} s)")
    return headline(table, best, alloc, st.base_accuracy, {g.name: int(g.size) for g in st.cnet.groups},
                    smooth, smooth_table, spec, inn=inn, low_band=low_band_power(st.cnet))


def inn_goal_lines(result: Result) -> list[str]:
    """Per INN-trained net: does the best estimator's ρ(w/n) rise above the discretely trained net's?"""
    lines = []
    for start, entry in result.inn.items():
        state = "met" if result.inn_rises.get(start) else "not met"
        rho, disc = entry.get("best_spearman_ratio"), result.best_spearman_ratio
        lines.append(f"INN ({start}): ρ(w/n) of its best estimator {entry.get('best_estimator')} "
                     f"{_fmt(rho)} above the discrete net's {_fmt(disc)} ({result.best_estimator}): {state}; "
                     f"low-band power {_fmt(entry.get('low_band_power'))} vs {_fmt(result.low_band_power)}")
    return lines


def inn_rows(result: Result) -> list[dict[str, Any]]:
    """Rows of the book's table: the discrete net and each INN-trained net — accuracy, best estimator,
    its ρ and ρ(w/n), the highest ρ(w/n), the low-band power."""
    rows = [{"сеть": "дискретная", "точность": result.base_accuracy, "лучший оценщик": result.best_estimator,
             "ρ": result.best_spearman, "ρ (w/n)": result.best_spearman_ratio,
             "max ρ (w/n)": result.max_spearman_ratio, "доля мощности в n/4": result.low_band_power}]
    for start, e in result.inn.items():
        rows.append({"сеть": f"INN ({start})", "точность": e.get("accuracy"), "лучший оценщик": e.get("best_estimator"),
                     "ρ": e.get("best_spearman"), "ρ (w/n)": e.get("best_spearman_ratio"),
                     "max ρ (w/n)": e.get("max_spearman_ratio"), "доля мощности в n/4": e.get("low_band_power")})
    return [{k: ("—" if v is None else v) for k, v in r.items()} for r in rows]


def _fmt(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


# -------------------------------------------------------------------------------------------- tables
def estimator_rows(result: Result) -> list[dict[str, Any]]:
    """Rows of the book's estimator table: ρ on widths, ρ on w/n, mean relative error."""
    return [{"оценщик": e, "ρ (ширины)": rho, "ρ (w/n)": result.spearman_ratio.get(e, "—"),
             "средняя отн. ошибка": result.mean_relative_error.get(e, "—")} for e, rho in result.spearman.items()]


def knee_rows(result: Result, reference: str = "weights@0.99") -> list[dict[str, Any]]:
    """Rows of the book's knee table: group size, measured knee, the best estimator's and ``reference``'s widths."""
    best = result.best_estimator
    return [{"группа": g, "n": n, "колено": result.knees[g], best: result.predicted[best][g],
             reference: result.predicted[reference][g]} for g, n in result.groups.items()]


def allocation_rows(result: Result) -> list[dict[str, Any]]:
    """Rows of the book's allocation table: accuracy (anti-aliased and naive), MAC fraction, latency."""
    return [{"бюджет MAC": float(b[1:].replace("_", ".")), "распределение": name, "точность": r["accuracy"],
             "наивно": r["accuracy_naive"], "доля MAC": r["macs_fraction"], "задержка, мс": 1e3 * r["latency_s"]}
            for b, row in result.allocations["budgets"].items() for name, r in row.items()]


# ------------------------------------------------------------------------------------------- figures
def plot_spectra(result: Result) -> Figure:
    """Cumulative DCT energy along the permuted channel axis per group: weights (left), features (right)."""
    from thesislib.plotting import figure, finish

    fig, axes = figure(2, width=5.5, height=4.0, sharey=True)
    for ax, kind, title in zip(axes, ("weights", "features"), ("спектр весов", "спектр признаков")):
        for name, power in result.spectra[kind].items():
            p = np.asarray(power)
            k = np.arange(1, len(p) + 1) / len(p)
            ax.plot(k, np.cumsum(p) / p.sum(), lw=1, label=name)
        ax.axhline(0.99, color="k", ls=":", lw=0.8)
        finish(ax, "dct_fraction", "energy" if kind == "weights" else "", title=title, legend=False)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def plot_predicted_vs_knee(result: Result) -> Figure:
    """Predicted width fraction against the measured knee fraction: one panel per estimator, one marker
    per energy, ρ and ρ(w/n) in the legend."""
    from thesislib.plotting import figure, finish, method_label, method_style

    methods = list(dict.fromkeys(e.split("@")[0] for e in result.predicted if "@" in e))
    fig, axes = figure(len(methods), width=4.0, height=3.6, sharey=True, squeeze=False)
    names = list(result.knees)
    x = [result.knees[n] / result.groups[n] for n in names]
    for ax, method in zip(axes[0], methods):
        color = method_style(method)["color"]
        for marker, est in zip("os^vD", [e for e in result.predicted if e.startswith(method + "@")]):
            y = [result.predicted[est][n] / result.groups[n] for n in names]
            ax.scatter(x, y, s=18, marker=marker, color=color, alpha=0.5 + 0.5 * (marker == "o"),
                       label=f"{est}: ρ={result.spearman[est]:.2f}, ρ(w/n)={result.spearman_ratio[est]:.2f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        finish(ax, "knee", "predicted" if ax is axes[0][0] else "", title=method_label(method))
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_allocations(result: Result) -> Figure:
    """Accuracy against the MAC fraction (left) and the measured latency fraction (right) per allocation;
    solid: anti-aliased, dashed: naive resampling."""
    from thesislib.plotting import figure, finish, method_style

    alloc = result.allocations
    fig, axes = figure(2, width=5.5, height=4.0, sharey=True)
    schemes = list(next(iter(alloc["budgets"].values())))
    for name in schemes:
        rows = [alloc["budgets"][b][name] for b in alloc["budgets"]]
        style = method_style(name)
        for ax, key in zip(axes, ("macs", "latency_s")):
            xs = [r[key] / alloc["full"][key] for r in rows]
            ax.plot(xs, [100 * r["accuracy"] for r in rows], "-", marker=style["marker"], color=style["color"],
                    label=style["label"])
            ax.plot(xs, [100 * r["accuracy_naive"] for r in rows], "--", marker="x", color=style["color"])
    for ax, label in zip(axes, ("macs", "latency")):
        ax.axhline(100 * alloc["full"]["accuracy"], color="k", ls=":", lw=0.8)
        finish(ax, label, "accuracy" if ax is axes[0] else "", legend=ax is axes[0])
    fig.tight_layout()
    return fig
