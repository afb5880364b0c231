"""Tests of thesislib.models: shapes, widths, builder errors, torchvision compatibility."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from thesislib.models import MODELS, build, edsr, resnet18, srcnn, vit
from thesislib.models.vit import Attention


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("stem,size,in_channels", [("imagenet", 64, 3), ("small", 28, 1), ("small", 32, 3)])
@pytest.mark.parametrize("width", [0.125, 0.25])
def test_resnet18_output_shape(stem: str, size: int, in_channels: int, width: float) -> None:
    model = resnet18(num_classes=7, in_channels=in_channels, stem=stem, width=width).eval()
    assert model(torch.randn(2, in_channels, size, size)).shape == (2, 7)


def test_resnet18_stems_differ_as_specified() -> None:
    big, small = resnet18(stem="imagenet"), resnet18(stem="small")
    assert (big.conv1.kernel_size, big.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(big.maxpool, nn.MaxPool2d)
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    # the small stem keeps 32 px: layer1 sees 32x32 (the ImageNet stem would give 8x8)
    seen: list[tuple[int, ...]] = []
    small.layer1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    small.eval()(torch.randn(1, 3, 32, 32))
    assert seen == [(32, 32)]


def test_resnet18_is_torchvision_compatible() -> None:
    ours, theirs = resnet18().eval(), torchvision.models.resnet18().eval()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    ours.load_state_dict(theirs.state_dict())  # strict: same names and shapes
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.parametrize("width,expected", [(1.0, [64, 128, 256, 512]), (0.5, [32, 64, 128, 256]),
                                            (0.3, [19, 38, 77, 154]), (0.001, [1, 1, 1, 1])])
def test_resnet18_width_multiplies_stage_channels(width: float, expected: list[int]) -> None:
    model = resnet18(width=width)
    stages = [getattr(model, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)]
    assert stages == expected
    assert model.conv1.out_channels == expected[0]
    assert model.fc.in_features == expected[3]


@pytest.mark.parametrize("num_heads,head_dim", [(3, 5), (1, 7), (5, 1)])
def test_vit_runs_with_odd_heads(num_heads: int, head_dim: int) -> None:
    model = vit(dim=12, depth=2, num_heads=num_heads, head_dim=head_dim).eval()
    attn = model.blocks[0].attn
    assert isinstance(attn, Attention)
    assert (attn.num_heads, attn.head_dim) == (num_heads, head_dim)
    assert attn.qkv.out_features == 3 * num_heads * head_dim
    assert attn.proj.in_features == num_heads * head_dim
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_vit_attention_matches_explicit_softmax_attention() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=10, num_heads=3, head_dim=4)
    x = torch.randn(2, 5, 10)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 4 ** 0.5, dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_vit_attention_follows_its_attributes() -> None:
    """Pruning code replaces qkv/proj and updates num_heads: the forward must follow."""
    attn = Attention(dim=8, num_heads=4, head_dim=2)
    attn.num_heads = 2
    attn.qkv = nn.Linear(8, 3 * 2 * 2)
    attn.proj = nn.Linear(2 * 2, 8)
    assert attn(torch.randn(1, 3, 8)).shape == (1, 3, 8)


def test_vit_width_and_shapes() -> None:
    model = vit(image_size=32, patch_size=8, in_channels=3, num_classes=5, dim=32, depth=1,
                num_heads=2, head_dim=8, mlp_ratio=3.0, width=0.5)
    assert model.patch_embed.out_channels == 16
    assert model.blocks[0].attn.head_dim == 4 and model.blocks[0].attn.num_heads == 2
    assert model.blocks[0].mlp.fc1.out_features == 48
    assert model.pos_embed.shape == (1, 1 + 16, 16) and model.cls_token.shape == (1, 1, 16)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vit(image_size=30, patch_size=4)


@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("channels", [1, 3])
def test_srcnn_keeps_size_and_width(width: float, channels: int) -> None:
    model = srcnn(channels=channels, width=width)
    assert conv_widths(model) == [round(64 * width), round(32 * width), channels]
    assert [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)] == [(9, 9), (5, 5), (5, 5)]
    assert model(torch.rand(2, channels, 17, 23)).shape == (2, channels, 17, 23)


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "convtranspose"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_output_is_exactly_scale_times_larger(scale: int, upsampler: str) -> None:
    model = edsr(scale=scale, n_feats=8, n_blocks=2, upsampler=upsampler)
    assert model(torch.rand(2, 3, 7, 10)).shape == (2, 3, 7 * scale, 10 * scale)


def test_edsr_structure_and_width() -> None:
    model = edsr(scale=2, n_feats=64, n_blocks=3, width=0.25, res_scale=0.1)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model.head.out_channels == 16
    assert len(model.body) == 4 and all(b.res_scale == 0.1 for b in list(model.body)[:3])
    assert conv_widths(model) == [16] * (1 + 2 * 3 + 1) + [64, 3]  # head, blocks, body end, upsample, tail
    ct = edsr(scale=3, n_feats=64, n_blocks=0, width=0.5, upsampler="convtranspose")
    assert any(isinstance(m, nn.ConvTranspose2d) and m.stride == (3, 3) for m in ct.modules())
    assert ct(torch.rand(1, 3, 5, 5)).shape == (1, 3, 15, 15)


def test_edsr_global_skip_and_mean_shift() -> None:
    """With every conv zeroed the output is the mean image; the residual path is really residual."""
    model = edsr(scale=2, n_feats=4, n_blocks=1)
    for p in model.parameters():
        nn.init.zeros_(p)
    out = model(torch.rand(1, 3, 4, 4))
    torch.testing.assert_close(out, model.rgb_mean.expand(1, 3, 8, 8))


def test_edsr_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pixel-shuffle"):
        edsr(scale=5)
    with pytest.raises(ValueError, match="upsampler"):
        edsr(upsampler="nearest")
    with pytest.raises(ValueError, match="scale"):
        edsr(scale=1)
    assert edsr(scale=5, n_feats=4, n_blocks=0, upsampler="convtranspose")(torch.rand(1, 3, 3, 3)).shape[-1] == 15


def test_build_names_and_errors() -> None:
    assert set(MODELS) == {"resnet18", "resnet20", "vit", "srcnn", "edsr", "sn_classifier", "sn_discriminator"}
    assert isinstance(build("srcnn", width=0.25), nn.Module)
    assert build("resnet18", width=0.125, stem="small").conv1.out_channels == 8
    with pytest.raises(ValueError) as info:
        build("resnet50")
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="stem"):
        resnet18(stem="cifar")
    with pytest.raises(ValueError, match="width"):
        resnet18(width=0)


def test_models_are_deterministic_under_a_seed_and_move_devices() -> None:
    torch.manual_seed(1)
    a = vit(depth=1)
    torch.manual_seed(1)
    b = vit(depth=1)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name, kw, x in [("edsr", {"n_feats": 4, "n_blocks": 1}, torch.rand(1, 3, 6, 6)),
                        ("vit", {"depth": 1}, torch.rand(1, 1, 28, 28)),
                        ("resnet18", {"width": 0.125, "stem": "small"}, torch.rand(2, 3, 16, 16)),
                        ("srcnn", {}, torch.rand(1, 1, 12, 12))]:
        model = build(name, **kw).to(device).eval()
        assert model(x.to(device)).device.type == device.type


def test_resnet20_cifar_structure_and_errors() -> None:
    from thesislib.models import resnet20

    net = resnet20()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 20  # 6n + 2 weighted layers, n = 3 (He et al. 2016, Sec. 4.2)
    assert [net.layer1[0].conv1.out_channels, net.layer2[0].conv1.out_channels, net.layer3[0].conv1.out_channels] == [16, 32, 64]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert resnet20(width=0.5, in_channels=1).conv1.weight.shape == (8, 1, 3, 3)
    with pytest.raises(ValueError, match="6n"):
        from thesislib.models.cifar_resnet import CifarResNet
        CifarResNet(depth=21)
    with pytest.raises(ValueError, match="num_classes"):
        resnet20(num_classes=0)
