"""Capacity estimators on real continuous models (thesislib.continuous)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from thesislib.capacity import (allocate, band_limited, capacities, capacities_at, group_capacity, knee_width,
                                output_error, uniform_widths)
from thesislib.capacity.allocation import CostModel, profile_continuous
from thesislib.continuous import to_continuous


def shuffled_band_limited_net(kind: str, n: int, k: int, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """Producer -> ReLU -> consumer whose tensors are band-limited to ``k`` along the hidden channels,
    then shuffled by one random permutation of the hidden channels (the function is unchanged)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "linear":
        net = nn.Sequential(nn.Linear(5, n), nn.ReLU(), nn.Linear(n, 3))
        x = torch.randn(16, 5, generator=g)
    else:
        net = nn.Sequential(nn.Conv2d(2, n, 3, padding=1), nn.ReLU(), nn.Conv2d(n, 3, 1))
        x = torch.randn(4, 2, 6, 6, generator=g)
    producer, consumer = net[0], net[2]
    perm = torch.randperm(n, generator=g)
    with torch.no_grad():
        producer.weight.copy_(band_limited(producer.weight.shape, k, 0, g)[perm])
        producer.bias.copy_(band_limited(producer.bias.shape, k, 0, g)[perm])
        consumer.weight.copy_(band_limited(consumer.weight.shape, k, 1, g)[:, perm])
    return net, x


@pytest.mark.parametrize("kind,n,k,seed", [("linear", 32, 6, 0), ("linear", 48, 10, 1), ("conv", 40, 8, 2)])
def test_shuffled_band_limited_group_recovers_k(kind, n, k, seed):
    net, x = shuffled_band_limited_net(kind, n, k, seed)
    cnet = to_continuous(net, x)
    assert len(cnet.groups) == 1
    name = cnet.groups[0].name
    assert cnet.groups[0].size == n
    predicted = group_capacity(cnet, name, energy=0.99, method="weights")
    assert abs(predicted - k) <= 0.2 * k, (predicted, k)
    # the shuffled tensors themselves look broadband: the permutation is what makes k visible
    from thesislib.capacity import nyquist_width
    assert nyquist_width(net[0].weight, 0, 0.99) > 1.2 * k


def test_estimators_and_cnet_capacity_on_a_small_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4)).eval()
    x = torch.randn(8, 1, 8, 8)
    cnet = to_continuous(net, x).eval()
    sizes = {g.name: g.size for g in cnet.groups}
    assert sorted(sizes.values()) == [8, 12]
    for method in ("weights", "output", "features"):
        caps = capacities(cnet, 0.99, method, calib=x)
        assert set(caps) == set(sizes) and all(1 <= caps[g] <= sizes[g] for g in sizes)
    # the output estimator at energy=1 keeps the output exactly only at full width (or equal function)
    caps_low = capacities(cnet, 0.5, "output", calib=x)
    caps_high = capacities(cnet, 0.9999, "output", calib=x)
    assert all(caps_low[g] <= caps_high[g] for g in sizes)
    for method in ("weights", "output", "features"):
        both = capacities_at(cnet, [0.5, 0.9999], method, calib=x)
        assert both[0.5] == capacities(cnet, 0.5, method, calib=x)
        assert both[0.9999] == capacities(cnet, 0.9999, method, calib=x)
    # the output error vanishes at full width and is what the estimator thresholds
    name0 = cnet.groups[0].name
    errors = output_error(cnet, name0, [sizes[name0], 1], x)
    assert errors[sizes[name0]] < 1e-12 and errors[1] > 0
    assert not hasattr(cnet, "capacity")  # capacity is thesislib.capacity.capacities(cnet), not a method
    # widths are untouched by the estimators
    assert all(g.width == g.size for g in cnet.groups)

    @torch.no_grad()
    def evaluate(model):
        return -float((model(x) - net(x)).pow(2).mean())

    name = cnet.groups[0].name
    knee = knee_width(cnet, name, evaluate, tol=1e-9)
    assert 1 <= knee <= sizes[name]
    assert all(g.width == g.size for g in cnet.groups)

    prof = profile_continuous(cnet, x, repeats=2, warmup=0)
    for cost in ("macs", "latency"):
        model = CostModel(cnet, prof, cost)
        for fn in (lambda: allocate(cnet, 0.5, cost, profile=prof), lambda: uniform_widths(cnet, 0.5, cost, profile=prof)):
            widths = fn()
            assert model.total(widths) <= 0.5 * model.full
    with pytest.raises(ValueError, match="minimum reachable"):
        allocate(cnet, 0.001, "macs", profile=prof)
    with pytest.raises(ValueError, match="method"):
        group_capacity(cnet, name, method="spectral")
    with pytest.raises(ValueError, match="calib"):
        group_capacity(cnet, name, method="output")


def test_sobolev_finetune_band_limits_the_weights():
    from thesislib.capacity.smoothing import smooth_finetune, sobolev_penalty

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 4))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    cnet = to_continuous(net, x[:8])
    before = capacities(cnet, 0.9)
    p0 = float(sobolev_penalty(cnet).detach())
    history = smooth_finetune(cnet, [(x, y)], steps=40, penalty=5.0, lr=0.05)
    assert len(history) == 40 and history[-1] < 0.5 * p0
    after = capacities(cnet, 0.9)
    assert all(after[g] <= before[g] for g in before) and sum(after.values()) < sum(before.values())
    with pytest.raises(ValueError, match="steps"):
        smooth_finetune(cnet, [(x, y)], steps=0)
