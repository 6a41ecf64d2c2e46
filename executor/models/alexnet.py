"""AlexNet (torchvision's definition) and AlexNet-BN (You, Gitman, Ginsburg 2017; You et al. 2018).

``AlexNet`` is torchvision's ``torchvision.models.alexnet``: the single-tower "one weird trick" variant
(Krizhevsky 2014) with 64-192-384-256-256 convolution channels, no local response normalisation,
adaptive average pooling to 6x6, and a 4096-4096 classifier with dropout 0.5; 61,100,840 parameters with
1000 classes. The only change: the flatten is an ``nn.Flatten`` module so forward hooks see it.

``AlexNetBN`` is the model LARS was demonstrated on ("AlexNet-BN": AlexNet with batch normalisation).
Choices, following the LARS paper's description and NVIDIA Caffe's ``alexnet_bn`` recipe:

- the same convolution/FC geometry as ``AlexNet`` above (so the two are comparable here);
- a BatchNorm after every convolution and after fc6 and fc7 (before the ReLU); no LRN;
- the layers followed by BN carry no bias (BN's beta makes it redundant); the last FC keeps its bias;
- **no dropout by default** (``dropout=0.0``): BN after fc6/fc7 already regularises, and dropout placed
  before a BN layer shifts the variance statistics between training and inference (Li et al. 2019,
  "Understanding the disharmony between dropout and batch normalization"). Pass ``dropout=0.5`` to keep
  torchvision's dropout layers (before fc6 and fc7); parameters are the same either way.

With 1000 classes AlexNet-BN has 61,110,184 parameters: AlexNet's 61,100,840, minus the 9,344 biases of
the seven layers that lost theirs (64+192+384+256+256+4096+4096), plus twice that in BN gammas and betas.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["AlexNet", "AlexNetBN", "alexnet", "alexnet_bn"]


class AlexNet(nn.Module):
    """torchvision's AlexNet (61,100,840 parameters with 1000 classes)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _conv_bn(cin: int, cout: int, **kw) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AlexNetBN(nn.Module):
    """AlexNet with BatchNorm after each convolution and after fc6/fc7, no LRN, no dropout by default."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(3, 64, kernel_size=11, stride=4, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn(64, 192, kernel_size=5, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn(192, 384, kernel_size=3, padding=1),
            *_conv_bn(384, 256, kernel_size=3, padding=1),
            *_conv_bn(256, 256, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten(1)
        drop = (lambda: [nn.Dropout(p=dropout)]) if dropout > 0 else (lambda: [])
        self.classifier = nn.Sequential(
            *drop(),
            nn.Linear(256 * 6 * 6, 4096, bias=False),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            *drop(),
            nn.Linear(4096, 4096, bias=False),
            nn.BatchNorm1d(4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def alexnet(num_classes: int = 1000, **kw) -> AlexNet:
    """torchvision's AlexNet."""
    return AlexNet(num_classes=num_classes, **kw)


def alexnet_bn(num_classes: int = 1000, **kw) -> AlexNetBN:
    """AlexNet-BN (see the module docstring for the choices)."""
    return AlexNetBN(num_classes=num_classes, **kw)
