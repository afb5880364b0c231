"""The method registries (pruning methods, capacity estimators), ContinuousNet's state API, the one
top-k-per-partition rule, and the clear errors of every public entry point on bad input."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesislib import capacity as cap
from thesislib.continuous import to_continuous
from thesislib.graph import keep_count
from thesislib.pruning import (METHOD_REGISTRY, METHODS, NEEDS_CALIB, SCORED, PruningMethod, allocate, analyse,
                               channel_scores, get_method, prune, register_method, top_k_per_partition)
from thesislib.pruning import pruner

CALIBRATED = {"taylor", "hessian", "obs", "lfp"}


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _data(n: int = 16) -> tuple[torch.Tensor, DataLoader]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 6, 6, generator=gen)
    y = torch.randint(0, 4, (n,), generator=gen)
    return x, DataLoader(TensorDataset(x, y), batch_size=4)


def _nan(net: nn.Module) -> nn.Module:
    """``net`` (a plain network or a ContinuousNet) with one NaN in its second convolution's weight."""
    weight = [p for p in net.parameters() if p.dim() == 4][1]
    with torch.no_grad():
        weight[0, 0, 0, 0] = float("nan")
    return net


# --------------------------------------------------------------------------- registries


def test_registry_lists_every_method_with_its_calibration_need() -> None:
    assert METHODS == ("random", "l1", "l2", "bn_scale", "taylor", "hessian", "obs", "lfp", "ifm", "fold", "gmp",
                       "continuous")
    assert tuple(METHOD_REGISTRY) == METHODS
    assert NEEDS_CALIB == CALIBRATED
    for name, method in METHOD_REGISTRY.items():
        assert method.name == name and method.description
        assert method.needs_calibration == (name in CALIBRATED)
        assert get_method(name) is method
    assert METHOD_REGISTRY["continuous"].convert is not None and METHOD_REGISTRY["continuous"].score is None
    assert {n for n, m in METHOD_REGISTRY.items() if m.plan is not None} == {"obs", "ifm", "fold"}
    assert SCORED == ("random", "l1", "l2", "bn_scale", "taylor", "hessian", "lfp", "gmp")
    assert cap.METHODS == tuple(cap.ESTIMATORS) == ("weights", "output", "features", "fisher")
    assert {n: e.needs_calibration for n, e in cap.ESTIMATORS.items()} == {"weights": False, "output": True,
                                                                           "features": True, "fisher": True}


def test_registries_refuse_duplicates_and_malformed_entries() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_method(METHOD_REGISTRY["l1"])
    with pytest.raises(ValueError, match="either score"):
        PruningMethod("nothing", False, "neither scores nor converts")
    with pytest.raises(ValueError, match="either score"):
        PruningMethod("both", False, "d", score=pruner._l2, convert=pruner._continuous)
    with pytest.raises(ValueError, match="identifier"):
        PruningMethod("not a name", False, "d", score=pruner._l2)
    with pytest.raises(ValueError, match="already registered"):
        cap.register_estimator(cap.ESTIMATORS["weights"])


@pytest.fixture
def smallest_l1():
    """A method registered for one test: keep the filters of *smallest* L1 norm."""
    method = register_method(PruningMethod(
        "smallest_l1", False, "the opposite of l1 (test only)",
        score=lambda model, groups, calib, batches, seed: {k: -v for k, v in pruner._l1(model, groups, calib,
                                                                                          batches, seed).items()}))
    yield method
    pruner.METHOD_REGISTRY.unregister(method.name)


def test_prune_and_channel_scores_dispatch_through_the_registry(smallest_l1) -> None:
    net = _net()
    x, _ = _data()
    small = prune(net, "smallest_l1", 0.5, x[:2])
    norms = net[0].weight.detach().abs().sum((1, 2, 3))
    kept = sorted(torch.argsort(norms)[:4].tolist())
    assert torch.equal(small[0].weight, net[0].weight[kept])
    scores = channel_scores(net, "smallest_l1", x[:2])
    assert torch.allclose(scores["0"], -norms)
    with pytest.raises(ValueError, match="smallest_l1"):  # the error lists what is registered now
        prune(net, "no_such_method", 0.5, x[:2])


# --------------------------------------------------------------------------- top-k per partition


