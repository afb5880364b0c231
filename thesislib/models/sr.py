"""Super-resolution networks: SRCNN (Dong et al. 2014) and EDSR-baseline (Lim et al. 2017).

* SRCNN -- Dong, Loy, He, Tang, "Learning a Deep Convolutional Network for Image
  Super-Resolution", ECCV 2014 (the 9-5-5 variant of the TPAMI 2016 follow-up). It refines an
  image that was already upscaled by bicubic interpolation, so output size = input size.
  Convolutions are zero-padded ("same") so the output is not cropped.
* EDSR-baseline -- Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image
  Super-Resolution", CVPRW 2017: head conv, ``n_blocks`` residual blocks conv-ReLU-conv scaled by
  ``res_scale`` (no BatchNorm), a body-end conv, a global skip from the head, an upsampler and a
  tail conv. As in the reference code, a fixed RGB mean (DIV2K) is subtracted at the input and
  added back at the output (a buffer, not a layer).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._width import check_positive_ints, scaled

UPSAMPLERS = ("pixelshuffle", "convtranspose")
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class SRCNN(nn.Module):
    """SRCNN 9-5-5 (Dong et al. 2014): patch extraction, non-linear mapping, reconstruction."""

    def __init__(self, channels: int = 1, n1: int = 64, n2: int = 32) -> None:
        super().__init__()
        check_positive_ints(channels=channels, n1=n1, n2=n2)
        self.conv1 = nn.Conv2d(channels, n1, kernel_size=9, padding=4)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(n1, n2, kernel_size=5, padding=2)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(n2, channels, kernel_size=5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


def srcnn(channels: int = 1, width: float = 1.0) -> SRCNN:
    """SRCNN 9-5-5 (Dong et al. 2014) with ``width * 64`` and ``width * 32`` filters.

    Input: a bicubic-upscaled image (``channels`` = 1 for the Y channel as in the paper, or 3).
    """
    return SRCNN(channels=channels, n1=scaled(64, width), n2=scaled(32, width))


class ResBlock(nn.Module):
    """EDSR residual block ``x + res_scale * conv2(relu(conv1(x)))`` (Lim et al. 2017, Fig. 2)."""

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


def _pixel_shuffle_stages(scale: int) -> list[int]:
    """Factor ``scale`` into the x2 / x3 pixel-shuffle stages of EDSR's upsampler."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"the pixel-shuffle upsampler supports scale 3 or a power of 2 (2, 4, 8, ...), got {scale!r}")


class Upsampler(nn.Sequential):
    """EDSR upsampler: ``conv -> PixelShuffle(r)`` stages, or one ``ConvTranspose2d`` (stride = scale).

    The transposed convolution uses kernel ``2s - s % 2`` and padding ``(k - s) // 2`` so that the
    output is exactly ``scale`` times the input.
    """

    def __init__(self, scale: int, n_feats: int, kind: str = "pixelshuffle") -> None:
        if kind == "pixelshuffle":
            layers: list[nn.Module] = []
            for r in _pixel_shuffle_stages(scale):
                layers += [nn.Conv2d(n_feats, r * r * n_feats, 3, padding=1), nn.PixelShuffle(r)]
        elif kind == "convtranspose":
            if not isinstance(scale, int) or scale < 2:
                raise ValueError(f"scale must be an int >= 2, got {scale!r}")
            kernel = 2 * scale - scale % 2
            layers = [nn.ConvTranspose2d(n_feats, n_feats, kernel, stride=scale, padding=(kernel - scale) // 2)]
        else:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {kind!r}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR (Lim et al. 2017): ``tail(up(body(head(x)) + head(x)))`` with mean shift, no BatchNorm."""

    def __init__(
        self,
        scale: int = 2,
        n_feats: int = 64,
        n_blocks: int = 16,
        channels: int = 3,
        res_scale: float = 1.0,
        upsampler: Literal["pixelshuffle", "convtranspose"] = "pixelshuffle",
    ) -> None:
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
            raise ValueError(f"scale must be an int >= 2 (2, 3 or 4 in the SR benchmarks), got {scale!r}")
        check_positive_ints(n_feats=n_feats, channels=channels)
        if not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"n_blocks must be a non-negative int, got {n_blocks!r}")
        self.scale = scale
        mean = DIV2K_RGB_MEAN if channels == 3 else (0.5,) * channels
        self.register_buffer("rgb_mean", torch.tensor(mean).view(1, channels, 1, 1))
        self.head = nn.Conv2d(channels, n_feats, 3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_blocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.tail = nn.Sequential(
            Upsampler(scale, n_feats, upsampler),
            nn.Conv2d(n_feats, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x - self.rgb_mean)
        x = x + self.body(x)
        return self.tail(x) + self.rgb_mean


def edsr(
    scale: int = 2,
    n_feats: int = 64,
    n_blocks: int = 16,
    channels: int = 3,
    res_scale: float = 1.0,
    width: float = 1.0,
    upsampler: Literal["pixelshuffle", "convtranspose"] = "pixelshuffle",
) -> EDSR:
    """EDSR-baseline (Lim et al. 2017): 16 blocks of 64 features, ``res_scale`` 1; ``width`` scales ``n_feats``.

    Input: the low-resolution image in [0, 1]; output: ``scale`` times larger in each dimension.
    """
    return EDSR(
        scale=scale,
        n_feats=scaled(n_feats, width),
        n_blocks=n_blocks,
        channels=channels,
        res_scale=res_scale,
        upsampler=upsampler,
    )
