"""Tests of thesislib.pruning: every method, channel counts, function at ratio 1, OBS reconstruction, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from thesislib.models import resnet18, vit
from thesislib.pruning import METHODS, GMPSchedule, channel_counts, fine_tune, prune, recalibrate_batchnorm
from thesislib.pruning.pruner import NEEDS_CALIB

ONE_SHOT = [m for m in METHODS if m != "continuous"]
TESTED = ONE_SHOT + ["continuous"]


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    net = resnet18(num_classes=10, in_channels=1, stem="small", width=0.125)
    # non-trivial BatchNorm statistics and affine parameters, as in a trained network
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return vit(image_size=8, patch_size=4, width=0.25, depth=2).eval()  # dim 16, 4 heads x 4, mlp 32


def _data(n: int = 32, size: int = 12, image: int | None = None) -> tuple[torch.Tensor, DataLoader]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, image or size, image or size, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return x, DataLoader(TensorDataset(x, y), batch_size=8)


def _expected(net: nn.Module, example: torch.Tensor, ratio: float) -> dict[str, int]:
    """Requested counts: max(1, round(ratio * n)) per group, per head for attention head dimensions."""
    heads = {f"{n}.head_dim": m.num_heads for n, m in net.named_modules() if hasattr(m, "num_heads")}
    out = {}
    for name, size in channel_counts(net, example).items():
        h = heads.get(name, 1)
        out[name] = h * max(1, round(ratio * (size // h)))
    return out


def _is_plain(model: nn.Module) -> bool:
    return all(type(m).__module__.startswith(("torch.nn", "torchvision.models", "thesislib.models")) for m in model.modules())


@pytest.mark.parametrize("method", TESTED)
@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_every_method_gives_requested_channels_and_runs(method: str, arch: str) -> None:
    net = _resnet() if arch == "resnet" else _vit()
    x, calib = _data(image=12 if arch == "resnet" else 8)
    before = copy.deepcopy(net.state_dict())
    small = prune(net, method, 0.5, x[:2], calib=calib, calib_batches=2)
    assert _is_plain(small)
    if method != "continuous":
        assert channel_counts(small, x[:2]) == _expected(net, x[:2], 0.5)
    assert small(x[:4]).shape == (4, 10)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # net untouched
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("method", TESTED)
def test_ratio_one_keeps_the_function(method: str) -> None:
    net = _resnet()
    x, calib = _data()
    small = prune(net, method, 1.0, x[:2], calib=calib, calib_batches=2)
    with torch.no_grad():
        ref, out = net(x), small(x)
    assert torch.allclose(out, ref, atol=1e-4 * ref.abs().max().item())


def test_vit_heads_are_pruned_with_consistent_attributes() -> None:
    net = _vit()
    x, _ = _data(image=8)
    small = prune(net, "l2", 0.5, x[:2], attention="heads")
    for block in small.blocks:
        attn = block.attn
        assert (attn.num_heads, attn.head_dim) == (2, 4)
        assert attn.qkv.out_features == 3 * 2 * 4 and attn.proj.in_features == 2 * 4
    assert small(x[:3]).shape == (3, 10)


def test_vit_head_dims_keep_the_logit_scale() -> None:
    net = _vit()
    x, _ = _data(image=8)
    small = prune(net, "l1", 0.5, x[:2])
    attn = small.blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (4, 2)
    assert attn.scale == pytest.approx(1 / 4 ** 0.5)  # 1/sqrt(original head_dim 4)


def _conv2_error(model: nn.Module, calib: DataLoader, ref: nn.Module) -> float:
    """Output error of layer1.0.conv2 (before BatchNorm) on the calibration data, relative to ``ref``."""
    outs = {}

    def grab(key):
        def hook(_m, _i, out):
            outs.setdefault(key, []).append(out.detach())
        return hook

    handles = [model.layer1[0].conv2.register_forward_hook(grab("m")), ref.layer1[0].conv2.register_forward_hook(grab("r"))]
    with torch.no_grad():
        for x, _ in calib:
            model(x)
            ref(x)
    for h in handles:
        h.remove()
    return (torch.cat(outs["m"]) - torch.cat(outs["r"])).pow(2).mean().item()


def test_obs_reconstructs_better_than_l1() -> None:
    net = _resnet()
    x, calib = _data(n=64)
    ratio = {"layer1.0.conv1": 0.75}  # only this group: conv2's input loses 2 of 8 channels
    obs = prune(net, "obs", ratio, x[:2], calib=calib, calib_batches=8)
    l1 = prune(net, "l1", ratio, x[:2], calib=calib, calib_batches=8)
    assert obs.layer1[0].conv2.in_channels == l1.layer1[0].conv2.in_channels == 6
    assert _conv2_error(obs, calib, net) < _conv2_error(l1, calib, net)


def test_global_allocation_keeps_the_overall_ratio() -> None:
    net = _resnet()
    x, calib = _data()
    full = channel_counts(net, x[:2])
    small = prune(net, "l2", 0.5, x[:2], allocation="global")
    counts = channel_counts(small, x[:2])
    assert set(counts) == set(full)
    assert abs(sum(counts.values()) - round(0.5 * sum(full.values()))) <= len(full)
    assert counts != _expected(net, x[:2], 0.5)  # not simply uniform


def test_merging_methods_fold_identical_channels_exactly() -> None:
    """Two equal filters (with equal BatchNorm) merged into one: the consumer's summed column keeps the output."""
    net = _resnet()
    conv, bn = net.layer1[0].conv1, net.layer1[0].bn1
    with torch.no_grad():
        for c in range(4):  # channels 4..7 duplicate channels 0..3
            conv.weight[4 + c] = conv.weight[c]
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t[4 + c] = t[c]
    x, calib = _data()
    for method in ("ifm", "fold"):
        small = prune(net, method, {"layer1.0.conv1": 0.5}, x[:2], calib=calib)
        assert small.layer1[0].conv2.in_channels == 4
        with torch.no_grad():
            assert torch.allclose(small(x), net(x), atol=1e-4)


