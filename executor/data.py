"""Training data for the executor: synthetic tensors of a dataset's shape, a small real dataset that ships
inside a dependency (scikit-learn's 8x8 handwritten digits: nothing is downloaded), and ImageNet-style
class folders when a user has them.

Every source hands each rank its shard of the *global* batch: the global batch of iteration ``i`` is the
same on every rank (one shared, seeded permutation per epoch) and rank ``r`` takes rows
``[r * b, (r + 1) * b)`` of it, so a data-parallel run sees exactly the data a single process would.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hardware.errors import ConfigError
from perfmodel.datasets import DATASETS

__all__ = ["Batch", "SyntheticData", "TensorData", "load_digits_split", "ImageFolderData", "make_data"]


@dataclass
class Batch:
    """One rank's share of one global batch."""

    x: torch.Tensor
    y: torch.Tensor
    epoch: int
    epoch_end: bool  # this global batch is the last of its epoch


class SyntheticData:
    """Random inputs of the dataset's shape and random labels, generated once and reused (no I/O cost:
    the measurement of ``io_s`` then shows the executor's own overhead only)."""

    def __init__(self, dataset: str, per_rank_batch: int, rank: int, seed: int = 0, pool: int = 2):
        info = DATASETS[dataset]
        g = torch.Generator().manual_seed(seed * 1_000_003 + rank)
        self._xs = [torch.randn((per_rank_batch, *info.input_shape), generator=g) for _ in range(pool)]
        self._ys = [torch.randint(0, info.num_classes, (per_rank_batch,), generator=g) for _ in range(pool)]
        self.batches_per_epoch = max(1, math.ceil(info.train_images / (per_rank_batch)))
        self._i = 0

    def next_batch(self) -> Batch:
        k = self._i % len(self._xs)
        self._i += 1
        return Batch(self._xs[k], self._ys[k], epoch=0, epoch_end=False)


class TensorData:
    """An in-memory labelled dataset sharded per rank, reshuffled every epoch with a shared seed."""

    def __init__(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 global_batch: int, rank: int, world: int, seed: int = 0):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.x_val = torch.as_tensor(x_val, dtype=torch.float32)
        self.y_val = torch.as_tensor(y_val, dtype=torch.long)
        self.global_batch, self.rank, self.world, self.seed = global_batch, rank, world, seed
        self.per_rank = global_batch // world
        # the last partial global batch of an epoch is dropped, as with drop_last=True
        self.batches_per_epoch = max(1, len(self.x) // global_batch)
        if len(self.x) < global_batch:
            raise ConfigError("--batch", "training.batch", global_batch,
                              f"larger than the {len(self.x)} training samples of the dataset")
        self._epoch, self._k, self._perm = 0, 0, self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))

    def next_batch(self) -> Batch:
        if self._k == self.batches_per_epoch:
            self._epoch, self._k = self._epoch + 1, 0
            self._perm = self._permutation(self._epoch)
        start = self._k * self.global_batch + self.rank * self.per_rank
        idx = self._perm[start:start + self.per_rank]
        self._k += 1
        return Batch(self.x[idx], self.y[idx], epoch=self._epoch, epoch_end=self._k == self.batches_per_epoch)

    def val_shard(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's part of the validation set (contiguous blocks; sizes differ by at most one)."""
        n = len(self.x_val)
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return self.x_val[lo:hi], self.y_val[lo:hi]


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), scaled to [0, 1] and standardised,
    split 80/20 into train/validation with a fixed seed. Shapes (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits  # ships its data inside the wheel

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    x = (x - x.mean()) / x.std()
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = DATASETS["digits"].train_images
    tr, va = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[va], y[va]


class ImageFolderData(TensorData):
    """ImageNet-style folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``), decoded with Pillow,
    resized and centre-cropped to the dataset's input size, held in memory.

    Approximation: the whole split is decoded up front (suitable for subsets; a streaming loader for the
    full ImageNet is outside this executor's scope)."""

    def __init__(self, root: str, dataset: str, global_batch: int, rank: int, world: int, seed: int = 0,
                 limit_per_class: int | None = None):
        info = DATASETS[dataset]
        xtr, ytr, classes = _read_split(Path(root) / "train", info.input_shape, None, limit_per_class)
        xva, yva, _ = _read_split(Path(root) / "val", info.input_shape, classes, limit_per_class)
        super().__init__(xtr, ytr, xva, yva, global_batch, rank, world, seed)


def _read_split(path: Path, shape, classes, limit):
    from PIL import Image

    if not path.is_dir():
        raise ConfigError("--data", "run.data", str(path), "no such folder (expected <root>/train and <root>/val)")
    classes = classes or sorted(p.name for p in path.iterdir() if p.is_dir())
    c, h, w = shape
    xs, ys = [], []
    for label, name in enumerate(classes):
        files = sorted((path / name).glob("*"))[:limit] if (path / name).is_dir() else []
        for f in files:
            img = Image.open(f).convert("RGB" if c == 3 else "L")
            scale = max(h / img.height, w / img.width)
            img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))))
            left, top = (img.width - w) // 2, (img.height - h) // 2
            arr = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32) / 255.0
            xs.append(arr.reshape(h, w, c).transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise ConfigError("--data", "run.data", str(path), "contains no images")
    return np.stack(xs), np.array(ys), classes


def make_data(data: str, dataset: str, global_batch: int, rank: int, world: int, seed: int = 0):
    """The data source named by the config's ``run.data``: ``synthetic``, ``digits`` (real, bundled) or a
    folder path (ImageNet-style)."""
    if data == "synthetic":
        return SyntheticData(dataset, global_batch // world, rank, seed)
    if data == "digits":
        if dataset != "digits":
            raise ConfigError("--data", "run.data", data, f"the digits data needs a digits model, not {dataset}")
        return TensorData(*load_digits_split(seed), global_batch, rank, world, seed)
    if os.path.isdir(data):
        return ImageFolderData(data, dataset, global_batch, rank, world, seed)
    raise ConfigError("--data", "run.data", data, "must be 'synthetic', 'digits' or an ImageNet-style folder")