def test_top_k_per_partition_is_exact_with_stable_ties() -> None:
    scores = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0, 0.0])
    assert top_k_per_partition(scores, [[0, 1, 2], [3, 4, 5]], [2, 1]) == [0, 2, 3]
    assert top_k_per_partition(scores, [[5, 4, 3]], [2]) == [3, 4]
    assert top_k_per_partition(torch.ones(4), [range(4)], [2]) == [0, 1]  # ties: the lower index
    assert top_k_per_partition(scores, [[0, 1]], [0]) == []
    with pytest.raises(ValueError, match="cannot keep 3"):
        top_k_per_partition(scores, [[0, 1]], [3])
    with pytest.raises(ValueError, match="partitions"):
        top_k_per_partition(scores, [[0, 1], [2]], [1])


# --------------------------------------------------------------------------- ContinuousNet state


def test_widths_reflect_resample_and_are_a_copy() -> None:
    x, _ = _data()
    cnet = to_continuous(_net(), x[:2]).eval()
    sizes = {g.name: g.size for g in cnet.groups}
    assert cnet.full_widths == cnet.widths == sizes
    cnet.resample(0.5)
    assert cnet.widths == {n: keep_count(0.5, s) for n, s in sizes.items()}
    name = next(iter(sizes))
    cnet.resample({name: 3})
    assert cnet.widths[name] == 3 and cnet.full_widths == sizes
    widths = cnet.widths
    widths[name] = 1
    assert cnet.widths[name] == 3


def test_preserved_restores_widths_antialias_and_overrides_even_when_the_body_raises() -> None:
    x, calib = _data()
    cnet = to_continuous(_net(), x[:2])
    cnet.resample(0.5, antialias=False).recalibrate(calib, batches=2).eval()
    before, state = cnet(x), cnet.snapshot()
    with pytest.raises(RuntimeError, match="inside"):
        with cnet.preserved():
            cnet.resample(0.25, antialias=True).recalibrate(calib, batches=1)
            cnet.train()
            assert not torch.equal(cnet.eval()(x), before)
            raise RuntimeError("inside")
    after = cnet.snapshot()
    assert (after.widths, after.antialias, after.training) == (state.widths, False, False)
    assert after.overrides.keys() == state.overrides.keys() and after.override_key == state.override_key
    assert torch.equal(cnet(x), before)  # same widths, sampling mode and recalibrated statistics


def test_preserved_parameters_restores_the_control_points() -> None:
    x, _ = _data()
    cnet = to_continuous(_net(), x[:2]).eval()
    weight = next(p for p in cnet.parameters() if p.dim() == 4)
    original = weight.detach().clone()
    with cnet.preserved(parameters=True):
        with torch.no_grad():
            weight.add_(1.0)
    assert torch.equal(weight, original)
    with cnet.preserved():  # widths and sampling state only
        with torch.no_grad():
            weight.add_(1.0)
    assert torch.equal(weight, original + 1.0)


def test_restore_refuses_a_foreign_state() -> None:
    x, _ = _data()
    cnet = to_continuous(_net(), x[:2])
    other = to_continuous(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)), torch.randn(2, 3))
    with pytest.raises(ValueError, match="another network"):
        cnet.restore(other.snapshot())
    with pytest.raises(ValueError, match="NetState"):
        cnet.restore({"widths": cnet.widths})


def test_continuous_never_imports_capacity() -> None:
    root = Path(__file__).resolve().parents[1] / "thesislib" / "continuous"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("thesislib.capacity") for n in names), path.name


def test_knee_width_leaves_a_real_continuous_net_as_it_was() -> None:
    x, calib = _data()
    net = _net()
    cnet = to_continuous(net, x[:2])
    cnet.resample(0.5, antialias=False).recalibrate(calib, batches=2).eval()
    before = cnet(x)
    name = cnet.groups[0].name

    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        return -float((model(x) - net(x)).pow(2).mean())

    width = cap.knee_width(cnet, name, evaluate, tol=1e-3, recalibrate=lambda c: c.recalibrate(calib, batches=2))
    assert 1 <= width <= cnet.full_widths[name]
    assert cnet.widths == {g.name: keep_count(0.5, g.size) for g in cnet.groups}
    assert cnet.snapshot().antialias is False and torch.equal(cnet(x), before)


# --------------------------------------------------------------------------- bad input, per entry point