def test_recalibration_matches_batch_statistics() -> None:
    net = _resnet()
    x, calib = _data()
    recalibrate_batchnorm(net, calib, batches=4)
    acts = []
    h = net.bn1.register_forward_hook(lambda m, i, o: acts.append(i[0].detach()))
    with torch.no_grad():
        for xb, _ in calib:
            net(xb)
    h.remove()
    per_batch_mean = torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0)
    assert torch.allclose(net.bn1.running_mean, per_batch_mean, atol=1e-5)
    assert not net.bn1.training and net.bn1.momentum == 0.1


def test_gmp_schedule_is_cubic() -> None:
    s = GMPSchedule(final_ratio=0.25, begin_step=10, end_step=50, frequency=10)
    assert s.sparsity(0) == 0 and s.sparsity(10) == 0
    assert s.sparsity(50) == pytest.approx(0.75) and s.sparsity(99) == pytest.approx(0.75)
    assert s.sparsity(30) == pytest.approx(0.75 + (0 - 0.75) * (1 - 0.5) ** 3)
    assert [t for t in range(60) if s.is_pruning_step(t)] == [10, 20, 30, 40, 50]


def test_gmp_fine_tune_reaches_final_width_and_trains() -> None:
    net = _resnet()
    x, calib = _data()
    model = copy.deepcopy(net).train()
    fine_tune(model, calib, steps=6, schedule=GMPSchedule(final_ratio=0.5, end_step=4, frequency=2), lr=0.01)
    assert channel_counts(model, x[:2]) == _expected(net, x[:2], 0.5)
    assert not model.training and model(x[:2]).shape == (2, 10)


@pytest.mark.parametrize("method", sorted(NEEDS_CALIB))
def test_methods_needing_calibration_refuse_without_it(method: str) -> None:
    x, _ = _data()
    with pytest.raises(ValueError, match="calib"):
        prune(_resnet(), method, 0.5, x[:2])


def test_bad_input_is_refused() -> None:
    net = _resnet()
    x, calib = _data()
    with pytest.raises(ValueError, match="METHODS.*l1"):
        prune(net, "magnitude", 0.5, x[:2])
    for ratio in (0.0, -0.5, 1.5, True):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            prune(net, "l1", ratio, x[:2])
    with pytest.raises(ValueError, match="recalibrate"):
        prune(net, "l1", 0.5, x[:2], recalibrate=True)
    with pytest.raises(ValueError, match="allocation"):
        prune(net, "l1", 0.5, x[:2], allocation="layerwise")
    with pytest.raises(ValueError, match="unknown group"):
        prune(net, "l1", {"no.such.group": 0.5}, x[:2])


