"""Spectrum / Nyquist width, knee bisection and allocation on fake models (no thesislib.continuous)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from thesislib.capacity import (CostModel, LayerProfile, Profile, allocate, band_limited, compare, knee_width,
                                nyquist_from_spectrum, nyquist_width, profile, proportional_widths, spectrum,
                                uniform_widths)
from thesislib.capacity.knee import bisect_smallest

# --------------------------------------------------------------------------- spectrum / nyquist


@st.composite
def band_limited_case(draw):
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    dim = draw(st.integers(-ndim, ndim - 1))
    n = draw(st.integers(1, 48))
    shape[dim] = n
    k = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**31 - 1))
    return shape, dim, k, seed


@settings(max_examples=60, deadline=None)
@given(band_limited_case(), st.sampled_from([torch.float64, torch.float32]))
def test_band_limited_signal_gives_k_exactly(case, dtype):
    shape, dim, k, seed = case
    w = band_limited(shape, k, dim, torch.Generator().manual_seed(seed), dtype=dtype)
    assert nyquist_width(w, dim, energy=1.0) == k
    power = spectrum(w, dim).numpy()
    last_share = power[k - 1] / power.sum()
    # any threshold the k-th component is needed for gives exactly k
    assert nyquist_width(w, dim, energy=1.0 - 0.5 * last_share) == k
    assert nyquist_width(w.numpy(), dim, energy=1.0) == k


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30), st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_nyquist_monotone_in_energy(values, e1, e2):
    w = torch.tensor(values, dtype=torch.float64)
    lo, hi = sorted((e1, e2))
    assert 1 <= nyquist_width(w, 0, lo) <= nyquist_width(w, 0, hi) <= len(values)


def test_spectrum_is_dct_power_averaged_and_parseval():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, 3, generator=g, dtype=torch.float64)
    p = spectrum(w, dim=1)
    expected = (scipy.fft.dct(w.numpy(), axis=1, norm="ortho") ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(p.sum().item(), (w ** 2).sum(1).mean().item(), rtol=1e-12)
    assert isinstance(spectrum(w.numpy(), 1), np.ndarray)


def test_constant_and_zero_need_one_sample():
    assert nyquist_width(torch.ones(7, 3), 0) == 1
    assert nyquist_width(torch.zeros(7, 3), 0) == 1


def test_highest_frequency_needs_all_samples():
    n = 9
    w = scipy.fft.idct(np.eye(n)[n - 1], norm="ortho")
    assert nyquist_width(w, 0, 0.5) == n


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.01, float("nan")])
def test_bad_energy(energy):
    with pytest.raises(ValueError, match="energy"):
        nyquist_width(torch.ones(4), 0, energy)


def test_bad_tensors_and_dims():
    with pytest.raises(ValueError, match="empty"):
        nyquist_width(torch.ones(0, 3), 0)
    with pytest.raises(ValueError, match="NaN"):
        nyquist_width(torch.tensor([1.0, float("nan")]), 0)
    with pytest.raises(ValueError, match="out of range"):
        nyquist_width(torch.ones(3, 4), 2)
    with pytest.raises(ValueError, match="out of range"):
        spectrum(torch.ones(3, 4), -3)
    with pytest.raises(ValueError, match="power"):
        nyquist_from_spectrum(np.array([1.0, -1.0]))


# --------------------------------------------------------------------------- fake continuous net


@dataclass
class Member:
    module_name: str
    param_name: str
    dim: int
    role: str


@dataclass
class Group:
    name: str
    size: int
    width: int
    members: list = field(default_factory=list)


class FakeCNet(nn.Module):
    """Groups, resample and a quality that is a step function of each group's width."""

    def __init__(self, groups, knees=None):
        super().__init__()
        self.groups = groups
        self.knees = knees or {}
        self.scale = nn.Parameter(torch.ones(1))
        self.calls = 0

    def resample(self, widths, antialias=True):
        for g in self.groups:
            if g.name in widths:
                if widths[g.name] < 1:
                    raise ValueError("width < 1")
                g.width = int(widths[g.name])

    # the part of ContinuousNet's state API that knees and allocations use (capacity.ContinuousLike)
    @property
    def widths(self):
        return {g.name: g.width for g in self.groups}

    @property
    def full_widths(self):
        return {g.name: g.size for g in self.groups}

    @contextlib.contextmanager
    def preserved(self, parameters=False):
        widths = self.widths
        try:
            yield self
        finally:
            self.resample(widths)

    def quality(self, model):
        self.calls += 1
        return 0.9 - 0.5 * sum(g.width < self.knees.get(g.name, 0) for g in self.groups)


