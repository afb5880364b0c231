"""BatchNorm under resampling: recalibration exactness, fusion, the A + B/m law, the analytic correction."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from thesislib.continuous import to_continuous
from thesislib.continuous.batchnorm import (analytic_correction, conv_bn_pairs, fit_inverse_width, fuse_batchnorm,
                                            preactivation_variance)
from thesislib.models import resnet18
from thesislib.pruning import recalibrate_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = resnet18(num_classes=10, in_channels=1, stem="small", width=0.125)
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():  # trained-looking statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(m.num_features, generator=gen))
    return net.eval()


def _batches(n: int = 4, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(size, 1, 16, 16, generator=gen), torch.randint(0, 10, (size,), generator=gen)) for _ in range(n)]


def _stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": getattr(m, k).clone() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            for k in ("running_mean", "running_var")}


@pytest.mark.parametrize("ratio,antialias", [(0.5, False), (0.5, True), (0.375, True)])
def test_recalibration_equals_a_fresh_model_of_that_width(ratio, antialias):
    """Acceptance: statistics recalibrated at a width = a fresh plain model of that width after a train-mode
    pass (momentum None) over the same batches; only the first k batches count."""
    net, batches = _net(), _batches()
    cnet = to_continuous(net, batches[0][0][:1]).resample(ratio, antialias=antialias)
    fresh = cnet.export()  # the plain model of this width, its statistics not yet re-estimated
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    fresh.train()
    with torch.no_grad():
        for x, _ in batches[:3]:
            fresh(x)
    cnet.recalibrate(batches, batches=3)
    got, expected = _stats(cnet.export()), _stats(fresh)
    assert got.keys() == expected.keys()
    for k in got:
        assert torch.allclose(got[k], expected[k], rtol=0, atol=1e-6), k
    plain = recalibrate_batchnorm(cnet.resample(ratio, antialias=antialias).export(), batches, 3)
    for k, v in _stats(plain).items():
        assert torch.allclose(v, expected[k], rtol=0, atol=1e-6), k
    cnet.resample(ratio, antialias=antialias).recalibrate(batches, batches=4)
    assert any(not torch.allclose(v, expected[k]) for k, v in _stats(cnet.export()).items())


def test_recalibration_bad_input_is_a_clear_error():
    net, batches = _net(), _batches(1)
    cnet = to_continuous(net, batches[0][0][:1]).resample(0.5)
    with pytest.raises(ValueError, match="batches must be >= 1"):
        cnet.recalibrate(batches, batches=0)
    with pytest.raises(ValueError, match="empty loader"):
        cnet.recalibrate([], batches=5)
    with pytest.raises(ValueError, match=">= 1"):
        recalibrate_batchnorm(copy.deepcopy(net), batches, 0)
    with pytest.raises(ValueError, match="empty loader"):
        recalibrate_batchnorm(copy.deepcopy(net), [], 5)


def test_fit_inverse_width_on_exact_points():
    m = [8, 16, 24, 48, 64]
    fit = fit_inverse_width(m, [2.0 + 3.0 / w for w in m])
    assert fit["A"] == pytest.approx(2.0, abs=1e-12) and fit["B"] == pytest.approx(3.0, abs=1e-10)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 3 distinct widths"):
        fit_inverse_width([4, 4, 8], [1, 1, 2])
    with pytest.raises(ValueError, match="positive"):
        fit_inverse_width([0, 4, 8], [1, 1, 2])


def test_fit_recovers_the_eq_bn_var_model():
    """eq-bn-var with a known answer: h_j = c(x_j) g + ξ_j (g ~ N(0,1) shared, ξ_j ~ N(0, s²) independent),
    z = Σ_j ω_j W(x_j) h_j with ω = 1/m at midpoints: Var z = A_m + B_m/m with A → (∫ W c)², B → s² ∫ W².
    The variance measured by Monte Carlo at several m is fitted; A and B match the integrals."""
    gen = torch.Generator().manual_seed(0)
    s = 0.8
    widths = [4, 6, 8, 12, 16, 32]
    samples = 200_000
    measured = []
    for m in widths:
        x = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        w, c = 1.0 + x, torch.cos(x)
        g = torch.randn(samples, 1, generator=gen, dtype=torch.float64)
        xi = s * torch.randn(samples, m, generator=gen, dtype=torch.float64)
        z = ((c * g + xi) * w).sum(1) / m
        measured.append(float(z.var()))
    fit = fit_inverse_width(widths, measured)
    grid = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    a_true = float(((1 + grid) * torch.cos(grid)).mean()) ** 2
    b_true = s ** 2 * float(((1 + grid) ** 2).mean())
    assert fit["A"] == pytest.approx(a_true, rel=0.03)
    assert fit["B"] == pytest.approx(b_true, rel=0.05)
    assert fit["r2"] > 0.99


def test_fuse_batchnorm_keeps_outputs_and_removes_every_norm():
    net = _net()
    x = _batches(1)[0][0]
    fused = fuse_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert len(conv_bn_pairs(net)) == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    with torch.no_grad():
        assert torch.allclose(fused(x), net(x), atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    with pytest.raises(ValueError, match="no Conv → BatchNorm pair"):
        fuse_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))


def test_analytic_correction_adds_the_independent_part():
    """σ²_m = σ²_n + B_m (1 − m/n), B_m = Σ W² Var(relu(N(β, γ²))) -- checked against a Monte Carlo variance
    of the rectified Gaussian; at full width nothing changes."""
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3)).eval()
    small[1].weight.data = torch.tensor([0.5, 1.0, 1.5, 2.0])
    small[1].bias.data = torch.tensor([-0.5, 0.0, 0.5, 1.0])
    before = small[4].running_var.clone()
    assert analytic_correction(copy.deepcopy(small), {"3": 4}) == {}
    changed = analytic_correction(small, {"3": 8})
    assert set(changed) == {"4"}
    g = torch.randn(2_000_000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    var_h = (g * small[1].weight.data.double() + small[1].bias.data.double()).clamp_min(0).var(0)
    b = (small[3].weight.detach().double() ** 2 * var_h.view(1, 4, 1, 1)).flatten(1).sum(1)
    assert torch.allclose(small[4].running_var.double(), before.double() + b * 0.5, rtol=2e-3)


def test_preactivation_variance_restores_the_net_and_grows_when_narrowed():
    net, batches = _net(), _batches(2, 16)
    cnet = to_continuous(net, batches[0][0][:1])
    group = "layer2.0.conv1"
    size = cnet.full_widths[group]
    before = cnet.widths
    var = preactivation_variance(cnet, group, [size, size // 2, size // 4], batches, batches=2)
    assert cnet.widths == before and len(var) == 3 and all(v > 0 for v in var)
    with pytest.raises(ValueError, match="unknown group"):
        preactivation_variance(cnet, "nope", [1], batches, 1)
    with pytest.raises(ValueError, match="batches must be >= 1"):
        preactivation_variance(cnet, group, [1], batches, 0)


def test_batchnorm_experiment_smoke_result_is_plain_json():
    from thesislib.experiments import batchnorm
    from thesislib.results import check_keys

    result = batchnorm.run(batchnorm.settings("smoke"))
    d = result.to_dict()
    check_keys(d)
    json.dumps(d)
    assert set(d["accuracy"]) == {"naive", "antialias"}
    assert set(d["accuracy"]["naive"]) == set(batchnorm.variant_names(batchnorm.settings("smoke").recal_batches))
    assert {r["method"] for r in d["fairness"]} >= {"l1", "obs", "continuous"}
    assert all(isinstance(v, bool) for v in d["predictions"].values())
    assert d["variance_groups"] >= 4 and all(np.isfinite(r["r2"]) for r in d["variance"])
