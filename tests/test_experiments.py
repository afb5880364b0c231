"""thesislib.experiments (one module per notebook), the training loop and the shared plotting style.

Headline derivations are checked on small synthetic records whose answer is known; ``run()`` itself
runs at smoke scale in the notebooks (nbval in ``make test``).
"""

from __future__ import annotations

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesislib.capacity.knee import compare
from thesislib.config import SCALES, settings_for
from thesislib.experiments import EXPERIMENTS, baselines, capacity, common, fashion_mnist, super_resolution
from thesislib.plotting import AXIS_LABELS, METHOD_LABELS, method_label, method_style
from thesislib.results import check_keys, ratio_key
from thesislib.training import Callback, train


# ----------------------------------------------------------------------------------------- settings
def test_registry_follows_the_runner_order() -> None:
    from thesislib.reproduce import NOTEBOOKS

    assert tuple(EXPERIMENTS) == NOTEBOOKS
    for name, module in EXPERIMENTS.items():
        assert module.NAME == name
        assert callable(module.run) and callable(module.settings)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_settings_cover_every_scale_are_frozen_and_reject_unknown(name: str) -> None:
    module = EXPERIMENTS[name]
    assert tuple(module.SETTINGS) == SCALES
    for scale in SCALES:
        s = module.settings(scale)
        assert s is module.SETTINGS[scale] and s.scale == scale
        assert dataclasses.is_dataclass(s)
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.scale = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown scale 'nonsense': choose one of smoke, cpu, gpu"):
        module.settings("nonsense")


def test_settings_for_names_the_scales() -> None:
    with pytest.raises(ValueError, match="choose one of smoke, cpu, gpu"):
        settings_for({"smoke": 1}, "huge")
    with pytest.raises(ValueError, match="no scale 'gpu'; it has smoke"):
        settings_for({"smoke": 1}, "gpu")
    assert settings_for({"cpu": 3}, "cpu") == 3


def test_settings_values_and_checkpoint_key_are_unchanged() -> None:
    # the cached cpu checkpoint is reused only if the recipe hashes to the same key
    # (issue 9: the recipe became one-cycle, 5 epochs on the full training split with light augmentation)
    assert fashion_mnist.checkpoint_path("cpu").name == "fashion_resnet18-cpu-5cc4f47398.pt"
    assert fashion_mnist.settings("cpu").recipe() == {"width": 0.25, "epochs": 5, "lr": 0.1, "seed": 0,
                                                      "schedule": "one_cycle", "padding": 2, "flip": 0.5}
    assert baselines.settings("cpu").ratios == (1.0, 0.75, 0.5, 0.375, 0.25)
    assert capacity.settings("smoke").budgets == (0.5,) and capacity.settings("cpu").knee_grid == 16
    assert super_resolution.settings("cpu").steps == 1000
    assert 0.75 in super_resolution.settings("smoke").ratios  # the book quotes r = 0.75


# -------------------------------------------------------------------------------------------- sweep
def test_sweep_prepares_once_shares_full_width_and_records_errors() -> None:
    prepared, compressed = [], []

    def prepare(method: str) -> str:
        prepared.append(method)
        return method.upper()

    def compress(method: str, ratio: float, state: str) -> nn.Module:
        assert state == method.upper()
        if method == "bad" and ratio < 1:
            raise ImportError("not installed")
        compressed.append((method, ratio))
        return nn.Linear(4, max(1, round(4 * ratio)))

    def measure(model: nn.Module) -> dict:
        return {"width": model.out_features}

    records, models = common.sweep(["a", "bad", "c"], (0.5, 1.0), compress, measure, prepare=prepare,
                                   shared_full=lambda m: m != "c", skip_errors=(ImportError,),
                                   keep=lambda m, r: r == 0.5)
    assert prepared == ["a", "bad", "c"]
    assert ("bad", 1.0) not in compressed and ("c", 1.0) in compressed  # "bad" reuses "a"'s full model
    assert [(r["method"], r["ratio"]) for r in records] == [("a", 1.0), ("a", 0.5), ("bad", 1.0), ("bad", 0.5),
                                                             ("c", 1.0), ("c", 0.5)]
    assert records[2]["shared"] and records[2]["width"] == 4
    assert records[3]["error"] == "ImportError: not installed" and "width" not in records[3]
    assert records[1]["width"] == 2 and records[5]["width"] == 2
    assert set(models) == {("a", 0.5), ("c", 0.5)}
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        common.sweep(["a"], (1.5,), compress, measure)
    with pytest.raises(ValueError, match="at least one"):
        common.sweep([], (0.5,), compress, measure)


