"""Tests of thesislib.continuous: axis operators, permutation, conversion, resampling, export."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from thesislib.continuous import (ContinuousNet, axis_op, channel_distances, interpolation_matrix, lowpass_matrix,
                                  quadrature_weights, to_continuous, total_variation, tv_order, two_opt_reference)
from thesislib.continuous.axis import consumer_weights, dct_matrix, sample_grid

torch.set_num_threads(1)


# ---------------------------------------------------------------- axis
@given(n=st.integers(1, 40), kind=st.sampled_from(["cubic", "linear"]))
@settings(max_examples=30, deadline=None)
def test_interpolation_is_identity_at_full_width_and_rows_sum_to_one(n, kind):
    assert np.allclose(interpolation_matrix(n, n, kind), np.eye(n))
    for m in (1, max(1, n // 2), n + 3):
        assert np.allclose(interpolation_matrix(n, m, kind).sum(1), 1.0)


def test_interpolation_reproduces_polynomials_of_its_order():
    n, m = 17, 11
    x, y = sample_grid(n), sample_grid(m)
    lin = interpolation_matrix(n, m, "linear")
    assert np.allclose(lin @ (2 * x + 1), 2 * y + 1)
    cub = interpolation_matrix(n, m, "cubic")
    inner = (y * (n - 1) >= 1) & (y * (n - 1) <= n - 2)  # away from the replicated border
    assert np.allclose((cub @ (x ** 2))[inner], (y ** 2)[inner])


@pytest.mark.parametrize("rule,order", [("rectangle", 1), ("trapezoid", 2), ("simpson", 4)])
def test_quadrature_error_falls_at_the_rules_order(rule, order):
    f, exact = np.exp, math.e - 1
    errors = [abs(quadrature_weights(m, rule) @ f(sample_grid(m)) - exact) for m in (9, 17, 33)]
    for coarse, fine in zip(errors, errors[1:]):
        assert math.log2(coarse / fine) == pytest.approx(order, abs=0.35)
    # even m uses the 3/8 rule on the tail: still 4th order
    if rule == "simpson":
        e = [abs(quadrature_weights(m, rule) @ f(sample_grid(m)) - exact) for m in (10, 20)]
        assert math.log2(e[0] / e[1]) > 3.5


def test_quadrature_rejects_unknown_rule():
    with pytest.raises(ValueError, match="trapezoid"):
        quadrature_weights(5, "gauss")


@given(n=st.integers(2, 60), rule=st.sampled_from(["trapezoid", "simpson", "rectangle"]))
@settings(max_examples=30, deadline=None)
def test_consumer_scale_is_one_at_full_width_and_keeps_the_sum(n, rule):
    assert np.allclose(consumer_weights(n, n, rule), 1.0)
    for m in (1, max(2, n // 2)):
        # a constant integrand: the m-sample sum must equal the n-sample sum exactly
        assert consumer_weights(n, m, rule).sum() == pytest.approx(n)


def test_lowpass_keeps_band_limited_signals_and_removes_higher_frequencies():
    n, m = 32, 12
    d = dct_matrix(n)
    low = d[:m].T @ np.random.default_rng(0).normal(size=m)
    high = d[m:].T @ np.random.default_rng(1).normal(size=n - m)
    lp = lowpass_matrix(n, m)
    assert np.allclose(lp @ low, low)
    assert np.allclose(lp @ high, 0, atol=1e-12)
    assert np.allclose(lowpass_matrix(n, n), np.eye(n))


@given(n=st.integers(2, 30), m=st.integers(1, 30), role=st.sampled_from(["producer", "consumer"]),
       aa=st.booleans(), dim=st.integers(0, 2))
@settings(max_examples=40, deadline=None)
def test_axis_op_apply_equals_its_matrix(n, m, role, aa, dim):
    op = axis_op(n, m, role, "cubic", "trapezoid", aa)
    shape = [3, 4, 5]
    shape[dim] = n
    x = torch.randn(*shape, dtype=torch.float64)
    got = op.apply(x, dim)
    want = torch.movedim(torch.tensordot(torch.tensor(op.matrix()), x, dims=([1], [dim])), 0, dim)
    assert got.shape[dim] == m
    assert torch.allclose(got, want, atol=1e-5)


def test_smooth_two_layer_net_keeps_its_function_when_resampled():
    """Weights that are smooth in the channel coordinate: the trapezoid scaling keeps the output."""
    torch.manual_seed(0)
    n = 64
    x = torch.linspace(0, 1, n)
    basis = torch.stack([torch.cos(math.pi * j * x) for j in range(4)], 1)
    net = nn.Sequential(nn.Linear(8, n), nn.Tanh(), nn.Linear(n, 5))
    with torch.no_grad():
        net[0].weight.copy_(basis @ torch.randn(4, 8))
        net[0].bias.copy_(basis @ torch.randn(4))
        net[2].weight.copy_((basis @ torch.randn(4, 5)).T / n)
    inp = torch.randn(16, 8)
    y0 = net(inp)
    errors = {}
    for rule in ("trapezoid", "rectangle"):
        c = to_continuous(net, inp, permute=False, quadrature=rule).eval()
        c.resample(0.5)
        errors[rule] = ((c(inp) - y0).norm() / y0.norm()).item()
    assert errors["trapezoid"] < 2e-3
    assert errors["trapezoid"] < errors["rectangle"] / 10


# ---------------------------------------------------------------- permutation
def test_permutation_recovers_a_shuffled_smooth_order():
    rng = np.random.default_rng(0)
    n = 48
    x = np.linspace(0, 1, n)
    w = np.stack([np.cos(np.pi * k * x) for k in range(5)], 1) @ rng.normal(size=(5, 30))
    perm = rng.permutation(n)
    d = channel_distances([(torch.tensor(w[perm]), 0)])
    order = tv_order(d)
    smooth_tv = total_variation(d, np.argsort(perm))
    assert total_variation(d, order) <= smooth_tv * 1.001
    assert total_variation(d, order) <= total_variation(d, two_opt_reference(d)) + 1e-9
    assert total_variation(d, order) < total_variation(d, np.arange(n)) / 3
    assert sorted(order.tolist()) == list(range(n))


def test_channel_distances_weigh_tensors_equally_whatever_their_scale():
    a = torch.randn(10, 6)
    d1 = channel_distances([(a, 0)])
    d2 = channel_distances([(a * 1000, 0)])
    assert np.allclose(d1, d2, rtol=1e-4)


# ---------------------------------------------------------------- conversion
class TinyResCNN(nn.Module):
    """conv-BN-ReLU stem, one residual block, depthwise conv, pooled Linear head."""

    def __init__(self, c: int = 8, h: int = 6, depthwise: bool = True, bias: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, c, 3, padding=1, bias=bias), nn.BatchNorm2d(c), nn.ReLU())
        self.conv1 = nn.Conv2d(c, h, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(h)
        self.conv2 = nn.Conv2d(h, c, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c) if depthwise else nn.Identity()
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        x = self.dw(x)
        return self.head(x.mean((2, 3)))


def _randomize_bn(net: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return net.eval()


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


@given(c=st.integers(3, 12), h=st.integers(3, 12), depthwise=st.booleans(), bias=st.booleans(),
       seed=st.integers(0, 1000))
@settings(max_examples=12, deadline=None)
def test_full_width_exact_and_export_equal_on_random_shapes(c, h, depthwise, bias, seed):
    torch.manual_seed(seed)
    net = _randomize_bn(TinyResCNN(c, h, depthwise, bias))
    x = torch.randn(3, 2, 7, 7)
    cnet = to_continuous(net, x).eval()
    with torch.no_grad():
        y = net(x)
        assert _max_rel(y, cnet(x)) <= 1e-4
        assert {g.size for g in cnet.groups} == {c, h}
        for aa in (True, False):
            cnet.resample(0.5, antialias=aa)
            small = cnet.export()
            assert torch.allclose(cnet(x), small(x), atol=1e-5, rtol=0)
            assert small.conv1.out_channels == small.bn1.num_features == small.conv2.in_channels == max(1, round(h / 2))
            assert small.stem[0].out_channels == small.head.in_features == max(1, round(c / 2))
            if depthwise:
                assert small.dw.groups == small.dw.in_channels == max(1, round(c / 2))
            assert all(type(m).__module__.startswith("torch.nn") or m is small for m in small.modules())


def test_input_net_is_left_untouched_and_export_is_independent():
    net = _randomize_bn(TinyResCNN())
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(2, 2, 5, 5)
    cnet = to_continuous(net, x).eval().resample(0.5)
    small = cnet.export()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    with torch.no_grad():
        small.head.weight.add_(1.0)
    assert not torch.allclose(cnet(x), small(x))


def test_resampled_bn_model_in_eval_matches_export_after_recalibration():
    torch.manual_seed(0)
    net = _randomize_bn(TinyResCNN(8, 6))
    data = [torch.randn(16, 2, 6, 6) for _ in range(3)]
    cnet = to_continuous(net, data[0][:2]).eval().resample(0.5)
    cnet.recalibrate(data, batches=2)
    small = cnet.export().eval()
    with torch.no_grad():
        assert torch.allclose(cnet(data[2]), small(data[2]), atol=1e-5)
        # the recalibrated statistics are the cumulative batch statistics of the small model
        feats = [small.stem[0](d) for d in data[:2]]
        mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
        assert torch.allclose(small.stem[1].running_mean, mean, atol=1e-5)
    assert not cnet.training and not any(m.training for m in cnet.modules())
    assert small.stem[1].momentum == net.stem[1].momentum


def test_recalibration_is_dropped_when_the_width_changes():
    net = _randomize_bn(TinyResCNN(8, 6))
    data = [torch.randn(8, 2, 6, 6)]
    cnet = to_continuous(net, data[0]).eval().resample(0.5)
    cnet.recalibrate(data, batches=1)
    cnet.resample(1.0)
    with torch.no_grad():
        assert torch.allclose(cnet(data[0]), net(data[0]), atol=1e-5)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    net = _randomize_bn(TinyResCNN())
    x = torch.randn(4, 2, 6, 6)
    a = to_continuous(net, x)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    b = to_continuous(net, x)
    b.load_state_dict(a.state_dict())
    a.eval().resample(0.6)
    b.eval().resample(0.6)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_inn_training_reaches_every_control_point_and_keeps_the_optimizer_parameters():
    torch.manual_seed(0)
    net = _randomize_bn(TinyResCNN(8, 6))
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
    cnet = to_continuous(net, x).train().train_widths((0.5, 0.9))
    params = list(cnet.parameters())
    ids = [id(p) for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    shapes = set()
    hook = cnet.net.conv1.register_forward_hook(lambda m, i, o: shapes.add(o.shape[1]))
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(cnet(x), y).backward()
        for name, p in cnet.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
    hook.remove()
    assert [id(p) for p in cnet.parameters()] == ids
    assert len(shapes) > 1 and max(shapes) < 6  # widths were drawn per step, within (0.5, 0.9) * 6
    cnet.eval()
    with torch.no_grad():
        assert cnet(x).shape == (8, 3)  # eval uses the full (resample) widths again
        assert cnet.net.conv1.out_channels == 6


def test_train_widths_is_seeded_and_validates():
    net = _randomize_bn(TinyResCNN(8, 6))
    x = torch.randn(2, 2, 5, 5)
    draws = []
    for _ in range(2):
        c = to_continuous(net, x, seed=3).train().train_widths((0.25, 1.0))
        draws.append([tuple(sorted(c._draw_widths().items())) for _ in range(5)])
    assert draws[0] == draws[1]
    with pytest.raises(ValueError, match="low <= high"):
        c.train_widths((0.8, 0.2))
    c.train_widths(lambda group, gen: 0)
    with pytest.raises(ValueError, match=">= 1"):
        c(x)


def test_bad_resample_arguments():
    net = _randomize_bn(TinyResCNN())
    cnet = to_continuous(net, torch.randn(2, 2, 5, 5))
    for bad in (0, 0.0, -0.5, 1.5, float("nan"), "half", True):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            cnet.resample(bad)
    with pytest.raises(ValueError, match="valid groups"):
        cnet.resample({"nope": 3})
    name = cnet.groups[0].name
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=">= 1"):
            cnet.resample({name: bad})
    with pytest.raises(ValueError, match="valid groups"):
        cnet.group_tensors("nope")


def test_unsupported_module_is_named_and_can_be_kept_discrete():
    net = nn.Sequential(nn.Conv2d(2, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.ReLU(),
                        nn.Conv2d(4, 3, 1))
    x = torch.randn(2, 2, 9, 9)
    with pytest.raises(ValueError, match=r"'1' of type GroupNorm"):
        to_continuous(net, x)
    cnet = to_continuous(net, x, keep_discrete=("1",)).eval()
    assert [g.name for g in cnet.groups] == ["3"]
    assert "0" in cnet.discrete_groups
    cnet.resample(0.5)
    small = cnet.export()
    assert small[0].out_channels == 8 and small[3].out_channels == 2
    with torch.no_grad():
        assert torch.allclose(cnet(x), small(x), atol=1e-5)


def test_grouped_convolution_keeps_its_groups_and_transposed_grouped_is_rejected():
    torch.manual_seed(0)
    net = _randomize_bn(nn.Sequential(nn.Conv2d(2, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 12, 3, groups=2),
                                      nn.ReLU(), nn.Conv2d(12, 3, 1)))
    x = torch.randn(2, 2, 9, 9)
    cnet = to_continuous(net, x).eval()
    assert sorted(g.size for g in cnet.groups) == [4, 6]  # per-block control points
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        cnet.resample(0.5)
        small = cnet.export()
        assert (small[3].groups, small[3].in_channels, small[3].out_channels) == (2, 4, 6)
        assert small[0].out_channels == small[1].num_features == 4 and small[5].in_channels == 6
        assert torch.allclose(cnet(x), small(x), atol=1e-5)
    for m, t in cnet.group_tensors(next(g.name for g in cnet.groups if g.size == 4)):
        assert t.shape[m.dim] == 4
    bad = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ConvTranspose2d(8, 8, 3, groups=2), nn.Conv2d(8, 3, 1))
    with pytest.raises(ValueError, match="grouped transposed"):
        to_continuous(bad, x)


def test_group_tensors_are_the_permuted_control_points():
    net = _randomize_bn(TinyResCNN(8, 6))
    cnet = to_continuous(net, torch.randn(2, 2, 5, 5))
    g = next(g for g in cnet.groups if g.size == 6)
    members = cnet.group_tensors(g.name)
    roles = {(m.module_name, m.param_name): m.role for m, _ in members}
    assert roles[("conv1", "weight")] == "producer" and roles[("conv2", "weight")] == "consumer"
    assert roles[("bn1", "running_var")] == "norm"
    for m, t in members:
        assert t.shape[m.dim] == 6
    # permuted: the same rows as the original (entries reordered by the other group), in another order
    w = dict(((m.module_name, m.param_name), t) for m, t in members)[("conv1", "weight")]
    rows = w.reshape(6, -1).sort(1).values
    orig = net.conv1.weight.detach().reshape(6, -1).sort(1).values
    match = [int(torch.cdist(rows[i:i + 1], orig).argmin()) for i in range(6)]
    assert sorted(match) == list(range(6))
    assert cnet.total_variation(g.name) <= to_continuous(net, torch.randn(2, 2, 5, 5), permute=False).total_variation(g.name) + 1e-9


# ---------------------------------------------------------------- attention, spectral norm
def test_vit_attention_with_fewer_heads_runs_and_exports():
    from thesislib.models import vit

    torch.manual_seed(0)
    net = vit(dim=16, depth=2, num_heads=4, head_dim=4).eval()
    x = torch.randn(3, 1, 28, 28)
    cnet = to_continuous(net, x).eval()
    names = {g.name for g in cnet.groups}
    assert {"blocks.0.attn.heads", "blocks.0.attn.head_dim"} <= names
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        cnet.resample({"blocks.0.attn.heads": 2, "blocks.1.attn.head_dim": 3})
        small = cnet.export()
        attn0, attn1 = small.blocks[0].attn, small.blocks[1].attn
        assert (attn0.num_heads, attn0.head_dim, attn0.qkv.weight.shape[0], attn0.proj.weight.shape[1]) == (2, 4, 24, 8)
        assert (attn1.num_heads, attn1.head_dim, attn1.qkv.weight.shape[0]) == (4, 3, 36)
        assert attn1.scale == pytest.approx(4 ** -0.5)  # the logit scale of the original head_dim
        assert torch.allclose(cnet(x), small(x), atol=1e-5)
        cnet.resample(0.5)
        small = cnet.export()
        assert small.patch_embed.out_channels == 8 and small.norm.normalized_shape == (8,)
        assert small.cls_token.shape[-1] == 8 and small.pos_embed.shape[-1] == 8
        assert torch.allclose(cnet(x), small(x), atol=1e-5)


def test_spectral_norm_survives_conversion_resampling_and_export():
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    net = nn.Sequential(spectral_norm(nn.Conv2d(2, 8, 3, padding=1)), nn.ReLU(),
                        spectral_norm(nn.Conv2d(8, 6, 3, padding=1)), nn.ReLU(), nn.Conv2d(6, 2, 3, padding=1))
    x = torch.randn(2, 2, 6, 6)
    net.train()
    for _ in range(10):
        net(x)  # converge the power iterations
    net.eval()
    cnet = to_continuous(net, x).eval()
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        cnet.resample(0.5)
        small = cnet.export()
        assert parametrize.is_parametrized(small[0], "weight") and parametrize.is_parametrized(small[2], "weight")
        assert small[0].weight.shape == (4, 2, 3, 3) and small[2].weight.shape == (3, 4, 3, 3)
        assert torch.allclose(cnet(x), small(x), atol=1e-5)
        # the exported weight really is spectrally normalised
        sigma = torch.linalg.matrix_norm(small[2].weight.flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- the thesis models
def _check_model(net: nn.Module, x: torch.Tensor, min_groups: int) -> ContinuousNet:
    net = _randomize_bn(net)
    cnet = to_continuous(net, x).eval()
    assert len(cnet.groups) >= min_groups
    with torch.no_grad():
        y = net(x)
        assert _max_rel(y, cnet(x)) <= 1e-4
        cnet.resample(0.5)
        small = cnet.export().eval()
        out = small(x)
        assert out.shape == y.shape
        assert torch.allclose(cnet(x), out, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in net.parameters())
    return cnet


def test_torchvision_resnet18_and_mobilenet_v3_small():
    import torchvision

    torch.manual_seed(0)
    _check_model(torchvision.models.resnet18(), torch.randn(2, 3, 32, 32), 12)
    cnet = _check_model(torchvision.models.mobilenet_v3_small(), torch.randn(2, 3, 32, 32), 20)
    small = cnet.export()
    dws = [m for m in small.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert dws and all(m.groups == m.in_channels == m.out_channels for m in dws)


def test_thesislib_models():
    from thesislib.models import edsr, resnet18, srcnn

    torch.manual_seed(0)
    _check_model(resnet18(num_classes=10, in_channels=1, stem="small", width=0.25), torch.randn(2, 1, 28, 28), 12)
    _check_model(srcnn(width=0.5), torch.randn(2, 1, 12, 12), 2)
    _check_model(srcnn(), torch.rand(1, 1, 12, 12), 2)  # default SRCNN: in-place ReLUs behind every conv
    for up in ("pixelshuffle", "convtranspose"):
        cnet = _check_model(edsr(n_feats=16, n_blocks=2, upsampler=up), torch.randn(2, 3, 8, 8), 3)
        assert "tail.1" in cnet.discrete_groups  # the RGB output stays 3 channels


def test_multihead_attention_follows_the_embedding_width():
    class Block(nn.Module):
        def __init__(self, e: int = 16, h: int = 4):
            super().__init__()
            self.inp = nn.Linear(6, e)
            self.ln = nn.LayerNorm(e)
            self.attn = nn.MultiheadAttention(e, h, batch_first=True)
            self.out = nn.Linear(e, 3)

        def forward(self, x):
            x = self.inp(x)
            y = self.ln(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return self.out(x.mean(1))

    torch.manual_seed(0)
    net = Block().eval()
    x = torch.randn(2, 5, 6)
    cnet = to_continuous(net, x).eval()
    assert {g.name for g in cnet.groups} == {"inp", "attn.head_dim"}
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        cnet.resample(0.6)  # 16 * 0.6 = 9.6 -> rounded to a multiple of 4 heads
        small = cnet.export()
        assert (small.attn.embed_dim, small.attn.head_dim, small.attn.num_heads) == (8, 2, 4)
        assert small.attn.in_proj_weight.shape == (24, 8) and small.ln.normalized_shape == (8,)
        assert torch.allclose(cnet(x), small(x), atol=1e-5)
    with pytest.raises(ValueError, match="follows the width"):
        cnet.resample({"attn.head_dim": 2})
    enc = nn.Sequential(nn.Linear(6, 16), nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
                        nn.Linear(16, 3)).eval()
    cnet = to_continuous(enc, x).eval().resample(0.5)
    with torch.no_grad():
        assert torch.allclose(cnet(x), cnet.export()(x), atol=1e-5)


def test_capacities_of_a_continuous_net_cover_every_group():
    from thesislib.capacity import capacities  # a function of a continuous net, not a method of it

    net = _randomize_bn(TinyResCNN(8, 6))
    cnet = to_continuous(net, torch.randn(2, 2, 5, 5))
    assert not hasattr(cnet, "capacity")
    cap = capacities(cnet, energy=0.99)
    assert set(cap) == {g.name for g in cnet.groups}
    assert all(isinstance(v, int) and 1 <= v <= cnet._group(k).size for k, v in cap.items())
    assert all(a <= b for a, b in zip(capacities(cnet, 0.5).values(), cap.values()))


@given(heads=st.integers(1, 4), head_dim=st.integers(1, 5), dim=st.integers(2, 10), data=st.data())
@settings(max_examples=5, deadline=None)
def test_vit_attention_random_shapes_and_widths(heads, head_dim, dim, data):
    from thesislib.models.vit import VisionTransformer

    torch.manual_seed(0)
    net = VisionTransformer(image_size=8, patch_size=4, in_channels=1, num_classes=3, dim=dim, depth=1,
                            num_heads=heads, head_dim=head_dim, mlp_hidden=6).eval()
    x = torch.randn(2, 1, 8, 8)
    cnet = to_continuous(net, x).eval()
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        widths = {g.name: data.draw(st.integers(1, g.size)) for g in cnet.groups}
        cnet.resample(widths, antialias=data.draw(st.booleans()))
        small = cnet.export()
        attn = small.blocks[0].attn
        assert (attn.num_heads, attn.head_dim) == (widths["blocks.0.attn.heads"], widths["blocks.0.attn.head_dim"])
        assert torch.allclose(cnet(x), small(x), atol=1e-5)


def test_mlp_with_batchnorm1d_and_linear_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 2))
    for _ in range(3):
        net.train()(torch.randn(16, 5))
    net.eval()
    x = torch.randn(16, 5)
    cnet = to_continuous(net, x).eval()
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        cnet.resample({"0": 5, "3": 3})
        small = cnet.export()
        assert (small[0].out_features, small[1].num_features, small[3].in_features, small[5].in_features) == (5, 5, 5, 3)
        assert torch.allclose(cnet(x), small(x), atol=1e-5)


def test_dct_interpolation_is_exact_on_band_limited_functions():
    n, m = 24, 10
    t_n, t_m = (np.arange(n) + 0.5) / n, (np.arange(m) + 0.5) / m
    coef = np.random.default_rng(0).normal(size=6)
    f = lambda t: sum(c * np.cos(np.pi * k * t) for k, c in enumerate(coef))  # noqa: E731
    a = interpolation_matrix(n, m, "dct")
    assert np.allclose(a @ f(t_n), f(t_m))
    assert np.allclose(interpolation_matrix(n, n, "dct"), np.eye(n))
    assert np.allclose(axis_op(n, m, "consumer", "dct").matrix().sum(1), a.sum(1) * n / m)
    net = _randomize_bn(TinyResCNN(8, 6))
    x = torch.randn(2, 2, 5, 5)
    cnet = to_continuous(net, x, interpolation="dct").eval()
    with torch.no_grad():
        assert _max_rel(net(x), cnet(x)) <= 1e-4
        cnet.resample(0.5)
        assert torch.allclose(cnet(x), cnet.export()(x), atol=1e-5)
