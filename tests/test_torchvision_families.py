"""Every architecture a user may bring: the smallest classification builder of each torchvision family.

Each family either converts -- ``to_continuous`` exact at full width, ``resample(0.5)`` -> ``export`` a
plain model with fewer parameters and the continuous net's outputs, ``prune(..., "l1", 0.5)`` a smaller
model that runs -- or is refused with a ``ValueError`` naming the module and the reason; never an
internal exception from torch-pruning or from inside ``forward``. Random initialisation, one tiny
input (the smallest each family accepts); the permutation and the anti-aliasing low-pass are left
out (``permute=False``, ``antialias=False``: both are tested in ``test_continuous.py`` and cost
seconds on the 4096-channel classifiers of AlexNet/VGG), so the groups are what is tested here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from thesislib.continuous import to_continuous
from thesislib.pruning import prune

CONVERTS = "converts"


@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    image: int                    # side of the 1 x 3 x image x image input
    expected: str = CONVERTS      # or a regex the refusal's ValueError matches


FAMILIES: dict[str, Family] = {
    "alexnet": Family(lambda: tvm.alexnet(num_classes=10), 64),  # three stride-2 pools need >= 63 px
    "convnext": Family(lambda: tvm.convnext_tiny(num_classes=10), 32),
    "densenet": Family(lambda: tvm.densenet121(num_classes=10), 32),
    "efficientnet": Family(lambda: tvm.efficientnet_b0(num_classes=10), 32),
    "efficientnet_v2": Family(lambda: tvm.efficientnet_v2_s(num_classes=10), 32),
    "googlenet": Family(lambda: tvm.googlenet(num_classes=10, aux_logits=False, init_weights=False), 32),
    "inception": Family(lambda: tvm.inception_v3(num_classes=10, aux_logits=False, init_weights=False), 75),
    "mnasnet": Family(lambda: tvm.mnasnet0_5(num_classes=10), 32),
    "mobilenet_v2": Family(lambda: tvm.mobilenet_v2(num_classes=10), 32),
    "mobilenet_v3": Family(lambda: tvm.mobilenet_v3_small(num_classes=10), 32),
    "regnet_x": Family(lambda: tvm.regnet_x_400mf(num_classes=10), 32),
    "regnet_y": Family(lambda: tvm.regnet_y_400mf(num_classes=10), 32),
    "resnet": Family(lambda: tvm.resnet18(num_classes=10), 32),
    "resnext": Family(lambda: tvm.resnext50_32x4d(num_classes=10), 32),
    "shufflenet_v2": Family(lambda: tvm.shufflenet_v2_x0_5(num_classes=10), 32),
    "squeezenet": Family(lambda: tvm.squeezenet1_0(num_classes=10), 32),
    "vgg": Family(lambda: tvm.vgg11(num_classes=10), 32),
    "vit": Family(lambda: tvm.VisionTransformer(image_size=32, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16,
                                                mlp_dim=32, num_classes=10), 32),
    "wide_resnet": Family(lambda: tvm.wide_resnet50_2(num_classes=10), 32),
}

OUTCOMES: dict[str, str] = {}


def _build(family: Family) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = family.build().eval()
    with torch.no_grad():  # zero-initialised heads (torchvision's ViT) would make every output 0
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not m.weight.any():
                m.weight.normal_(0, 0.02)
    return net, torch.randn(1, 3, family.image, family.image)


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def _convert_and_prune(net: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        y = net(x)
        cnet = to_continuous(net, x, permute=False).eval()
        assert _rel(y, cnet(x)) <= 1e-5, "not exact at full width"
        cnet.resample(0.5, antialias=False)  # the dense low-pass of a 4096-channel axis is seconds by itself
        small = cnet.export().eval()
        assert _params(small) < _params(net)
        assert all(type(m).__module__.startswith(("torch.nn", "torchvision")) for m in small.modules())
        assert _rel(cnet(x), small(x)) <= 1e-4, "export differs from the continuous net"
        del cnet, small
    pruned = prune(net, method="l1", ratio=0.5, example_inputs=x)
    assert _params(pruned) < _params(net)
    with torch.no_grad():
        assert pruned(x).shape == y.shape


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_converts_or_is_refused_clearly(name: str) -> None:
    family = FAMILIES[name]
    net, x = _build(family)
    if family.expected == CONVERTS:
        _convert_and_prune(net, x)
        OUTCOMES[name] = CONVERTS
    else:
        with pytest.raises(ValueError, match=family.expected) as err:
            _convert_and_prune(net, x)
        OUTCOMES[name] = f"refused: {err.value}"


def test_summary_of_the_families() -> None:
    """The count that convert (``pytest -s`` shows every family's outcome)."""
    expected = sum(f.expected == CONVERTS for f in FAMILIES.values())
    for name, outcome in OUTCOMES.items():
        print(f"{name:16s} {outcome}")
    print(f"{sum(o == CONVERTS for o in OUTCOMES.values())} of {len(OUTCOMES)} torchvision families convert "
          f"({expected} of {len(FAMILIES)} expected)")
    assert all((o == CONVERTS) == (FAMILIES[n].expected == CONVERTS) for n, o in OUTCOMES.items())
    if len(OUTCOMES) == len(FAMILIES):
        assert sum(o == CONVERTS for o in OUTCOMES.values()) == expected
