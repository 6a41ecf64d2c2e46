"""The executor's communication layer: real allreduce with MPI (mpi4py) and the toolkit's own algorithms.

Blocking collectives (in place, sum; numpy float32/float64 arrays or torch tensors, contiguous)::

    allreduce(buf, comm, algorithm="ring")          ring | recursive_doubling | halving_doubling |
                                                     hierarchical | mpi   (registry ALGORITHMS)
    reduce_scatter(buf, comm, "ring", counts=None)   -> view of this rank's block (ring | mpi)
    allgather(buf, comm, "ring", counts=None)        (ring | mpi)
    broadcast(buf, comm, root=0, algorithm="binomial")   (binomial | mpi)

Non-blocking (a communication thread, one collective in flight, submission order)::

    h = iallreduce(buf, comm, algorithm); ...; h.wait()
    MPIEngine(comm, algorithm).submit(buf) -> Handle

Gradient bucketing with overlap: :class:`executor.comm.buckets.GradientBucketer`; the torch.distributed
backend (gloo / NCCL): :mod:`executor.comm.torch_dist`.

Each algorithm mirrors the cost model of the same name in :mod:`perfmodel.collectives` (the same messages
in the same order), so predictions and measurements compare like with like. An unknown algorithm name
raises ``ConfigError(source="--allreduce", field="allreduce", ...)`` listing the known names.
"""
from __future__ import annotations

from ._buffers import as_flat_array, block_offsets
from .api import (ALGORITHMS, SCATTER_GATHER_ALGORITHMS, allgather, allreduce, broadcast, get_algorithm,
                  known_algorithms, reduce_scatter)
from .base import AllreduceAlgorithm
from .broadcast import BROADCASTS
from .engine import CommEngine, CommTimeout, Handle, MPIEngine, close_default_engines, default_engine, iallreduce
from .halving_doubling import HalvingDoubling
from .hierarchical import Hierarchical
from .mpi_native import MPINative
from .recursive_doubling import RecursiveDoubling
from .ring import Ring

__all__ = [
    "ALGORITHMS", "SCATTER_GATHER_ALGORITHMS", "BROADCASTS", "known_algorithms", "get_algorithm",
    "allreduce", "reduce_scatter", "allgather", "broadcast", "iallreduce",
    "AllreduceAlgorithm", "Ring", "RecursiveDoubling", "HalvingDoubling", "Hierarchical", "MPINative",
    "CommEngine", "MPIEngine", "Handle", "CommTimeout", "default_engine", "close_default_engines",
    "as_flat_array", "block_offsets",
]