def chain_net(sizes):
    """Groups g0..g{n-1}: layer i consumes g{i-1} (none for i=0) and produces g{i}; a head consumes the last."""
    groups = []
    for i, n in enumerate(sizes):
        members = [Member(f"l{i}", "weight", 0, "producer"), Member(f"l{i + 1}", "weight", 1, "consumer")]
        groups.append(Group(f"g{i}", n, n, members))
    return FakeCNet(groups)


def chain_profile(sizes, macs, latency):
    layers = {}
    for i in range(len(sizes) + 1):
        cin = sizes[i - 1] if i > 0 else 3
        cout = sizes[i] if i < len(sizes) else 10
        layers[f"l{i}"] = LayerProfile(f"l{i}", "conv", int(macs[i]), float(latency[i]), cin, cout)
    return Profile(layers=layers, latency=sum(latency), device="cpu", threads=1, key="fake", repeats=1)


# --------------------------------------------------------------------------- knees


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.data())
def test_bisection_finds_smallest_passing_width(size, data):
    knee = data.draw(st.integers(1, size))
    calls = []

    def passes(w):
        calls.append(w)
        return w >= knee
    assert bisect_smallest(passes, 1, size) == knee
    assert len(calls) <= int(np.ceil(np.log2(size))) + 1


def test_knee_width_restores_widths_and_holds_others_full():
    net = FakeCNet([Group("a", 32, 20), Group("b", 16, 16)], knees={"a": 11, "b": 5})
    seen = []

    def evaluate(model):
        seen.append({g.name: g.width for g in model.groups})
        return model.quality(model)
    assert knee_width(net, "a", evaluate, tol=0.01) == 11
    assert all(s["b"] == 16 for s in seen)
    assert {g.name: g.width for g in net.groups} == {"a": 20, "b": 16}
    assert knee_width(net, "b", evaluate, tol=0.01) == 5
    with pytest.raises(ValueError, match="unknown group"):
        knee_width(net, "c", evaluate)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.data())
def test_knee_on_a_grid_is_the_first_passing_candidate(size, grid, data):
    from thesislib.capacity.knee import width_grid

    knee = data.draw(st.integers(1, size))
    net = FakeCNet([Group("a", size, size)], knees={"a": knee})
    candidates = width_grid(size, grid)
    assert candidates[-1] == size and candidates[0] >= 1 and len(candidates) == min(size, grid)
    assert knee_width(net, "a", net.quality, grid=grid) == min(c for c in candidates if c >= knee)


def test_knee_width_steps_gives_a_passing_upper_bound():
    net = FakeCNet([Group("a", 64, 64)], knees={"a": 23})
    w = knee_width(net, "a", net.quality, steps=2)
    assert 23 <= w <= 64 and net.calls == 3


def test_compare_spearman_and_error():
    knees = {"a": 4, "b": 8, "c": 16}
    table = compare({"good": {"a": 5, "b": 9, "c": 20}, "flat": {"a": 7, "b": 7, "c": 7},
                     "reverse": {"a": 16, "b": 8, "c": 4}}, knees)
    assert table.spearman["good"] == pytest.approx(1.0)
    assert table.spearman["reverse"] == pytest.approx(-1.0)
    assert np.isnan(table.spearman["flat"])
    assert table.mean_relative_error["good"] == pytest.approx(np.mean([1 / 4, 1 / 8, 4 / 16]))
    assert table.best == "good"


# --------------------------------------------------------------------------- allocation


def test_cost_model_macs_is_bilinear_in_widths():
    net = chain_net([8, 16])
    prof = chain_profile([8, 16], macs=[100, 400, 50], latency=[1, 1, 1])
    model = CostModel(net, prof, "macs")
    assert model.full == 550
    assert model.total({"g0": 4, "g1": 8}) == pytest.approx(100 * 0.5 + 400 * 0.25 + 50 * 0.5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 24), min_size=1, max_size=5), st.data())