def test_prune_bad_input() -> None:
    x, calib = _data()
    with pytest.raises(ValueError, match="METHODS = random, l1"):
        prune(_net(), "magnitude", 0.5, x[:2])
    for ratio in (0.0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            prune(_net(), "l1", ratio, x[:2])
    with pytest.raises(ValueError, match=r"ratio\['0'\].*\(0, 1\]"):
        prune(_net(), "continuous", {"0": 2.0}, x[:2])
    with pytest.raises(ValueError, match="'taylor' needs calibration"):
        prune(_net(), "taylor", 0.5, x[:2])
    with pytest.raises(ValueError, match=r"NaN or infinite values in parameter '3\.weight'"):
        prune(_nan(_net()), "l1", 0.5, x[:2])


def test_channel_scores_bad_input() -> None:
    x, calib = _data()
    with pytest.raises(ValueError, match="unknown pruning method 'nope'; METHODS"):
        channel_scores(_net(), "nope", x[:2])
    with pytest.raises(ValueError, match="'continuous' has no per-channel scores"):
        channel_scores(_net(), "continuous", x[:2])
    with pytest.raises(ValueError, match="'hessian' needs calibration"):
        channel_scores(_net(), "hessian", x[:2])
    with pytest.raises(ValueError, match="NaN"):
        channel_scores(_nan(_net()), "l2", x[:2], calib=calib)


def test_pruning_allocate_bad_input() -> None:
    x, _ = _data()
    groups = analyse(_net(), x[:2]).groups
    scores = {g.name: torch.rand(g.size) for g in groups}
    with pytest.raises(ValueError, match="allocation must be one of"):
        allocate(groups, 0.5, "layerwise")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        allocate(groups, -0.1, "uniform")
    with pytest.raises(ValueError, match="needs scores"):
        allocate(groups, 0.5, "global")
    with pytest.raises(ValueError, match="lack group"):
        allocate(groups, 0.5, "global", {groups[0].name: scores[groups[0].name]})
    scores[groups[0].name][0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        allocate(groups, 0.5, "global", scores)
    with pytest.raises(ValueError, match="unknown group"):
        allocate(groups, {"nope": 0.5}, "uniform")


def test_capacities_bad_input() -> None:
    x, _ = _data()
    cnet = to_continuous(_net(), x[:2]).eval()
    with pytest.raises(ValueError, match="unknown capacity method 'spectral': choose one of weights, output, features, "
                                         "fisher"):
        cap.capacities(cnet, 0.99, "spectral")
    for method in ("output", "features", "fisher"):
        with pytest.raises(ValueError, match=f"'{method}' needs calibration data"):
            cap.capacities(cnet, 0.99, method)
    for energy in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
            cap.capacities(cnet, energy)
    with pytest.raises(ValueError, match="unknown group"):
        cap.capacities(cnet, 0.99, groups=["nope"])
    with pytest.raises(ValueError, match="unknown group"):
        cap.group_capacity(cnet, "nope")
    nan = _nan(to_continuous(_net(), x[:2]))
    for method in cap.METHODS:
        with pytest.raises(ValueError, match="NaN or infinite values"):
            cap.capacities(nan, 0.99, method, calib=x)


def test_capacity_allocate_bad_input() -> None:
    x, _ = _data()
    cnet = to_continuous(_net(), x[:2]).eval()
    sizes = cnet.full_widths
    with pytest.raises(ValueError, match="budget"):
        cap.allocate(cnet, 0.0, "macs", capacity=sizes, example_inputs=x[:2])
    with pytest.raises(ValueError, match="unknown cost"):
        cap.allocate(cnet, 0.5, "flops", capacity=sizes, example_inputs=x[:2])
    with pytest.raises(ValueError, match="finite positive"):
        cap.allocate(cnet, 0.5, "macs", capacity={n: math.nan for n in sizes}, example_inputs=x[:2])
    with pytest.raises(ValueError, match="unknown capacity method"):
        cap.allocate(cnet, 0.5, "macs", method="spectral", example_inputs=x[:2])
    with pytest.raises(ValueError, match="'output' needs calibration"):
        cap.allocate(cnet, 0.5, "macs", method="output", example_inputs=x[:2])
    assert cnet.widths == sizes  # profiling the full-width export left the widths as they were


def test_knee_width_bad_input() -> None:
    x, _ = _data()
    net = _net()
    cnet = to_continuous(net, x[:2]).eval()
    name = cnet.groups[0].name

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            return -float((model(x) - net(x)).pow(2).mean())

    with pytest.raises(ValueError, match="unknown group 'nope'"):
        cap.knee_width(cnet, "nope", evaluate)
    with pytest.raises(ValueError, match="tol"):
        cap.knee_width(cnet, name, evaluate, tol=-0.1)
    with pytest.raises(ValueError, match="evaluate returned nan"):
        cap.knee_width(cnet, name, lambda model: float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite values"):
        cap.knee_width(_nan(to_continuous(_net(), x[:2])), name, evaluate)