def test_best_method_and_grid_keys() -> None:
    records = [{"method": m, "ratio": r, "accuracy": a} for m, r, a in
               [("random", 0.5, 0.9), ("l1", 0.5, 0.6), ("obs", 0.5, 0.7), ("fold", 0.5, 0.7), ("l1", 1.0, 0.95)]]
    grid = common.by_method(records)
    assert grid["l1"] == {"r1": 0.95, "r0_5": 0.6}
    assert common.best_method(grid, 0.5, exclude=("random",)) == "obs"  # first of the tie obs/fold
    assert common.best_method(grid, 0.5) == "random"
    with pytest.raises(ValueError, match="r0_25"):
        common.best_method(grid, 0.25)
    assert common.format_rows([{"a": 1.23456, "b": "x"}]).splitlines()[1].split() == ["1.235", "x"]


# ---------------------------------------------------------------------------------------- headlines
def _baseline_records() -> tuple[list[dict], list[dict]]:
    records = []
    for method, acc_half in (("random", 0.80), ("l1", 0.50), ("obs", 0.70), ("continuous", 0.65)):
        records.append({"method": method, "ratio": 1.0, "accuracy": 0.9, "macs": 100, "params": 10})
        records.append({"method": method, "ratio": 0.5, "accuracy": acc_half, "macs": 30, "params": 3})
    tuned = [{"method": "continuous", "ratio": 0.5, "steps": 2, "accuracy": 0.85, "macs": 30},
             {"method": "gmp", "ratio": 0.5, "steps": 2, "accuracy": 0.8, "macs": 30}]
    return records, tuned


def test_baselines_headline_is_the_best_non_random_method_at_half() -> None:
    records, tuned = _baseline_records()
    result = baselines.headline(records, tuned, unpruned_accuracy=0.91, ft_ratio=0.5)
    assert result.best_at_half == "obs"
    assert result.accuracy["continuous"]["r0_5"] == 0.65 and result.macs["l1"]["r1"] == 100
    assert result.fine_tuned == {"continuous": 0.85, "gmp": 0.8}
    rows = baselines.fine_tuning_rows(result)
    assert rows[0]["до дообучения, %"] == pytest.approx(65.0) and rows[1]["до дообучения, %"] == "—"
    check_keys(result.to_dict())  # plain identifiers only: the book splits keys on dots


def _knee_table():
    sizes = {"layer1.conv": 16, "layer2.conv": 32, "layer3.conv": 64}
    knees = {"layer1.conv": 8, "layer2.conv": 12, "layer3.conv": 40}
    predicted = {"weights@0.9": {"layer1.conv": 6, "layer2.conv": 10, "layer3.conv": 50},   # same order
                 "weights@0.99": {"layer1.conv": 16, "layer2.conv": 12, "layer3.conv": 10}}  # reversed
    return compare(predicted, knees, sizes), sizes


def _allocations() -> dict:
    row = {"accuracy": 0.8, "accuracy_naive": 0.7, "macs": 50, "macs_fraction": 0.5,
           "modelled_latency_fraction": 0.5, "latency_s": 0.01,
           "widths": {"layer1.conv": 8, "layer2.conv": 16, "layer3.conv": 32}}
    return {"full": {"accuracy": 0.9, "macs": 100, "latency_s": 0.02},
            "budgets": {ratio_key(0.5): {"uniform": row, "greedy_latency": {**row, "accuracy": 0.85}}}}


def test_capacity_headline_takes_the_best_estimator_and_equal_cost_accuracy() -> None:
    table, sizes = _knee_table()
    best = capacity.best_estimator(table, (0.9, 0.99))
    assert best == "weights@0.9" and table.spearman[best] == pytest.approx(1.0)
    result = capacity.headline(table, best, _allocations(), 0.9, sizes)
    assert result.best_spearman == pytest.approx(1.0)
    assert result.size_spearman == pytest.approx(1.0)  # sizes rank like these knees
    assert result.spearman["weights@0.99"] == pytest.approx(-1.0)  # exactly reversed ranks
    assert result.accuracy_at_equal_cost == {"r0_5": {"uniform": 0.8, "greedy_latency": 0.85}}
    saved = result.to_dict()
    check_keys(saved)
    assert saved["group_names"] == list(sizes) and saved["knees"] == [8, 12, 40]
    assert saved["predicted"]["weights_at_0_99"] == [16, 12, 10]
    assert saved["best_estimator"] == "weights@0.9" and saved["estimators"][0] == "weights@0.9"
    assert saved["allocations"]["budgets"]["r0_5"]["uniform"]["widths"] == [8, 16, 32]
    assert capacity.allocation_rows(result)[0]["бюджет MAC"] == 0.5
    with pytest.raises(ValueError, match="not in the knee table"):
        capacity.headline(table, "nope@1", _allocations(), 0.9, sizes)


