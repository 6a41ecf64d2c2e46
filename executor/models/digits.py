"""Small networks for the bundled 8x8 digits dataset (1 x 8 x 8 inputs, 10 classes): real data, trained
to a target accuracy in seconds, for end-to-end time-to-accuracy checks on one machine."""
from __future__ import annotations

from torch import nn

__all__ = ["digits_cnn", "digits_mlp"]


def digits_cnn(num_classes: int = 10, width: int = 32) -> nn.Module:
    """conv3x3(1->w) BN ReLU, conv3x3(w->2w, stride 2) BN ReLU, global average pool, fc(2w -> classes)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def digits_mlp(num_classes: int = 10, hidden: int = 128) -> nn.Module:
    """flatten, fc(64 -> hidden) ReLU, fc(hidden -> classes)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
