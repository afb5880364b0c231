"""The Fisher-weighted channel spectrum (OBD along the DCT axis) and the ``"fisher"`` capacity estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import thesislib.capacity as cap
from thesislib.capacity.fisher import fisher_spectra, member_parameter
from thesislib.continuous import to_continuous


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 3)).eval()


def _data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II: ``C = D @ w`` along the channel axis."""
    j = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * j * (i + 0.5) / n) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def _to_axis0(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.movedim(dim, 0).reshape(t.shape[dim], -1)


def _brute_force(cnet, group: str, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """½ Σ_members Σ_other E_n[(∂ℓ_n/∂C_j)²] C_j², with C_j leaves of an explicit DCT reparametrisation."""
    g = next(g for g in cnet.groups if g.name == group)
    net = cnet.net
    names = {id(p): k for k, p in net.named_parameters()}
    members = [(m, member_parameter(cnet, m.module_name, m.param_name)) for m in g.members]
    members = [(m, t) for m, t in members if isinstance(t, nn.Parameter)]
    d = _dct_matrix(int(g.size))
    total = torch.zeros(int(g.size), dtype=torch.float64)
    for m, t in members:
        coeffs = torch.tensordot(d, t.detach().double().movedim(m.dim, 0), dims=1)  # [n, ...]
        squares = torch.zeros_like(coeffs)
        for i in range(len(x)):
            leaf = coeffs.clone().requires_grad_(True)
            w = torch.tensordot(d.T, leaf, dims=1).movedim(0, m.dim).float()
            out = functional_call(net, {names[id(t)]: w}, (x[i:i + 1],), strict=False)
            (grad,) = torch.autograd.grad(F.cross_entropy(out, y[i:i + 1]), leaf)
            squares += grad ** 2
        total += 0.5 * (_to_axis0(squares / len(x) * coeffs ** 2, 0)).sum(1)
    return total.numpy()


def test_fisher_spectrum_equals_obd_of_an_explicit_dct_reparametrisation() -> None:
    x, y = _data()
    cnet = to_continuous(_net(), x[:2], permute=False).eval()
    names = [g.name for g in cnet.groups]
    assert len(names) == 2
    got = fisher_spectra(cnet, [(x, y)], batches=1)
    for name in names:
        want = _brute_force(cnet, name, x, y)
        assert got[name].shape == (next(g.size for g in cnet.groups if g.name == name),)
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-12 * want.sum())
        assert np.all(got[name] >= 0) and got[name].sum() > 0


def test_band_limited_group_has_no_fisher_power_above_its_band() -> None:
    x, y = _data()
    cnet = to_continuous(_net(), x[:2], permute=False).eval()
    group = cnet.groups[0]
    k = 2
    d = _dct_matrix(int(group.size))
    keep = torch.zeros(int(group.size), dtype=torch.float64)
    keep[:k] = 1.0
    project = d.T @ torch.diag(keep) @ d  # onto the first k DCT bands
    with torch.no_grad():
        for m in group.members:
            t = member_parameter(cnet, m.module_name, m.param_name)
            if isinstance(t, nn.Parameter):
                t.copy_(torch.tensordot(project, t.double().movedim(m.dim, 0), dims=1).movedim(0, m.dim).float())
    spectrum = fisher_spectra(cnet, [(x, y)], groups=[group.name])[group.name]
    assert spectrum[:k].sum() > 0
    assert spectrum[k:].sum() <= 1e-10 * spectrum.sum()
    assert cap.capacities(cnet, 0.999999, "fisher", calib=[(x, y)], groups=[group.name])[group.name] <= k


def test_fisher_estimator_is_registered_and_restores_the_net() -> None:
    x, y = _data()
    cnet = to_continuous(_net(), x[:2], permute=False).eval()
    assert "fisher" in cap.METHODS and cap.ESTIMATORS["fisher"].needs_calibration
    cnet.resample(0.5)
    widths = cnet.widths
    first = next(cnet.net.parameters())
    first.grad = torch.full_like(first, 7.0)
    a = fisher_spectra(cnet, x, seed=3)  # unlabelled: labels drawn from the model's softmax
    b = fisher_spectra(cnet, x, seed=3)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert cnet.widths == widths and not cnet.training
    assert torch.equal(first.grad, torch.full_like(first, 7.0))
    labelled = fisher_spectra(cnet, [(x, y)])
    relabelled = fisher_spectra(cnet, [(x, (y + 1) % 3)])
    assert any(not np.allclose(labelled[n], relabelled[n]) for n in labelled)
    widths_at = cap.capacities_at(cnet, [0.5, 0.99], "fisher", calib=[(x, y)])
    for n, size in cnet.full_widths.items():
        assert 1 <= widths_at[0.5][n] <= widths_at[0.99][n] <= size


def test_fisher_spectrum_bad_input() -> None:
    x, y = _data()
    cnet = to_continuous(_net(), x[:2], permute=False).eval()
    with pytest.raises(ValueError, match="needs calibration data"):
        cap.capacities(cnet, 0.9, "fisher")
    with pytest.raises(ValueError, match="calib gave no batches"):
        fisher_spectra(cnet, [])
    with pytest.raises(ValueError, match="unknown group"):
        fisher_spectra(cnet, x, groups=["nope"])
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1)).eval()
    with pytest.raises(ValueError, match=r"class logits \[batch, classes\]"):
        fisher_spectra(to_continuous(conv, x[:2], permute=False), x)
