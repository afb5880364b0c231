"""Spectrally normalised networks (Miyato et al. 2018) for the SpectralNorm experiment.

* :func:`sn_classifier` -- a Lipschitz-constrained plain convolutional classifier (no BatchNorm, ReLU, two
  stride-2 stages, then a dense layer written as a convolution whose kernel covers the whole feature map,
  and a linear head) for 28 px images such as Fashion-MNIST;
* :func:`sn_discriminator` -- the discriminator-style convolution stack of SR GANs (SRGAN, Ledig et al. 2017,
  Fig. 4: 3x3 convolutions with LeakyReLU(0.2), every second one of stride 2, 64 -> 512 channels, then
  dense 1024 -> LeakyReLU -> dense), without its BatchNorm as in SN-GAN discriminators, with two logits
  (bicubic-upsampled vs real high-resolution patch).

Every ``Conv2d`` and ``Linear`` carries ``torch.nn.utils.parametrizations.spectral_norm`` when
``spectral=True``, so with 1-Lipschitz activations (ReLU, LeakyReLU) the network's Lipschitz constant is
at most the product of the layers' operator norms (:mod:`thesislib.spectral`). ``width`` multiplies every
hidden channel count (:func:`thesislib.models._width.scaled`).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ._width import scaled


def _sn(module: nn.Module, spectral: bool) -> nn.Module:
    return spectral_norm(module) if spectral else module


class SNClassifier(nn.Module):
    """conv3x3 (32) → conv3x3/2 (64) → conv3x3 (64) → conv3x3/2 (128) → dense (128, a convolution with the
    feature map's size as kernel) → flatten → linear, ReLU between. The dense layer as a convolution keeps
    every hidden channel group a plain channel axis (a flatten of a ``C×7×7`` map into a linear layer would
    interleave channels and positions)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, image_size: int = 28,
                 spectral: bool = True) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size < 4 or image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two stride-2 stages), got {image_size!r}")
        c = [scaled(k, width) for k in (32, 64, 64, 128)]
        strides = (1, 2, 1, 2)
        layers: list[nn.Module] = []
        prev = in_channels
        for k, s in zip(c, strides):
            layers += [_sn(nn.Conv2d(prev, k, 3, stride=s, padding=1), spectral), nn.ReLU()]
            prev = k
        hidden = scaled(128, width)
        layers += [_sn(nn.Conv2d(prev, hidden, image_size // 4), spectral), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc = _sn(nn.Linear(hidden, num_classes), spectral)

    def forward(self, x):  # noqa: D102
        return self.fc(self.flatten(self.features(x)))


class SNDiscriminator(nn.Module):
    """The SRGAN discriminator stack (8 convolutions 64 → 512, stride 2 every second), the dense 1024 layer as a
    convolution covering the last feature map (so its input channels stay a plain channel axis), the output
    layer, spectral norm on all."""

    def __init__(self, in_channels: int = 3, width: float = 1.0, patch_size: int = 32, num_outputs: int = 2,
                 spectral: bool = True) -> None:
        super().__init__()
        if not isinstance(patch_size, int) or patch_size < 16 or patch_size % 16:
            raise ValueError(f"patch_size must be a multiple of 16 (four stride-2 stages), got {patch_size!r}")
        plan = [(64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)]
        layers: list[nn.Module] = []
        prev = in_channels
        for k, s in plan:
            k = scaled(k, width)
            layers += [_sn(nn.Conv2d(prev, k, 3, stride=s, padding=1), spectral), nn.LeakyReLU(0.2)]
            prev = k
        hidden = scaled(1024, width)
        layers += [_sn(nn.Conv2d(prev, hidden, patch_size // 16), spectral), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.head = _sn(nn.Linear(hidden, num_outputs), spectral)

    def forward(self, x):  # noqa: D102
        return self.head(self.flatten(self.features(x)))


def sn_classifier(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, image_size: int = 28,
                  spectral: bool = True) -> SNClassifier:
    """The spectrally normalised classifier of :class:`SNClassifier`."""
    return SNClassifier(num_classes, in_channels, width, image_size, spectral)


def sn_discriminator(in_channels: int = 3, width: float = 1.0, patch_size: int = 32, num_outputs: int = 2,
                     spectral: bool = True) -> SNDiscriminator:
    """The spectrally normalised SR-GAN discriminator of :class:`SNDiscriminator`."""
    return SNDiscriminator(in_channels, width, patch_size, num_outputs, spectral)
