"""Recursive-doubling allreduce (Thakur, Rabenseifner and Gropp 2005, section 4.4), the executable twin of
:mod:`perfmodel.collectives.recursive_doubling`.

Power of two ``p``: in step ``k = 0 .. log2(p)-1`` rank ``v`` exchanges the whole vector with ``v XOR 2^k``
(one ``Sendrecv``) and adds what it receives.

Other ``p``: the pre/post-step reduction to ``q = 2^floor(log2 p)`` survivors exactly as the cost model
documents (:func:`perfmodel.collectives.recursive_doubling.survivors` is imported, so both sides agree on
who survives): with ``r = p - q``, the odd ranks ``2i+1 < 2r`` send their vector to ``2i`` (which adds it)
and sit out; survivor ``v`` is old rank ``2v`` for ``v < r`` and ``v + r`` otherwise; after the exchanges
each ``2i`` sends the result back to ``2i+1``. That is ``ceil(log2 p) + 1`` messages of ``n``.

Both partners of an exchange compute ``x + y`` (IEEE addition is commutative), so every rank ends with a
bit-identical result.
"""
from __future__ import annotations

import functools

import numpy as np
from mpi4py import MPI

from perfmodel.collectives.recursive_doubling import survivors

from ._buffers import TAG, workspace
from .base import AllreduceAlgorithm

__all__ = ["RecursiveDoubling", "fold", "unfold", "survivor_map"]


@functools.lru_cache(maxsize=256)
def survivor_map(p: int) -> tuple[int, int, tuple[int, ...]]:
    """``perfmodel.collectives.recursive_doubling.survivors(p)`` with the map as Python ints (cached)."""
    q, r, old = survivors(p)
    return int(q), int(r), tuple(int(x) for x in old)


def fold(a: np.ndarray, comm: MPI.Comm, tmp: np.ndarray) -> tuple[int, int, tuple[int, ...]]:
    """Pre-step of the non-power-of-two reduction (a no-op for powers of two).

    Returns
    -------
    (v, q, old_of_new)
        This rank's survivor index ``v`` (``-1`` if it folded into its even neighbour and sits out), the
        number of survivors ``q`` and the original rank of each survivor.
    """
    p, rank = comm.Get_size(), comm.Get_rank()
    q, r, old = survivor_map(p)
    if rank < 2 * r:
        if rank % 2:
            comm.Send(a, dest=rank - 1, tag=TAG)
            return -1, q, old
        comm.Recv(tmp, source=rank + 1, tag=TAG)
        np.add(a, tmp, out=a)
        return rank // 2, q, old
    return rank - r, q, old


def unfold(a: np.ndarray, comm: MPI.Comm) -> None:
    """Post-step: each even rank ``2i < 2r`` sends the result to ``2i + 1``, which receives it."""
    p, rank = comm.Get_size(), comm.Get_rank()
    _, r, _ = survivor_map(p)
    if rank < 2 * r:
        if rank % 2:
            comm.Recv(a, source=rank - 1, tag=TAG)
        else:
            comm.Send(a, dest=rank + 1, tag=TAG)


class RecursiveDoubling(AllreduceAlgorithm):
    """Recursive doubling: ``log2 p`` whole-vector exchanges (plus pre/post step when p is not 2^k)."""

    name = "recursive_doubling"
    summary = "recursive doubling, whole-vector exchanges with rank XOR 2^k; MPICH-style pre/post step"

    def _allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        tmp = workspace(a.size, a.dtype)
        v, q, old = fold(a, comm, tmp)
        if v >= 0:
            mask = 1
            while mask < q:
                partner = old[v ^ mask]
                comm.Sendrecv(a, dest=partner, sendtag=TAG, recvbuf=tmp, source=partner, recvtag=TAG)
                np.add(a, tmp, out=a)
                mask <<= 1
        unfold(a, comm)
