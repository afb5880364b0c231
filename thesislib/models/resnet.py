"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The network is built from torchvision's own :class:`torchvision.models.resnet.BasicBlock` and
has exactly torchvision's module names (``conv1, bn1, relu, maxpool, layer1..layer4, avgpool,
fc``; blocks with ``conv1, bn1, conv2, bn2, downsample``), so a torchvision ``resnet18``
state dict loads into ``resnet18()`` with the default arguments. Two additions:

* ``stem="small"`` replaces the 7x7 stride-2 ``conv1`` + max-pool by a 3x3 stride-1 ``conv1``
  and ``maxpool = nn.Identity()`` -- the usual CIFAR / Fashion-MNIST variant for 28-32 px inputs;
* ``width`` multiplies the stage widths 64/128/256/512 (rounded, at least 1 channel).

torchvision's ``ResNet`` class hard-codes the stage widths, hence this small re-implementation of
its constructor (same layer order and the same initialisation: Kaiming-normal fan-out convolutions,
BatchNorm weight 1 and bias 0).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ._width import check_positive_ints, scaled

STEMS = ("imagenet", "small")
STAGE_WIDTHS = (64, 128, 256, 512)
RESNET18_BLOCKS = (2, 2, 2, 2)


def residual_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` BasicBlocks of ``planes`` channels (He et al. 2016); where the first changes the shape, its
    shortcut is a 1×1 strided convolution + BatchNorm (option B), as in torchvision."""
    downsample = None
    if stride != 1 or inplanes != planes * BasicBlock.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * BasicBlock.expansion),
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes * BasicBlock.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_resnet_weights(model: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan-out) convolutions, BatchNorm γ = 1, β = 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class ResNet(nn.Module):
    """ResNet of :class:`BasicBlock` stages with torchvision's module names (He et al. 2016)."""

    def __init__(
        self,
        blocks: tuple[int, ...] = RESNET18_BLOCKS,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: Literal["imagenet", "small"] = "imagenet",
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS} ('small' for 28-32 px inputs), got {stem!r}")
        if len(blocks) != len(STAGE_WIDTHS):
            raise ValueError(f"blocks must give {len(STAGE_WIDTHS)} stage depths, got {blocks!r}")
        check_positive_ints(num_classes=num_classes, in_channels=in_channels)
        widths = [scaled(c, width) for c in STAGE_WIDTHS]
        self.stem = stem
        self.width = width
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        )
        self.layer1 = self._make_layer(widths[0], blocks[0], stride=1)
        self.layer2 = self._make_layer(widths[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(widths[2], blocks[2], stride=2)
        self.layer4 = self._make_layer(widths[3], blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)

        init_resnet_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = residual_stage(self.inplanes, planes, blocks, stride)
        self.inplanes = planes * BasicBlock.expansion
        return stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(
    num_classes: int = 1000,
    in_channels: int = 3,
    stem: Literal["imagenet", "small"] = "imagenet",
    width: float = 1.0,
) -> ResNet:
    """ResNet-18 (He et al. 2016): four stages of two BasicBlocks, widths ``width * 64/128/256/512``.

    ``stem="imagenet"`` is torchvision's ``resnet18`` (7x7/2 conv + 3x3/2 max-pool, for >= 64 px
    inputs); ``stem="small"`` uses a 3x3/1 conv and no pooling, for 28-32 px inputs.
    """
    return ResNet(RESNET18_BLOCKS, num_classes=num_classes, in_channels=in_channels, stem=stem, width=width)