def test_sweep_measures_every_method_and_ratio() -> None:
    from thesislib.experiments.baselines import first_images, summary_table
    from thesislib.experiments.baselines import prune_all as sweep

    net = _resnet()
    x, calib = _data()
    test = first_images(calib, 16)
    records = sweep(net, ["l1", "fold"], (1.0, 0.5), x[:1], calib, test, calib_batches=2)
    assert [(r["method"], r["ratio"]) for r in records] == [("l1", 1.0), ("l1", 0.5), ("fold", 1.0), ("fold", 0.5)]
    full, half = records[0], records[1]
    assert records[2]["accuracy"] == full["accuracy"] and records[2]["shared"]
    assert half["macs"] < full["macs"] and half["params"] < full["params"]
    assert all(0 <= r["accuracy"] <= 1 for r in records)
    assert "fold" in summary_table(records)
    with pytest.raises(ValueError, match="METHODS"):
        sweep(net, ["nope"], (0.5,), x[:1], calib, test)


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_fast_per_sample_fisher_equals_vmap_reference(arch: str) -> None:
    from thesislib.pruning.importance import squared_gradients, squared_gradients_vmap

    net = _resnet() if arch == "resnet" else _vit()
    x, calib = _data(n=16, image=12 if arch == "resnet" else 8)
    names = {k for k, _ in net.named_parameters() if arch == "resnet" or k.startswith("blocks")}
    fast = squared_gradients(net, calib, 2, names=names)
    ref = squared_gradients_vmap(net, calib, 2)
    assert set(fast) == names
    for k in names:
        assert torch.allclose(fast[k], ref[k], rtol=1e-4, atol=1e-6 * ref[k].abs().max().item()), k


@pytest.mark.parametrize("method", ["l1", "hessian", "obs", "ifm", "fold"])
@pytest.mark.parametrize("arch", ["srcnn", "edsr_pixelshuffle", "edsr_convtranspose"])
def test_super_resolution_models_prune_and_keep_their_output(method: str, arch: str) -> None:
    from thesislib.models import edsr, srcnn

    torch.manual_seed(0)
    if arch == "srcnn":
        net, x, y = srcnn(width=0.25), torch.rand(8, 1, 12, 12), torch.rand(8, 1, 12, 12)
    else:
        net = edsr(n_blocks=2, width=0.25, upsampler=arch.split("_")[1])
        x, y = torch.rand(8, 3, 6, 6), torch.rand(8, 3, 12, 12)
    net.eval()
    calib = DataLoader(TensorDataset(x, y), batch_size=4)  # image targets: MSE loss
    small = prune(net, method, 0.5, x[:1], calib=calib, calib_batches=2)
    full = channel_counts(net, x[:1])
    assert len(full) >= 2 and channel_counts(small, x[:1]) == {k: max(1, round(0.5 * n)) for k, n in full.items()}
    assert small(x[:2]).shape == y[:2].shape


@pytest.mark.parametrize("kwargs", [{"kernel_size": 3, "padding": 1}, {"kernel_size": 3, "stride": 2, "padding": 1},
                                    {"kernel_size": 1, "stride": 2}, {"kernel_size": 5, "padding": 2, "dilation": 2}])
def test_obs_patches_equal_unfold(kwargs: dict) -> None:
    from thesislib.pruning.obs import _patches

    conv = nn.Conv2d(3, 4, **kwargs)
    x = torch.randn(2, 3, 9, 9)
    cols = nn.functional.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    ref = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    assert torch.equal(_patches(conv, x, torch.arange(ref.shape[0])), ref)


def test_by_method_and_table_rows_pivot_records_exactly():
    from thesislib.experiments.baselines import by_method, summary_table, table_rows

    records = [{"method": "l1", "ratio": 0.5, "accuracy": 0.25, "macs": 10},
               {"method": "l1", "ratio": 1.0, "accuracy": 0.75, "macs": 40},
               {"method": "fold", "ratio": 1.0, "accuracy": 0.75, "macs": 40},
               {"method": "fold", "ratio": 0.5, "error": "failed"}]
    assert by_method(records) == {"l1": {"r1": 0.75, "r0_5": 0.25}, "fold": {"r1": 0.75}}
    assert by_method(records, "macs")["l1"] == {"r1": 40, "r0_5": 10}
    assert table_rows(records) == [{"method": "l1", "r1": 75.0, "r0_5": 25.0},
                                   {"method": "fold", "r1": 75.0, "r0_5": "—"}]
    text = summary_table(records).splitlines()
    assert text[1].split() == ["l1", "75.0", "25.0"] and text[2].split() == ["fold", "75.0", "—"]
