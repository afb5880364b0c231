"""Spectral normalisation under resampling and pruning: exact σ, Lipschitz estimates, power-iteration vectors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from thesislib.continuous import to_continuous
from thesislib.graph import spectral_norms
from thesislib.models.lipschitz import sn_classifier, sn_discriminator
from thesislib.pruning import prune
from thesislib.spectral import (check_power_vectors, empirical_lipschitz, layer_sigmas, lipschitz_bound, matrix_sigma,
                                operator_sigma, power_iteration_drift, reset_power_vectors)


@pytest.fixture(scope="module")
def sn_net() -> nn.Module:
    torch.manual_seed(0)
    net = sn_classifier(width=0.25).eval()
    return reset_power_vectors(net)


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_matrix_sigma_is_the_svd_norm():
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    expected = np.linalg.svd(w.reshape(6, -1).numpy().astype(np.float64), compute_uv=False)[0]
    assert matrix_sigma(w) == pytest.approx(float(expected), rel=1e-10)
    assert matrix_sigma(w, dim=1) == pytest.approx(
        float(np.linalg.svd(w.transpose(0, 1).reshape(3, -1).numpy().astype(np.float64), compute_uv=False)[0]), rel=1e-10)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_operator_sigma_matches_the_dense_operator(stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding)
    shape = (3, 7, 7)
    dense = torch.autograd.functional.jacobian(
        lambda x: nn.functional.conv2d(x, conv.weight.double(), None, stride, padding), torch.zeros(1, *shape).double())
    exact = float(torch.linalg.matrix_norm(dense.reshape(-1, int(np.prod(shape))), ord=2))
    assert operator_sigma(conv, shape) == pytest.approx(exact, rel=1e-5)
    lin = nn.Linear(5, 3)
    assert operator_sigma(lin, (5,)) == pytest.approx(matrix_sigma(lin.weight), rel=1e-12)


def test_lipschitz_bound_holds_and_is_tight_for_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(6, 2)
    x = torch.randn(32, 6)
    y = torch.randint(0, 2, (32,))
    # the margin z_y - z_other of a linear model has gradient w_y - w_other: the same norm at every point
    expected = float((lin.weight[1] - lin.weight[0]).detach().norm())
    assert empirical_lipschitz(lin, [(x, y)]) == pytest.approx(expected, rel=1e-6)
    assert expected <= math.sqrt(2) * lipschitz_bound(layer_sigmas(lin, x)) + 1e-9


def test_empirical_estimate_below_the_bound(sn_net):
    x = _x(16)
    y = torch.randint(0, 10, (16,))
    rows = layer_sigmas(sn_net, x)
    assert all(r["matrix"] == pytest.approx(1.0, abs=1e-5) for r in rows)
    assert empirical_lipschitz(sn_net, [(x, y)]) <= math.sqrt(2) * lipschitz_bound(rows)


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.25])
def test_exported_spectral_norm_weights_have_sigma_one(sn_net, ratio):
    """Acceptance: the raw weight resampled and re-normalised -> every exported weight's σ <= 1 + 1e-3, the
    parametrisation kept, its power-iteration vectors consistent (one train-mode forward moves σ < 1 %)."""
    cnet = to_continuous(sn_net, _x(2))
    assert len(cnet.groups) >= 4  # every hidden group is continuous
    small = cnet.resample(ratio).export()
    norms = spectral_norms(small)
    assert len(norms) == len(spectral_norms(sn_net))
    for row in layer_sigmas(small, _x(2), operator=False):
        assert row["matrix"] <= 1 + 1e-3
        assert row["matrix"] == pytest.approx(1.0, abs=1e-3)
    assert max(r["drift"] for r in power_iteration_drift(copy.deepcopy(small), _x(8))) <= 0.01
    assert sum(small(_x(2)).shape) > 0


def test_resampling_the_normalised_weight_breaks_sigma(sn_net):
    """eq-sn-commute: R(W/σ) is not normalised -- the first layer (only its output axis resampled) gets
    σ ≈ sqrt(r) (eq-sn-scale with r_in = 1)."""
    from thesislib.pruning.structural import strip_spectral_norm

    plain = copy.deepcopy(sn_net)
    strip_spectral_norm(plain)
    small = to_continuous(plain, _x(2)).resample(0.25).export()
    rows = layer_sigmas(small, _x(2), operator=False)
    assert max(abs(r["matrix"] - 1) for r in rows) > 1e-2
    assert not spectral_norms(small)
    assert sn_net.features[0].weight.shape[0] == 8  # the original is untouched


@pytest.mark.parametrize("method", ["l1", "obs"])
def test_pruning_a_spectral_norm_net_twice_renormalises(sn_net, method):
    calib = [(_x(8), torch.randint(0, 10, (8,)))]
    for _ in range(2):  # a second prune of the same net once failed: the copy shared the parametrised class
        small = prune(sn_net, method, 0.5, _x(1), calib=calib, calib_batches=1)
    assert sn_net.features[0].weight.shape == (8, 1, 3, 3)
    assert len(spectral_norms(small)) == len(spectral_norms(sn_net))
    assert small.features[0].weight.shape[0] == 4
    for row in layer_sigmas(small, _x(1), operator=False):
        assert row["matrix"] == pytest.approx(1.0, abs=1e-3)


def test_discriminator_converts_with_every_group_continuous():
    torch.manual_seed(0)
    net = reset_power_vectors(sn_discriminator(width=0.125, patch_size=32).eval())
    x = torch.rand(2, 3, 32, 32)
    cnet = to_continuous(net, x)
    assert len(cnet.groups) == 9 and set(cnet.discrete_groups) == {"head"}
    small = cnet.resample(0.5).export()
    assert small(x).shape == (2, 2)
    assert max(r["matrix"] for r in layer_sigmas(small, x, operator=False)) <= 1 + 1e-3


# ---------------------------------------------------------------------------------------------- bad input
def test_nan_power_iteration_vector_is_a_clear_error(sn_net):
    net = copy.deepcopy(sn_net)
    net.features[2].parametrizations.weight[0]._u.fill_(float("nan"))
    for call in (lambda: check_power_vectors(net), lambda: to_continuous(net, _x(2)),
                 lambda: prune(net, "l1", 0.5, _x(1))):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert "power-iteration vector _u" in message and "'features.2'" in message
        assert "reset_power_vectors" in message
    reset_power_vectors(net)
    check_power_vectors(net)
    assert bool(torch.isfinite(net.features[2].parametrizations.weight[0]._u).all())


def test_unsupported_parametrisation_is_a_clear_error():
    net = nn.Sequential(weight_norm(nn.Conv2d(1, 4, 3)), nn.ReLU(), nn.Conv2d(4, 2, 3))
    x = torch.randn(1, 1, 8, 8)
    for call in (lambda: to_continuous(net, x), lambda: prune(net, "l1", 0.5, x)):
        with pytest.raises(ValueError, match=r"module '0' .*only one spectral_norm.*remove_parametrizations"):
            call()
    torch.nn.utils.parametrize.remove_parametrizations(net[0], "weight", leave_parametrized=True)  # the advice
    assert torch.allclose(to_continuous(net, x)(x), net(x), atol=1e-6)


def test_spectral_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        matrix_sigma(torch.empty(0))
    with pytest.raises(ValueError, match="Conv1d/2d/3d or Linear"):
        operator_sigma(nn.ReLU(), (3,))
    with pytest.raises(ValueError, match="at least one layer"):
        lipschitz_bound([])
    with pytest.raises(ValueError, match="empty loader"):
        empirical_lipschitz(nn.Linear(3, 2), [])
    with pytest.raises(ValueError, match="no spectral_norm layer"):
        power_iteration_drift(nn.Linear(3, 2), torch.randn(1, 3))
    with pytest.raises(ValueError, match="multiple of 4"):
        sn_classifier(image_size=30)


def test_spectral_norm_module_is_registered():
    lin = spectral_norm(nn.Linear(4, 4))
    assert len(spectral_norms(nn.Sequential(lin))) == 1
