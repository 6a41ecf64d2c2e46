"""Datasets the toolkit knows: sample shape, classes and split sizes (the single source of these facts for
perfmodel, the run config and the executor)."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = ["DatasetInfo", "DATASETS"]


@dataclass(frozen=True)
class DatasetInfo:
    """Shape and size of a dataset.

    Attributes
    ----------
    name : str
    input_shape : tuple of int
        One sample, channels first (C, H, W).
    num_classes : int
    train_images : int
        Size of the training set (images per epoch).
    val_images : int
        Size of the validation set (images per evaluation).
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    train_images: int
    val_images: int


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({
    # ImageNet-1k: 1,281,167 training and 50,000 validation images (PAPERS.md; hardware_specs.md section 4)
    "imagenet": DatasetInfo("imagenet", (3, 224, 224), 1000, 1_281_167, 50_000),
    # CIFAR-10: 50,000 training and 10,000 test images
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10, 50_000, 10_000),
    # scikit-learn's bundled 8x8 handwritten digits (1,797 images), split 80/20 by the executor
    "digits": DatasetInfo("digits", (1, 8, 8), 10, 1_437, 360),
})
