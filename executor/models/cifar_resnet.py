"""CIFAR-10 ResNets of He et al. 2016, sec. 4.2, and a tiny CNN for very fast local runs.

CIFAR ResNet-(6n+2): a 3x3 convolution with 16 filters, then three stages of ``n`` BasicBlocks (two 3x3
convolutions each) with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps (the first block of stages 2 and
3 has stride 2), global average pooling and a 10-way fully connected layer. ``n = 3, 5, 7, 9, 18`` give
ResNet-20, 32, 44, 56, 110. Every convolution is followed by BatchNorm; convolutions have no bias.

Shortcut (the brief lets us choose; documented here):

- ``shortcut="A"`` (default, what the paper used for CIFAR): identity shortcuts everywhere; where the shape
  changes, the input is subsampled by 2 and zero-padded in channels
  (:class:`~executor.models.layers.PadShortcut`). Parameter free, so ResNet-20 has 269,722 parameters
  (the paper's "0.27M"), ResNet-32 464,154, ResNet-44 658,586, ResNet-56 853,018, ResNet-110 1,727,962.
- ``shortcut="B"``: a 1x1 stride-2 projection convolution plus BatchNorm where the shape changes; adds
  (16*32 + 2*32) + (32*64 + 2*64) = 2,752 parameters to every depth (ResNet-20: 272,474).

Closed form of the parameter count (``c = num_classes``)::

    stem: 3*9*16 + 2*16
    stage with w filters, n blocks, input width w_in: first block 9*w_in*w + 9*w*w + 4*w, others
        2*9*w*w + 4*w each; option B adds w_in*w + 2*w for the projection of the first block of
        stages 2 and 3
    classifier: 64*c + c

The residual add is an :class:`~executor.models.layers.Add` module so forward hooks see it.

``TinyCNN`` ("tiny"): conv(3->8, 3x3) BN ReLU maxpool2 conv(8->16, 3x3) BN ReLU global-avg-pool FC(16->10);
1,586 parameters with 10 classes. Meant for smoke tests of the whole predict/run loop in seconds.
"""
from __future__ import annotations

import torch
from torch import nn

from executor.models.layers import Add, PadShortcut

__all__ = ["CifarBasicBlock", "CifarResNet", "TinyCNN", "cifar_resnet", "cifar_resnet_param_count",
           "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "tiny"]


class CifarBasicBlock(nn.Module):
    """Two 3x3 convolutions with BN, identity (A) or projection (B) shortcut, add, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes))
        self.add = Add()
        self.relu_out = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu_out(self.add(out, identity))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) of He et al. 2016, sec. 4.2.

    Parameters
    ----------
    n : int
        Blocks per stage (depth = 6n + 2).
    num_classes : int
        Classifier outputs (10 for CIFAR-10).
    shortcut : {"A", "B"}
        Zero-padding identity (A, paper default) or 1x1 projection (B) where the shape changes.
    zero_init_residual : bool
        Zero the gamma of each block's last BN (Goyal et al. 2017).
    """

    def __init__(self, n: int, num_classes: int = 10, shortcut: str = "A", zero_init_residual: bool = False):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(CifarBasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, CifarBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def cifar_resnet_param_count(n: int, num_classes: int = 10, shortcut: str = "A") -> int:
    """Closed-form parameter count of :class:`CifarResNet` (see the module docstring)."""
    total = 3 * 9 * 16 + 2 * 16
    w_in = 16
    for w in (16, 32, 64):
        total += 9 * w_in * w + 9 * w * w + 4 * w + (n - 1) * (2 * 9 * w * w + 4 * w)
        if shortcut == "B" and w_in != w:
            total += w_in * w + 2 * w
        w_in = w
    return total + 64 * num_classes + num_classes


def cifar_resnet(depth: int, num_classes: int = 10, **kw) -> CifarResNet:
    """CIFAR ResNet of the given depth (6n + 2)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes, **kw)


def resnet20(num_classes: int = 10, **kw) -> CifarResNet:
    """CIFAR ResNet-20 (n = 3)."""
    return CifarResNet(3, num_classes=num_classes, **kw)


def resnet32(num_classes: int = 10, **kw) -> CifarResNet:
    """CIFAR ResNet-32 (n = 5)."""
    return CifarResNet(5, num_classes=num_classes, **kw)


def resnet44(num_classes: int = 10, **kw) -> CifarResNet:
    """CIFAR ResNet-44 (n = 7)."""
    return CifarResNet(7, num_classes=num_classes, **kw)


def resnet56(num_classes: int = 10, **kw) -> CifarResNet:
    """CIFAR ResNet-56 (n = 9)."""
    return CifarResNet(9, num_classes=num_classes, **kw)


def resnet110(num_classes: int = 10, **kw) -> CifarResNet:
    """CIFAR ResNet-110 (n = 18)."""
    return CifarResNet(18, num_classes=num_classes, **kw)


class TinyCNN(nn.Module):
    """Two-convolution CNN for 3x32x32 inputs; 1,586 parameters with 10 classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def tiny(num_classes: int = 10, **kw) -> TinyCNN:
    """The tiny CNN (see :class:`TinyCNN`)."""
    return TinyCNN(num_classes=num_classes, **kw)
