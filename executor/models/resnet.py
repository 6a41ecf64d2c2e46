"""ImageNet ResNets (He et al. 2016), defined exactly as torchvision's ``torchvision.models.resnet``.

Architecture: the "v1.5" variant torchvision ships, i.e. in a bottleneck block the stride of a
down-sampling block sits on the 3x3 convolution (``conv2``), not on the first 1x1 convolution as in the
original paper. Parameter counts therefore equal torchvision's: ResNet-18 11,689,512; ResNet-34 21,797,672;
ResNet-50 25,557,032; ResNet-101 44,549,160; ResNet-152 60,192,808 (with 1000 classes).

Differences from torchvision, none of which changes parameters, buffers, ``state_dict`` keys or the maths:

- Each block owns separate ReLU modules (``relu1``, ``relu2``, [``relu3``], ``relu_out``) instead of calling
  one ``relu`` module several times, so each activation is a distinct row of the workload table.
- The residual add is an :class:`~executor.models.layers.Add` leaf module (``add``) and the flatten before
  the classifier an ``nn.Flatten`` module (``flatten``), so forward hooks see them.
- The add is out of place (torchvision: ``out += identity``).

Initialisation follows torchvision: Kaiming-normal (fan_out, ReLU) convolutions, BN gamma 1 / beta 0,
PyTorch's default for the classifier. ``zero_init_residual=True`` sets the gamma of the last BN of each
residual block to zero (Goyal et al. 2017, sec. 5.1), so every block starts as the identity.
"""
from __future__ import annotations

from typing import Type, Union

import torch
from torch import nn

from executor.models.layers import Add

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet152"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (as torchvision)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                     bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (as torchvision)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.add = Add()
        self.relu_out = nn.ReLU(inplace=True)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu_out(self.add(out, identity))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: "v1.5"), 1x1 expand, with a residual connection."""

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.add = Add()
        self.relu_out = nn.ReLU(inplace=True)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu_out(self.add(out, identity))


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7/2 stem, 3x3/2 max-pool, four stages (64, 128, 256, 512 planes), global average
    pool, fully connected classifier.

    Parameters
    ----------
    block : BasicBlock or Bottleneck
    layers : list of 4 ints
        Blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
    num_classes : int
        Classifier outputs (1000 for ImageNet-1k).
    zero_init_residual : bool
        Zero the gamma of the last BN in each block (Goyal et al. 2017).
    groups, width_per_group : int
        Grouped / wide bottlenecks (ResNeXt, Wide ResNet), as torchvision; defaults give plain ResNets.
    """

    def __init__(self, block: Block, layers: list[int], num_classes: int = 1000, zero_init_residual: bool = False,
                 groups: int = 1, width_per_group: int = 64):
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes: int = 1000, **kw) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]): 11,689,512 parameters with 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kw)


def resnet34(num_classes: int = 1000, **kw) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]): 21,797,672 parameters with 1000 classes."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kw)


def resnet50(num_classes: int = 1000, **kw) -> ResNet:
    """ResNet-50 v1.5 (Bottleneck, [3, 4, 6, 3]): 25,557,032 parameters with 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kw)


def resnet101(num_classes: int = 1000, **kw) -> ResNet:
    """ResNet-101 v1.5 (Bottleneck, [3, 4, 23, 3]): 44,549,160 parameters with 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kw)


def resnet152(num_classes: int = 1000, **kw) -> ResNet:
    """ResNet-152 v1.5 (Bottleneck, [3, 8, 36, 3]): 60,192,808 parameters with 1000 classes."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes=num_classes, **kw)
