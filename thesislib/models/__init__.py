"""Models of the thesis experiments, each with a width multiplier.

* :func:`resnet18` -- ResNet-18 (He et al. 2016), torchvision module names, ImageNet or small-image stem;
* :func:`resnet20` -- the CIFAR ResNet-20 (He et al. 2016, Sec. 4.2), 16/32/64 channels, projection shortcuts;
* :func:`vit` -- a small Vision Transformer (Dosovitskiy et al. 2021), timm-style attention;
* :func:`srcnn` -- SRCNN 9-5-5 (Dong et al. 2014);
* :func:`edsr` -- EDSR-baseline (Lim et al. 2017), pixel-shuffle or transposed-conv upsampler;
* :func:`sn_classifier`, :func:`sn_discriminator` -- spectrally normalised (Miyato et al. 2018) Lipschitz
  classifier and SRGAN-style discriminator (Ledig et al. 2017), :mod:`.lipschitz`.

``build(name, **kwargs)`` builds one by name (``MODELS`` lists the names).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .cifar_resnet import CifarResNet, resnet20
from .lipschitz import SNClassifier, SNDiscriminator, sn_classifier, sn_discriminator
from .resnet import ResNet, resnet18
from .sr import EDSR, SRCNN, edsr, srcnn
from .vit import Attention, VisionTransformer, vit

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet20": resnet20,
    "vit": vit,
    "srcnn": srcnn,
    "edsr": edsr,
    "sn_classifier": sn_classifier,
    "sn_discriminator": sn_discriminator,
}
MODELS: tuple[str, ...] = tuple(_BUILDERS)


def build(name: str, **kwargs) -> nn.Module:
    """Build the model called ``name`` (one of :data:`MODELS`) with the builder's keyword arguments."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return _BUILDERS[name](**kwargs)


__all__ = [
    "MODELS", "build", "resnet18", "resnet20", "vit", "srcnn", "edsr", "sn_classifier", "sn_discriminator",
    "ResNet", "CifarResNet", "VisionTransformer", "Attention", "SRCNN", "EDSR", "SNClassifier", "SNDiscriminator",
]
