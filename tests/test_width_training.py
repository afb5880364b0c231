"""train_continuous: the sandwich rule, in-place distillation, BN recalibration per width, slimmable prefixes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesislib.continuous import to_continuous
from thesislib.metrics import bootstrap_interval, correct_predictions
from thesislib.slimmable import SlimmableNet, prefix_op, to_slimmable
from thesislib.width_training import (WidthSampler, calibrate_widths, check_widths, inplace_distillation_loss,
                                      train_continuous, width_sampler)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3))


def loader(n: int = 32, batch: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    ds = TensorDataset(torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g))
    return DataLoader(ds, batch_size=batch, shuffle=False)


def cnet():
    return to_continuous(small_net(), torch.randn(2, 1, 6, 6))


def test_sandwich_draws_largest_and_smallest_every_step():
    net = cnet()
    sampler = WidthSampler(net.full_widths, low=0.25, high=1.0)
    out = train_continuous(net, loader(), 5, sampler, sandwich=True, random_widths=2, lr=0.01)
    assert len(out.widths) == 5 and out.passes == 20
    for plan in out.widths:
        assert plan[0] == net.full_widths == sampler.largest
        assert plan[1] == sampler.smallest == {g: max(1, round(0.25 * n)) for g, n in net.full_widths.items()}
        assert len(plan) == 4
    assert len(out.step_seconds) == 5 and all(t > 0 for t in out.step_seconds)


def test_random_widths_are_in_range_and_seeded():
    net = cnet()
    a = train_continuous(net, loader(), 6, (0.5, 1.0), seed=3, lr=0.0).widths
    b = train_continuous(cnet(), loader(), 6, (0.5, 1.0), seed=3, lr=0.0).widths
    assert a == b
    for (plan,) in a:
        for g, m in plan.items():
            n = net.full_widths[g]
            assert max(1, round(0.5 * n)) <= m <= n


def test_log_uniform_is_biased_to_small_widths():
    sizes = {"g": 1000}
    gen = torch.Generator().manual_seed(0)
    uniform = [WidthSampler(sizes)(i, gen)["g"] for i in range(2000)]
    small = [WidthSampler(sizes, kind="log_uniform")(i, gen)["g"] for i in range(2000)]
    assert sum(m < 500 for m in small) > 1.3 * sum(m < 500 for m in uniform)
    assert min(small) >= 250 and max(small) <= 1000


def test_distillation_target_is_the_largest_width_detached():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    loss = inplace_distillation_loss(student, teacher)
    expected = -(torch.softmax(teacher, 1) * torch.log_softmax(student, 1)).sum(1).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_distilled_widths_get_no_label_gradient():
    """With distillation the labels enter only the largest width's loss: changing them at a step where the
    largest width's loss is cut off leaves the other widths' loss unchanged."""
    from thesislib.width_training import _WidthLoss

    outputs = torch.randn(3, 4, 5, requires_grad=True)
    y1, y2 = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4])
    ce = nn.functional.cross_entropy
    with_distill = _WidthLoss(ce, distill=True)
    rest1 = with_distill(outputs, y1) - ce(outputs[0], y1)
    rest2 = with_distill(outputs, y2) - ce(outputs[0], y2)
    assert torch.allclose(rest1, rest2)
    rest1.backward()
    assert outputs.grad[0].abs().max() == 0 and outputs.grad[1:].abs().max() > 0


def test_bn_recalibration_per_width_equals_a_fresh_pass():
    net = cnet()
    calib = loader(24, 8, seed=1)
    out = train_continuous(net, loader(), 3, (0.25, 1.0), lr=0.01, recalibrate_loader=calib,
                           recalibrate_ratios=(1.0, 0.5), recalibrate_batches=3)
    for ratio in (0.5, 1.0):
        at = out.at(ratio)
        assert at.widths == {g: max(1, round(ratio * n)) for g, n in net.full_widths.items()}
        exported = at.export()
        # a fresh pass at that width: the exported plain model's BatchNorms re-estimated from scratch
        fresh = copy.deepcopy(exported)
        for m in fresh.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
                m.train()
        with torch.no_grad():
            for x, _ in calib:
                fresh(x)
        for a, b in zip(exported.modules(), fresh.modules()):
            if isinstance(a, nn.BatchNorm2d):
                assert torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
                assert torch.allclose(a.running_var, b.running_var, atol=1e-5)
        x = torch.randn(4, 1, 6, 6)
        assert torch.allclose(at(x), fresh.eval()(x), atol=1e-5)
    half = out.at(0.5).export()[4].running_var
    full = out.at(1.0).export()[4].running_var
    assert half.numel() == 6 and not torch.allclose(half, full[:6])  # its own statistics, not a slice of full width


def test_bad_widths_and_loaders_raise_clear_errors():
    net = cnet()
    sizes = net.full_widths
    bad = {g: n + 1 for g, n in sizes.items()}
    with pytest.raises(ValueError, match=r"must be in \[1, "):
        train_continuous(net, loader(), 2, lambda step, gen: bad)
    with pytest.raises(ValueError, match=r"must be in \[1, "):
        train_continuous(net, loader(), 2, lambda step, gen: {g: 0 for g in sizes})
    with pytest.raises(ValueError, match="every group"):
        check_widths({}, sizes)
    with pytest.raises(ValueError, match="calibration loader is empty"):
        train_continuous(net, loader(), 2, recalibrate_loader=DataLoader(TensorDataset(torch.zeros(0, 1, 6, 6))))
    with pytest.raises(ValueError, match="calibration loader is empty"):
        calibrate_widths(net, [], (0.5,))
    with pytest.raises(ValueError, match="training loader is empty"):
        train_continuous(net, [], 2)
    with pytest.raises(ValueError, match="needs sandwich=True"):
        train_continuous(net, loader(), 2, distill=True)
    with pytest.raises(ValueError, match="largest and smallest"):
        train_continuous(net, loader(), 2, lambda step, gen: sizes, sandwich=True)
    with pytest.raises(ValueError, match="valid: uniform, log_uniform"):
        width_sampler("normal", sizes)
    with pytest.raises(ValueError, match="0 < low <= high <= 1"):
        width_sampler((0.0, 1.0), sizes)
    with pytest.raises(ValueError, match="ContinuousNet"):
        train_continuous(small_net(), loader(), 2)


def test_train_widths_keeps_working_and_is_disabled_by_train_continuous():
    net = cnet().train_widths((0.5, 1.0))
    net.train()
    net(torch.randn(2, 1, 6, 6))  # the legacy per-forward draw still runs
    train_continuous(net, loader(), 1, (1.0, 1.0), lr=0.0)
    assert net.widths == net.full_widths


def test_training_lowers_the_loss_at_every_width():
    net = cnet()
    data = loader(32, 32)
    x, y = next(iter(data))
    before = {r: nn.functional.cross_entropy(net.eval().resample(r, antialias=False)(x), y).item() for r in (1.0, 0.5)}
    train_continuous(net, data, 40, (0.25, 1.0), sandwich=True, lr=0.05)
    net.train()  # train-mode BN: the batch statistics, no recalibration needed for this comparison
    after = {r: nn.functional.cross_entropy(net.resample(r, antialias=False)(x), y).item() for r in (1.0, 0.5)}
    assert all(after[r] < before[r] for r in before)


def test_slimmable_is_a_channel_prefix():
    base = small_net().eval()
    x = torch.randn(3, 1, 6, 6)
    net = to_slimmable(base, x[:2])
    assert isinstance(net, SlimmableNet)
    assert torch.allclose(net.eval()(x), base(x), atol=1e-6)
    net.resample(0.5)
    small = net.export()
    assert small[0].out_channels == 4
    assert torch.equal(small[0].weight, base[0].weight[:4])
    assert torch.equal(small[3].weight, base[3].weight[:6, :4])  # no quadrature rescaling of consumers
    assert torch.allclose(net(x), small(x), atol=1e-6)
    ordered = to_slimmable(base, x[:2], order="l1")
    assert torch.allclose(ordered.eval()(x), base(x), atol=1e-5)
    norms = ordered.export()[3].weight.abs().sum((0, 2, 3))
    with pytest.raises(ValueError, match="valid: l1, none"):
        to_slimmable(base, x[:2], order="random")
    with pytest.raises(ValueError, match="1..n"):
        prefix_op(4, 5)
    assert norms.numel() == 8


def test_bootstrap_interval_covers_the_mean():
    values = torch.tensor([1.0] * 80 + [0.0] * 20)
    low, high = bootstrap_interval(values, resamples=500)
    assert low < 0.8 < high and 0.6 < low and high < 0.95
    assert bootstrap_interval(values, 200, seed=1) == bootstrap_interval(values, 200, seed=1)
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_interval([])
    model = small_net().eval()
    hits = correct_predictions(model, loader())
    assert hits.dtype == torch.bool and hits.numel() == 32
