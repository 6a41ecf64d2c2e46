"""The validation matrix: the configurations run on this machine to check the predictor.

Each point is a run configuration on the ``local`` system (one node, ``ranks`` ranks) with a fixed number
of measured iterations. The full matrix spans models (a small CIFAR ResNet, ResNet-50 at a small batch,
AlexNet), ranks 1, 2 and 4, per-rank batches, optimizers (SGD, LARS, K-FAC), allreduce algorithms, bucket
sizes and overlap on/off; ``quick`` is a subset that runs in a minute or two.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from perfmodel.config import RunConfig, load_config

__all__ = ["Point", "full_matrix", "quick_matrix", "MATRICES"]


@dataclass(frozen=True)
class Point:
    """One configuration of the matrix (``batch`` is global; ``allreduce`` as in the run config)."""

    model: str
    ranks: int
    batch: int
    optimizer: str = "sgd"
    allreduce: str = "auto"
    bucket_mb: float = 25.0
    overlap: bool = True
    iterations: int = 30
    warmup_iterations: int = 2
    options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def id(self) -> str:
        """Stable, readable identifier (file name of the point's result)."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        tag = hashlib.sha256(blob).hexdigest()[:8]
        return (f"{self.model}-r{self.ranks}-b{self.batch}-{self.optimizer}-{self.allreduce}-"
                f"{self.bucket_mb:g}MB-{'ov' if self.overlap else 'noov'}-{tag}")

    def config(self, system: str = "local") -> RunConfig:
        """The run configuration of this point on ``system`` (one node, ``ranks`` ranks)."""
        return load_config(model=self.model, batch=self.batch, optimizer=self.optimizer, allreduce=self.allreduce,
                           bucket_bytes=self.bucket_mb * 1e6, overlap=self.overlap, system=system, nodes=1,
                           ranks_per_node=self.ranks, iterations=self.iterations,
                           warmup_iterations=self.warmup_iterations, epochs=1.0,
                           optimizer_options=dict(self.options) or None)


def _kfac(refresh: int = 5) -> tuple[tuple[str, Any], ...]:
    return (("refresh_interval", refresh),)


def quick_matrix() -> list[Point]:
    """Six points that cover 1/2/4 ranks, the three optimizers, an explicit algorithm and overlap off."""
    return [
        Point("resnet20", 1, 32),
        Point("resnet20", 2, 64),
        Point("resnet20", 2, 64, optimizer="lars"),
        Point("resnet20", 2, 32, optimizer="kfac", options=_kfac(5)),
        Point("resnet20", 2, 64, allreduce="ring", bucket_mb=0.25, overlap=False),
        Point("resnet20", 4, 64, allreduce="halving_doubling", bucket_mb=0.25),
    ]


def full_matrix() -> list[Point]:
    """At least 30 points over models, ranks, batches, optimizers, algorithms, buckets and overlap."""
    pts: list[Point] = []
    # small CIFAR ResNet: the broad sweep
    for ranks in (1, 2, 4):
        for per_rank in (16, 64):
            pts.append(Point("resnet20", ranks, per_rank * ranks))
    for opt, opts in (("lars", ()), ("kfac", _kfac(5))):
        for ranks in (1, 2, 4):
            pts.append(Point("resnet20", ranks, 32 * ranks, optimizer=opt, options=opts))
    for alg in ("ring", "recursive_doubling", "halving_doubling", "hierarchical"):
        for ranks in (2, 4):
            pts.append(Point("resnet20", ranks, 32 * ranks, allreduce=alg, bucket_mb=0.25))
    for ranks in (2, 4):
        pts.append(Point("resnet20", ranks, 32 * ranks, bucket_mb=0.1, overlap=False))
        pts.append(Point("resnet20", ranks, 32 * ranks, bucket_mb=5.0))
    pts.append(Point("resnet32", 2, 64))
    # ResNet-50 at a small batch (224x224 images: about a second per iteration on this CPU) and AlexNet (244 MB
    # of gradients, communication-heavy): 10 measured iterations, so that a run (and its host speed probe)
    # spans 5-12 s of the host's drift rather than 2-6 s (4 and 5 iterations until run 15, where these
    # points' errors changed by up to 30 points from one full run to the next)
    for ranks in (1, 2):
        pts.append(Point("resnet50", ranks, 2 * ranks, iterations=10, warmup_iterations=1))
    pts.append(Point("resnet50", 2, 4, optimizer="lars", iterations=10, warmup_iterations=1))
    for ranks in (1, 2):
        pts.append(Point("alexnet", ranks, 8 * ranks, iterations=10, warmup_iterations=1))
    pts.append(Point("alexnet", 2, 16, overlap=False, iterations=10, warmup_iterations=1))
    pts.append(Point("alexnet", 2, 16, allreduce="ring", iterations=10, warmup_iterations=1))
    return pts


MATRICES = {"quick": quick_matrix, "full": full_matrix}


def iter_points(name: str) -> Iterator[Point]:
    """The points of matrix ``name`` (``quick`` or ``full``)."""
    yield from MATRICES[name]()