def test_capacity_best_falls_back_without_a_finite_correlation() -> None:
    table = compare({"weights@0.9": {"a": 3, "b": 3}}, {"a": 2, "b": 4})
    assert capacity.best_estimator(table, (0.9, 0.99)) == "weights@0.99"
    assert capacity.estimator_key("features@0.5") == "features_at_0_5"


def _sr_result() -> super_resolution.Result:
    psnr_grid = {"continuous": {"r1": 30.0, "r0_5": 28.0}, "l1": {"r1": 30.0, "r0_5": 28.5},
                 "random": {"r1": 30.0, "r0_5": 25.0}}
    return super_resolution.Result(
        psnr=psnr_grid, ssim={m: {k: 0.9 for k in v} for m, v in psnr_grid.items()},
        macs={m: {"r1": 100, "r0_5": 30} for m in psnr_grid}, bicubic_psnr=27.0, bicubic_ssim=0.8,
        full_psnr=30.0, full_ssim=0.9, full_macs=100, params=10, train_loss_first=0.2, train_loss_last=0.05,
        test_images=["a"], best_at_half=super_resolution.headline_best(psnr_grid), upscale=2,
        hr=torch.rand(3, 32, 32), crops={"бикубическая": torch.rand(3, 32, 32)})


def test_super_resolution_best_at_half_and_plain_keys() -> None:
    result = _sr_result()
    assert result.best_at_half == "l1"
    assert super_resolution.headline_best(result.psnr, 0.25) is None
    saved = result.to_dict()
    check_keys(saved)
    assert "hr" not in saved and "crops" not in saved and saved["psnr"]["l1"]["r0_5"] == 28.5


# ------------------------------------------------------------------------------------------ figures
def _labels(fig: Figure) -> list[str]:
    out = []
    for ax in fig.axes:
        out += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    return [t for t in out if t]


def _is_russian(text: str) -> bool:
    return any("а" <= ch.lower() <= "я" or ch.lower() == "ё" for ch in text)


def test_plots_return_figures_with_russian_labels() -> None:
    records, tuned = _baseline_records()
    figs = {
        "sweep": baselines.plot_sweep(baselines.headline(records, tuned, 0.9, 0.5)),
        "psnr": super_resolution.plot_psnr_vs_ratio(_sr_result()),
        "crops": super_resolution.plot_crops(_sr_result(), size=16),
    }
    table, sizes = _knee_table()
    cap = capacity.headline(table, "weights@0.9", _allocations(), 0.9, sizes,
                            spectra={"weights": {"a": [0.5, 0.3, 0.2]}, "features": {"a": [0.6, 0.4]}})
    figs.update(allocations=capacity.plot_allocations(cap), knees=capacity.plot_predicted_vs_knee(cap),
                spectra=capacity.plot_spectra(cap))
    fm = fashion_mnist.Result(test_accuracy=0.9, test_images=10, per_class_accuracy={"a": 1.0, "b": 0.5},
                              history=[{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5, "test_accuracy": 0.6},
                                       {"epoch": 2, "loss": 0.5, "train_accuracy": 0.7, "test_accuracy": 0.8}],
                              width=0.25, epochs=2, parameters=1, macs=1, train_seconds=1.0, train_device="cpu",
                              confusion=[[1.0, 0.0], [0.5, 0.5]], classes=["a", "b"])
    figs["training"] = fashion_mnist.plot_training(fm)
    try:
        for name, fig in figs.items():
            assert isinstance(fig, Figure), name
            labels = _labels(fig)
            assert labels and any(_is_russian(t) for t in labels), (name, labels)
        sweep_axes = figs["sweep"].axes
        assert sweep_axes[0].get_xlabel() == AXIS_LABELS["ratio"] == "доля каналов"
        assert sweep_axes[0].get_ylabel() == "точность, %"
        legend = [t.get_text() for t in sweep_axes[1].get_legend().get_texts()]
        assert METHOD_LABELS["continuous"] in legend and METHOD_LABELS["random"] in legend
        assert figs["psnr"].axes[0].get_ylabel().startswith("PSNR")
        assert figs["allocations"].axes[0].get_xlabel() == "MACs, доля от исходной"
    finally:
        import matplotlib.pyplot as plt

        for fig in figs.values():
            plt.close(fig)


