"""torch-pruning 1.6.1 faults: each test shows the plain library call failing and thesislib.pruning passing."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.data import DataLoader, TensorDataset

from thesislib.models import vit
from thesislib.pruning import fine_tune, prune
from thesislib.pruning.importance import hessian_scores, taylor_terms
from thesislib.pruning.structural import analyse


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    ).eval()


def _samples(first: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 6, 6, generator=gen)
    x[0] += first  # only the FIRST calibration sample changes
    return x, torch.randint(0, 3, (6,), generator=gen)


def _tp_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch-pruning's documented HessianImportance recipe (per-sample backward + accumulate_grad)."""
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    scorer = tp.importance.HessianImportance()
    scorer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y, reduction="none")
    for sample_loss in loss:
        model.zero_grad()
        sample_loss.backward(retain_graph=True)
        scorer.accumulate_grad(model)
    group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(6)))
    return scorer(group)


def test_hessian_uses_every_calibration_sample() -> None:
    a, b = _samples(0.0), _samples(3.0)
    # torch-pruning: accumulate_grad overwrites, so the first sample does not matter
    assert torch.equal(_tp_hessian(_cnn(), *a), _tp_hessian(_cnn(), *b))

    def ours(data):
        model = _cnn()
        groups = analyse(model, data[0][:1]).groups
        loader = DataLoader(TensorDataset(*data), batch_size=3)
        return hessian_scores(model, groups, loader, batches=2)[groups[0].name]

    assert not torch.allclose(ours(a), ours(b))


def test_taylor_includes_batchnorm_parameters() -> None:
    """Same gradients, different BatchNorm γ/β: the Taylor score must change (the BN term g_γ γ + g_β β)."""
    x, y = _samples()

    def scores(use_tp: bool, shift_bn: bool) -> torch.Tensor:
        model = _cnn()
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
        nn.functional.cross_entropy(model(x), y).backward()
        if shift_bn:  # change γ and β after the backward pass: gradients stay the same
            with torch.no_grad():
                model[1].weight.mul_(3.0)
                model[1].bias.add_(1.0)
        if use_tp:
            group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=list(range(6)))
            return tp.importance.TaylorImportance()(group)
        group = analyse(model, x[:1]).groups
        return taylor_terms([g for g in group if g.size == 6][0]).pow(2)

    assert torch.equal(scores(True, False), scores(True, True))  # torch-pruning ignores BatchNorm
    assert not torch.allclose(scores(False, False), scores(False, True))


def _sn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(spectral_norm(nn.Conv2d(3, 8, 3)), nn.ReLU(), spectral_norm(nn.Conv2d(8, 4, 3))).eval()


def test_spectral_norm_model_prunes_and_keeps_its_normalisation() -> None:
    x = torch.randn(2, 3, 8, 8)
    plain = _sn_net()
    dg = tp.DependencyGraph().build_dependency(plain, example_inputs=x)
    with pytest.raises(KeyError, match="weight"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg.get_pruning_group(plain[0], tp.prune_conv_out_channels, idxs=[0, 1]).prune()

    small = prune(_sn_net(), "l2", 0.5, x)
    first, last = small[0], small[2]
    assert first.out_channels == 4 and last.in_channels == 4 and last.out_channels == 4
    for conv in (first, last):
        assert parametrize.is_parametrized(conv, "weight")
        assert type(conv.parametrizations["weight"][0]).__name__ == "_SpectralNorm"
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.02)
    assert small(x).shape == (2, 4, 4, 4)


def test_vit_head_pruning_updates_attention_attributes() -> None:
    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(0)
    plain = vit(image_size=8, patch_size=4, width=0.25, depth=2).eval()
    net = copy.deepcopy(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            plain, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
            num_heads={b.attn.qkv: b.attn.num_heads for b in plain.blocks}, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=0.5, ignored_layers=[plain.head, plain.patch_embed])
        pruner.step()
    assert plain.blocks[0].attn.num_heads == 4  # stale: torch-pruning does not update the attribute
    with pytest.raises(RuntimeError, match="shape"):
        plain(x)

    small = prune(net, "l2", 0.5, x, attention="heads")
    for block in small.blocks:
        assert block.attn.num_heads == 2 and block.attn.head_dim == 4
        assert block.attn.qkv.weight.shape == (3 * 2 * 4, 16) and block.attn.proj.weight.shape == (16, 8)
    assert small(x).shape == (2, 10)


def test_fine_tune_optimises_the_pruned_parameters() -> None:
    x, y = _samples()
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    model = _cnn().train()
    stale = torch.optim.SGD(model.parameters(), lr=0.1)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x[:1])
    dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1]).prune()
    held = {id(p) for group in stale.param_groups for p in group["params"]}
    for pruned in (model[0].weight, model[0].bias, model[1].weight, model[3].weight):
        assert id(pruned) not in held  # the old optimizer updates tensors that left the model

    small = prune(_cnn(), "l1", 0.5, x[:1])
    before = {k: v.clone() for k, v in small.state_dict().items()}
    fine_tune(small, loader, steps=2, lr=0.1)
    changed = [k for k, v in small.state_dict().items() if "weight" in k and not torch.equal(before[k], v)]
    assert {"0.weight", "3.weight", "8.weight"} <= set(changed)


def test_inplace_activation_does_not_hide_layers() -> None:
    """torch-pruning traces SRCNN's conv -> ReLU(inplace=True) -> conv into a graph without groups."""
    from thesislib.models import srcnn

    x = torch.rand(1, 1, 12, 12)
    net = srcnn(width=0.25).eval()
    dg = tp.DependencyGraph().build_dependency(net, example_inputs=x)
    assert list(dg.get_all_groups(ignored_layers=[net.conv3], root_module_types=(nn.Conv2d,))) == []

    small = prune(net, "l1", 0.5, x)
    assert (small.conv1.out_channels, small.conv2.out_channels, small.conv3.in_channels) == (8, 4, 4)
    assert small.relu1.inplace and small(x).shape == x.shape
