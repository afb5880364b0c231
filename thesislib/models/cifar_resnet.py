"""ResNet-20 for CIFAR-10 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2).

Three stages of ``n = 3`` BasicBlocks on 32×32 inputs with 16, 32 and 64 channels (``6n + 2 = 20``
layers), a 3×3 stem, global average pooling and one linear layer. The paper's shortcuts at the two
stride-2 transitions are option A (zero-padded identity); here they are option B (a 1×1 strided
convolution + BatchNorm, the paper's Table 6 comparison shows both), so every channel axis is a plain
convolution axis that :mod:`thesislib.graph` traces and prunes. Blocks are torchvision's
:class:`~torchvision.models.resnet.BasicBlock` (module names ``conv1, bn1, conv2, bn2, downsample``),
initialised like :mod:`.resnet`.
"""

from __future__ import annotations

import torch
from torch import nn

from ._width import check_positive_ints, scaled
from .resnet import init_resnet_weights, residual_stage

CIFAR_STAGE_WIDTHS = (16, 32, 64)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. 2016 for 32×32 inputs, ``width`` multiplying 16/32/64."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        n = (depth - 2) // 6
        widths = [scaled(c, width) for c in CIFAR_STAGE_WIDTHS]
        self.depth, self.width = depth, width
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = widths[0]
        self.layer1 = self._make_layer(widths[0], n, stride=1)
        self.layer2 = self._make_layer(widths[1], n, stride=2)
        self.layer3 = self._make_layer(widths[2], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[2], num_classes)
        init_resnet_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = residual_stage(self.inplanes, planes, blocks, stride)
        self.inplanes = planes
        return stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> CifarResNet:
    """ResNet-20 (He et al. 2016): 3 stages × 3 BasicBlocks of ``width`` × 16/32/64 channels."""
    return CifarResNet(20, num_classes=num_classes, in_channels=in_channels, width=width)