def test_allocate_never_exceeds_budget(sizes, data):
    n = len(sizes)
    macs = data.draw(st.lists(st.integers(1, 10**6), min_size=n + 1, max_size=n + 1))
    lat = data.draw(st.lists(st.floats(1e-6, 1e-2), min_size=n + 1, max_size=n + 1))
    caps = {f"g{i}": data.draw(st.integers(1, s)) for i, s in enumerate(sizes)}
    budget = data.draw(st.floats(0.01, 1.0))
    cost = data.draw(st.sampled_from(["macs", "latency"]))
    step = data.draw(st.sampled_from([1, 2, 0.25]))
    net = chain_net(sizes)
    prof = chain_profile(sizes, macs, lat)
    model = CostModel(net, prof, cost)
    minimum = model.fraction({g.name: 1 for g in net.groups})
    for fn in (lambda: allocate(net, budget, cost, capacity=caps, profile=prof, step=step),
               lambda: uniform_widths(net, budget, cost, profile=prof),
               lambda: proportional_widths(net, budget, caps, cost, profile=prof)):
        if minimum > budget:
            with pytest.raises(ValueError, match="minimum reachable"):
                fn()
            continue
        widths = fn()
        assert set(widths) == {g.name for g in net.groups}
        assert all(1 <= widths[g.name] <= g.size for g in net.groups)
        assert model.total(widths) <= budget * model.full


def test_allocate_cuts_oversampled_and_expensive_groups_first():
    sizes = [32, 32]
    net = chain_net(sizes)
    # l1 (g0 -> g1) dominates; g0 needs only 4 channels, g1 needs all 32
    prof = chain_profile(sizes, macs=[1000, 100000, 1000], latency=[1, 1, 1])
    widths = allocate(net, 0.5, "macs", capacity={"g0": 4, "g1": 32}, profile=prof)
    assert widths["g1"] == 32 and widths["g0"] <= 16
    # with the cost on g1's side, the latency model differs from the MACs model
    prof2 = chain_profile(sizes, macs=[1000, 100000, 1000], latency=[1, 1, 100])
    w_lat = allocate(net, 0.5, "latency", capacity={"g0": 32, "g1": 32}, profile=prof2)
    assert w_lat["g1"] < w_lat["g0"]


def test_uniform_widths_share_one_ratio():
    net = chain_net([16, 32, 64])
    prof = chain_profile([16, 32, 64], macs=[10, 20, 40, 5], latency=[1, 1, 1, 1])
    widths = uniform_widths(net, 0.3, "macs", profile=prof)
    ratios = [widths[g.name] / g.size for g in net.groups]
    assert max(ratios) - min(ratios) <= 1 / 16 + 1e-12


@pytest.mark.parametrize("budget", [0.0, 1.5, -1])
def test_bad_budget(budget):
    net = chain_net([4])
    prof = chain_profile([4], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="budget"):
        allocate(net, budget, "macs", capacity={"g0": 2}, profile=prof)


def test_bad_cost_and_missing_profile():
    net = chain_net([4])
    prof = chain_profile([4], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="cost"):
        allocate(net, 0.5, "flops", capacity={"g0": 2}, profile=prof)
    with pytest.raises(ValueError, match="profile"):
        allocate(net, 0.5, "macs", capacity={"g0": 2})


# --------------------------------------------------------------------------- profile


def test_profile_counts_macs_and_caches():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    x = torch.randn(2, 3, 6, 6)
    p = profile(net, x, repeats=2, warmup=1, threads=1)
    assert p.layers["0"].macs == 2 * 8 * 6 * 6 * 3 * 9
    assert p.layers["2"].macs == 2 * 8 * 4 * 4 * 1 * 9 and p.layers["2"].depthwise
    assert p.layers["4"].macs == 2 * 5 * 128
    assert all(layer.latency > 0 for layer in p.layers.values()) and p.latency > 0
    assert profile(net, x, repeats=2, warmup=1, threads=1) is p
    with pytest.raises(ValueError, match="repeats"):
        profile(net, x, repeats=0)


def test_profile_disk_cache_round_trip(tmp_path):
    from thesislib.capacity.profiling import clear_cache

    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(3, 4)
    p = profile(net, x, repeats=2, warmup=0, cache_dir=tmp_path)
    files = list(tmp_path.glob("profile-*.json"))
    assert len(files) == 1
    clear_cache()
    q = profile(net, x, repeats=2, warmup=0, cache_dir=tmp_path)
    assert q is not p and q.layers == p.layers and q.latency == p.latency


def test_profile_attention_macs():
    from thesislib.models import vit

    net = vit(image_size=8, patch_size=4, dim=8, depth=1, num_heads=2, head_dim=4)
    p = profile(net, torch.randn(3, 1, 8, 8), repeats=1, warmup=0)
    tokens = 1 + 4
    assert p.layers["blocks.0.attn"].macs == 2 * 3 * tokens * tokens * 2 * 4
    assert p.layers["blocks.0.attn.qkv"].macs == 3 * tokens * 24 * 8
