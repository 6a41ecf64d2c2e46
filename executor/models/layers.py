"""Tiny parameter-free leaf modules used by the model zoo so that forward hooks see every operation.

The workload extractor (:mod:`executor.workload_extract`) records one row per call of a *leaf* module. An
operation written functionally inside ``forward`` (``out + identity``, ``torch.flatten``) is invisible to
hooks, so the zoo's models express those operations as the modules below. They hold no parameters and no
buffers, so they change neither the parameter count nor the ``state_dict`` keys of a model (ResNets stay
key-compatible with torchvision's).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Add", "PadShortcut"]


class Add(nn.Module):
    """Element-wise sum of two tensors of equal shape: the residual add of a ResNet block.

    Out of place (``a + b``), so the hook sees the two inputs unchanged.
    """

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return a + b


class PadShortcut(nn.Module):
    """Parameter-free "option A" shortcut of He et al. 2016 (sec. 4.2, CIFAR-10).

    Subsamples the input spatially by ``stride`` (takes every ``stride``-th pixel) and pads the channel
    dimension with zeros from ``in_channels`` to ``out_channels`` (half the padding before, half after,
    as the common CIFAR reference implementations do).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts of the block's input and output; ``out_channels >= in_channels``.
    stride : int
        Spatial subsampling factor (1 or 2 in the CIFAR ResNets).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError("PadShortcut cannot reduce channels")  # programming error, not user input
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            before = extra // 2
            x = nn.functional.pad(x, (0, 0, 0, 0, before, extra - before))
        return x

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
