"""Registry of the executable allreduce algorithms and the blocking collective entry points.

``allreduce(buf, comm, algorithm)`` sums ``buf`` over the ranks of ``comm`` in place. ``buf`` is a contiguous
float32 (or float64) ``numpy.ndarray`` or ``torch.Tensor`` (CPU, or another device through host staging; see
:mod:`executor.comm._buffers`). ``algorithm`` is a registry name or an :class:`AllreduceAlgorithm` instance
(e.g. ``Hierarchical(ranks_per_node=2)``).

Names: ``ring``, ``recursive_doubling``, ``halving_doubling``, ``hierarchical`` (the cost model's names,
:data:`perfmodel.collectives.ALGORITHMS`) and ``mpi`` (MPI's own ``Allreduce``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from hardware.errors import ConfigError

from ._buffers import SOURCE, as_flat_array, check_counts
from .base import AllreduceAlgorithm
from .broadcast import BROADCASTS
from .halving_doubling import HalvingDoubling
from .hierarchical import Hierarchical
from .mpi_native import MPINative
from .recursive_doubling import RecursiveDoubling
from .ring import Ring, ring_allgather, ring_reduce_scatter

__all__ = ["ALGORITHMS", "SCATTER_GATHER_ALGORITHMS", "known_algorithms", "get_algorithm", "allreduce",
           "reduce_scatter", "allgather", "broadcast"]

#: name -> allreduce algorithm with default options
ALGORITHMS: dict[str, AllreduceAlgorithm] = {
    a.name: a for a in (Ring(), RecursiveDoubling(), HalvingDoubling(), Hierarchical(), MPINative())
}

_CLASSES = {a.name: type(a) for a in ALGORITHMS.values()}

#: algorithms of :func:`reduce_scatter` and :func:`allgather`
SCATTER_GATHER_ALGORITHMS: tuple[str, ...] = ("ring", "mpi")


def known_algorithms() -> list[str]:
    """Names accepted by :func:`get_algorithm`."""
    return list(ALGORITHMS)


def get_algorithm(name: str | AllreduceAlgorithm, **options: Any) -> AllreduceAlgorithm:
    """The algorithm called ``name`` (an instance is returned unchanged).

    ``options`` build a non-default instance (only ``hierarchical`` takes any: ``ranks_per_node``,
    ``inter_algorithm``, ``variant``).

    Raises
    ------
    ConfigError
        ``source="--allreduce", field="allreduce"`` for an unknown name (the reason lists the known ones);
        ``source="executor.comm"`` for bad options.
    """
    if isinstance(name, AllreduceAlgorithm):
        if options:
            raise ConfigError(SOURCE, "options", sorted(options), "not accepted with an algorithm instance")
        return name
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ConfigError("--allreduce", "allreduce", name,
                          f"unknown algorithm; known: {', '.join(known_algorithms())}")
    if not options:
        return ALGORITHMS[name]
    try:
        return _CLASSES[name](**options)
    except TypeError:
        raise ConfigError(SOURCE, f"{name}.options", sorted(options), "not accepted by this algorithm") from None


def _check_comm(comm: Any) -> MPI.Comm:
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise ConfigError(SOURCE, "comm", type(comm).__name__, "must be an mpi4py intracommunicator")
    return comm


def allreduce(buf: Any, comm: MPI.Comm, algorithm: str | AllreduceAlgorithm = "ring") -> None:
    """Sum ``buf`` over the ranks of ``comm`` in place with ``algorithm`` (every rank gets the sum).

    Parameters
    ----------
    buf : numpy.ndarray or torch.Tensor
        Contiguous float32/float64 buffer, the same number of elements on every rank.
    comm : mpi4py.MPI.Intracomm
    algorithm : str or AllreduceAlgorithm
        ``ring``, ``recursive_doubling``, ``halving_doubling``, ``hierarchical`` or ``mpi``.
    """
    alg = get_algorithm(algorithm)
    comm = _check_comm(comm)
    a, writeback = as_flat_array(buf)
    alg.allreduce(a, comm)
    if writeback is not None:
        writeback()


def _slice(buf: Any, a: np.ndarray, lo: int, hi: int):
    if isinstance(buf, np.ndarray):
        return a[lo:hi]
    return buf.view(-1)[lo:hi]


def _check_sg(algorithm: str, field: str) -> str:
    if algorithm not in SCATTER_GATHER_ALGORITHMS:
        raise ConfigError(SOURCE, field, algorithm, f"unknown; known: {', '.join(SCATTER_GATHER_ALGORITHMS)}")
    return algorithm


def reduce_scatter(buf: Any, comm: MPI.Comm, algorithm: str = "ring", counts: Any = None):
    """Reduce-scatter (sum) in place: rank ``r`` ends with the sum of block ``r``.

    Parameters
    ----------
    buf : numpy.ndarray or torch.Tensor
        The full input vector (same size on every rank), modified in place: block ``r`` holds the result
        on rank ``r``; the other blocks hold unspecified partial sums.
    comm : mpi4py.MPI.Intracomm
    algorithm : str
        ``ring`` or ``mpi`` (``comm.Reduce_scatter``).
    counts : sequence of int, optional
        Elements per block (length ``p``, summing to the size); default: nearly equal blocks
        (:func:`~executor.comm._buffers.block_offsets`).

    Returns
    -------
    numpy.ndarray or torch.Tensor
        The view of ``buf`` (flattened) holding this rank's block.
    """
    _check_sg(algorithm, "reduce_scatter")
    comm = _check_comm(comm)
    a, writeback = as_flat_array(buf)
    p, r = comm.Get_size(), comm.Get_rank()
    off = check_counts(counts, a.size, p)
    if p > 1:
        if algorithm == "ring":
            ring_reduce_scatter(a, comm, off)
        else:
            comm.Reduce_scatter(a.copy(), a[off[r]:off[r + 1]], recvcounts=list(np.diff(off)), op=MPI.SUM)
    if writeback is not None:
        writeback()
    return _slice(buf, a, off[r], off[r + 1])


def allgather(buf: Any, comm: MPI.Comm, algorithm: str = "ring", counts: Any = None) -> None:
    """All-gather in place: on entry rank ``r`` owns block ``r`` of ``buf``; on return every rank holds all
    blocks. ``counts`` as in :func:`reduce_scatter`; ``algorithm`` ``ring`` or ``mpi``
    (``comm.Allgatherv`` in place)."""
    _check_sg(algorithm, "allgather")
    comm = _check_comm(comm)
    a, writeback = as_flat_array(buf)
    p = comm.Get_size()
    off = check_counts(counts, a.size, p)
    if p > 1:
        if algorithm == "ring":
            ring_allgather(a, comm, off)
        else:
            comm.Allgatherv(MPI.IN_PLACE, [a, (list(np.diff(off)), list(off[:-1]))])
    if writeback is not None:
        writeback()


def broadcast(buf: Any, comm: MPI.Comm, root: int = 0, algorithm: str = "binomial") -> None:
    """Broadcast ``buf`` from ``root`` in place; ``algorithm`` ``binomial`` (tree) or ``mpi`` (``Bcast``)."""
    if algorithm not in BROADCASTS:
        raise ConfigError(SOURCE, "broadcast", algorithm, f"unknown; known: {', '.join(BROADCASTS)}")
    comm = _check_comm(comm)
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < comm.Get_size():
        raise ConfigError(SOURCE, "root", root, f"must be a rank in [0, {comm.Get_size()})")
    a, writeback = as_flat_array(buf)
    BROADCASTS[algorithm](a, comm, int(root))
    if writeback is not None:
        writeback()