def test_one_colour_and_marker_per_method() -> None:
    assert method_style("obs") == method_style("obs")
    assert method_style("obs")["color"] != method_style("l1")["color"]
    assert method_style("greedy_latency@0.5")["color"] == method_style("greedy_latency")["color"]
    assert method_style("unknown_method") == method_style("unknown_method")  # stable for unnamed methods too
    assert method_label("weights@0.99") == "спектр весов @ 0.99"
    colours = {method_style(m)["color"] for m in ("random", "l1", "l2", "taylor", "obs", "fold", "continuous")}
    assert len(colours) == 7


# ------------------------------------------------------------------------------------ training loop
class _Recorder(Callback):
    def __init__(self) -> None:
        self.begin, self.end, self.evals, self.finished = [], [], [], 0

    def on_step_begin(self, state) -> None:
        self.begin.append(state.step)

    def on_step_end(self, state) -> None:
        self.end.append((state.step, state.loss))

    def on_eval(self, state, metrics) -> None:
        self.evals.append((state.step, metrics["n"]))

    def on_train_end(self, state) -> None:
        self.finished += 1


def _regression(n: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    return DataLoader(TensorDataset(x, y), batch_size=16)


def test_train_calls_back_with_the_right_steps_and_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    loader = _regression()  # 4 batches per pass: 10 steps re-iterate it
    rec = _Recorder()
    evals = iter(range(100))
    state = train(model, loader, 10, nn.functional.mse_loss, torch.optim.SGD(model.parameters(), lr=0.1),
                  callbacks=[rec], evaluate=lambda m: {"n": next(evals)}, eval_every=4, start_step=5)
    assert rec.begin == list(range(5, 15)) and [s for s, _ in rec.end] == list(range(5, 15))
    assert rec.evals == [(8, 0), (12, 1), (14, 2)] and rec.finished == 1
    assert state.losses == [loss for _, loss in rec.end] and len(state.losses) == 10
    assert state.losses[-1] < 0.5 * state.losses[0]


def test_train_refuses_bad_input() -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train(model, _regression(), 0, nn.functional.mse_loss, opt)
    with pytest.raises(ValueError, match="empty"):
        train(model, DataLoader(TensorDataset(torch.zeros(0, 3), torch.zeros(0, 1))), 3,
              nn.functional.mse_loss, opt)
    with pytest.raises(ValueError, match="no batch"):
        train(model, iter([]), 3, nn.functional.mse_loss, opt)
    with pytest.raises(ValueError, match="eval_every"):
        train(model, _regression(), 3, nn.functional.mse_loss, opt, eval_every=2)
    with pytest.raises(FloatingPointError, match="step 0"):
        train(model, _regression(), 3, lambda out, y: out.sum() * math.nan, opt)


def test_train_passes_like_a_for_loop_so_a_shuffled_loader_reshuffles_identically() -> None:
    def batches_seen(use_train: bool) -> list[torch.Tensor]:
        x = torch.arange(12.0).view(12, 1)
        loader = DataLoader(TensorDataset(x, x), batch_size=4, shuffle=True,
                            generator=torch.Generator().manual_seed(3))
        seen: list[torch.Tensor] = []
        if use_train:
            model = nn.Linear(1, 1)
            opt = torch.optim.SGD(model.parameters(), lr=0.0)

            def loss(out, y):
                seen.append(y.flatten().clone())
                return ((out - y) ** 2).mean()

            for epoch in range(3):  # one train() call per pass, as train_classifier does
                train(model, loader, len(loader), loss, opt, start_step=epoch * len(loader))
        else:
            for _ in range(3):
                seen += [y.flatten().clone() for _, y in loader]
        return seen

    assert all(torch.equal(a, b) for a, b in zip(batches_seen(True), batches_seen(False), strict=True))
