"""Issue 9, part B: the Fashion recipe (augmentation, one-cycle, goals), the INN-trained EDSR, the capacity
estimators on INN-trained nets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from thesislib.capacity.knee import compare
from thesislib.capacity.spectrum import band_limited
from thesislib.continuous import to_continuous
from thesislib.data.fashion import RandomCropFlip
from thesislib.experiments import capacity, fashion_mnist, super_resolution
from thesislib.results import ratio_key
from thesislib.training import SCHEDULES, train_classifier


# ----------------------------------------------------------------------------------------- augmentation
def test_random_crop_flip_is_a_shifted_flipped_crop_of_the_padded_image() -> None:
    images = torch.rand(16, 2, 9, 7)
    aug = RandomCropFlip(padding=3, flip=0.5, seed=4)
    out = aug.augment(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    flipped = 0
    for b in range(len(images)):  # every output is exactly one of the (2p+1)² crops, flipped or not
        matches = [(dy, dx, f) for dy in range(7) for dx in range(7) for f in (False, True)
                   if torch.equal(out[b], (lambda c: c.flip(-1) if f else c)(padded[b, :, dy:dy + 9, dx:dx + 7]))]
        assert matches, b
        flipped += all(f for *_, f in matches)
    assert 0 < flipped < len(images)  # both flips occur at p = 0.5 over 16 images (seeded)
    again = RandomCropFlip(padding=3, flip=0.5, seed=4).augment(images)
    assert torch.equal(out, again)  # its own seeded generator
    assert torch.equal(RandomCropFlip(0, 0.0).augment(images), images)
    assert torch.equal(RandomCropFlip(0, 1.0).augment(images), images.flip(-1))
    x, y = RandomCropFlip(1, 0.5)([(images[i], i) for i in range(4)])
    assert x.shape == (4, 2, 9, 7) and y.tolist() == [0, 1, 2, 3]


def test_random_crop_flip_bad_input() -> None:
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        RandomCropFlip(-1)
    with pytest.raises(ValueError, match=r"flip is a probability in \[0, 1\]"):
        RandomCropFlip(2, 1.5)
    with pytest.raises(ValueError, match=r"images \[B, C, H, W\]"):
        RandomCropFlip(2).augment(torch.rand(3, 8, 8))


def test_one_cycle_schedule_peaks_at_lr_and_unknown_schedule_is_refused() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    model = nn.Linear(4, 3)
    seen: list[float] = []

    from thesislib.training import Callback

    class Lr(Callback):
        def on_step_begin(self, state) -> None:
            seen.append(state.optimizer.param_groups[0]["lr"])

    train_classifier(model, loader, 2, lr=0.2, device="cpu", schedule="one_cycle", callbacks=[Lr()])
    assert len(seen) == 20 and SCHEDULES == ("cosine", "one_cycle")
    assert seen[0] == pytest.approx(0.2 / 25) and max(seen) == pytest.approx(0.2, rel=1e-6)
    assert seen.index(max(seen)) == 5  # 30 % of 20 steps, then annealed
    assert seen[-1] < seen[0]
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step': choose one of cosine, one_cycle"):
        train_classifier(model, loader, 1, schedule="step")


def test_fashion_recipe_and_goals() -> None:
    s = fashion_mnist.settings("cpu")
    assert s.recipe() == {"width": 0.25, "epochs": 5, "lr": 0.1, "seed": 0, "schedule": "one_cycle",
                          "padding": 2, "flip": 0.5}
    assert fashion_mnist.checkpoint_path("cpu").name == "fashion_resnet18-cpu-5cc4f47398.pt"
    assert s.goal_accuracy == 0.91 and s.goal_minutes == 30.0
    from thesislib.data.fashion import FASHION_SCALES

    assert FASHION_SCALES["cpu"].train_size is None and FASHION_SCALES["cpu"].test_size is None
    base = dict(test_images=10000, per_class_accuracy={}, history=[], width=0.25, epochs=5, parameters=1, macs=1,
                train_device="cpu", train_threads=2, goal_accuracy=0.91, goal_minutes=30.0)
    met = fashion_mnist.Result(test_accuracy=0.915, train_seconds=600.0, train_minutes=10.0,
                               goal_accuracy_met=True, goal_time_met=True, **base)
    lines = fashion_mnist.goals(met)
    assert len(lines) == 2 and all(": met" in line for line in lines)
    missed = fashion_mnist.Result(test_accuracy=0.905, train_seconds=2400.0, train_minutes=40.0,
                                  goal_accuracy_met=False, goal_time_met=False, **base)
    assert all("not met" in line for line in fashion_mnist.goals(missed))


# ------------------------------------------------------------------------------------------ SR: INN EDSR
def _sr_settings(**kw) -> super_resolution.Settings:
    base = dict(scale="smoke", upscale=2, n_feats=8, n_blocks=1, steps=3, batch_size=2, patch_size=16, lr=1e-3,
                eval_crop=32, n_test=1, ratios=(1.0, 0.5), macs_lr_size=16, inn_low=0.25)
    return super_resolution.Settings(**{**base, **kw})


def test_inn_gain_is_psnr_minus_the_best_discrete_method() -> None:
    grid = {"continuous": {"r1": 30.0, "r0_5": 20.0}, "l1": {"r1": 30.0, "r0_5": 24.0},
            "inn": {"r1": 29.0, "r0_5": 25.5, "r0_25": 22.0}}
    assert super_resolution.inn_gain(grid) == {"r1": pytest.approx(-1.0), "r0_5": pytest.approx(1.5)}
    assert super_resolution.inn_gain(grid, "inn_aa") == {}


def test_inn_sr_trains_with_random_widths_and_exports_every_ratio() -> None:
    s = _sr_settings()
    patches = super_resolution.train_patches(s.upscale, s.patch_size, s.steps, s.batch_size)
    cnet, losses = super_resolution.train_inn_sr(s, patches)
    assert len(losses) == s.steps and all(math.isfinite(v) for v in losses)
    assert not cnet.training and cnet.widths == cnet.full_widths
    drawn = set()
    cnet.train_widths((0.25, 1.0)).train()
    for _ in range(6):  # the training mode draws a width per group per forward
        drawn.add(tuple(cnet._current()[0].values()))
    cnet.train_widths(None).eval()
    assert len(drawn) > 1
    full = cnet.full_widths
    small = super_resolution.inn_compress(cnet, "inn", 0.5)
    n_params = sum(p.numel() for p in small.parameters())
    assert n_params < sum(p.numel() for p in super_resolution.build_model(s).parameters())
    assert sum(p.numel() for p in super_resolution.inn_compress(cnet, "inn", 1.0).parameters()) > n_params
    assert cnet.widths == full  # restored
    assert small(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown INN evaluation 'inn_x'; valid: inn, inn_aa"):
        super_resolution.inn_compress(cnet, "inn_x", 0.5)
    with pytest.raises(ValueError, match=r"inn_low must be a kept ratio in \(0, 1\]"):
        super_resolution.train_inn_sr(_sr_settings(inn_low=None), patches)


# -------------------------------------------------------------------------------- capacity: INN-trained nets
def test_low_band_power_is_one_for_band_limited_channel_functions() -> None:
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        net[0].weight.copy_(band_limited(net[0].weight.shape, 2, dim=0, generator=g).float())
        net[0].bias.copy_(band_limited((8,), 2, generator=g).float())
        net[2].weight.copy_(band_limited(net[2].weight.shape, 2, dim=1, generator=g).float())
    cnet = to_continuous(net, torch.rand(1, 1, 6, 6), permute=False)
    assert [gr.size for gr in cnet.groups] == [8]
    assert capacity.low_band_power(cnet, 0.25) == pytest.approx(1.0, abs=1e-9)  # keep_count(0.25, 8) = 2
    assert capacity.low_band_power(cnet, 0.125) < 1.0


def test_capacity_headline_flattens_the_inn_tables_and_compares_rho() -> None:
    sizes = {"a.conv": 16, "b.conv": 32, "c.conv": 64}
    knees = {"a.conv": 8, "b.conv": 12, "c.conv": 40}
    predicted = {"weights@0.9": {"a.conv": 6, "b.conv": 10, "c.conv": 50},
                 "weights@0.99": {"a.conv": 16, "b.conv": 12, "c.conv": 10}}
    table = compare(predicted, knees, sizes)
    inn_table = compare({"weights@0.9": {"a.conv": 8, "b.conv": 12, "c.conv": 40},
                         "weights@0.99": {"a.conv": 16, "b.conv": 32, "c.conv": 64}}, knees, sizes)
    alloc = {"full": {"accuracy": 0.9, "macs": 100, "latency_s": 0.02}, "budgets": {}}
    best = capacity.best_estimator(table, (0.9, 0.99))
    inn_best = capacity.best_estimator(inn_table, (0.9, 0.99))
    entry = {"start": "scratch", "accuracy": 0.8, "low_band_power": 0.7, "table": inn_table,
             "best_estimator": inn_best, "best_spearman": inn_table.spearman[inn_best],
             "best_spearman_ratio": inn_table.spearman_ratio[inn_best], "max_spearman_ratio": 1.0}
    result = capacity.headline(table, best, alloc, 0.9, sizes, inn={"scratch": entry}, low_band=0.5)
    assert result.inn_rises == {"scratch": inn_table.spearman_ratio[inn_best] > table.spearman_ratio[best]}
    saved = result.to_dict()
    assert saved["inn"]["scratch"]["knees"] == [8, 12, 40]
    assert saved["inn"]["scratch"]["predicted"]["weights_at_0_9"] == [8, 12, 40]
    assert "table" not in saved["inn"]["scratch"] and saved["low_band_power"] == 0.5
    rows = capacity.inn_rows(result)
    assert [r["сеть"] for r in rows] == ["дискретная", "INN (scratch)"]
    lines = capacity.inn_goal_lines(result)
    assert len(lines) == 1 and ("not met" in lines[0]) != result.inn_rises["scratch"]
    assert ratio_key(0.25) == "r0_25"
