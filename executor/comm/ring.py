"""Ring reduce-scatter, all-gather and allreduce (Patarasuk and Yuan 2009), the executable twin of
:mod:`perfmodel.collectives.ring`.

The vector of ``n`` elements is cut into ``p`` blocks (:func:`~executor.comm._buffers.offsets`, sizes
differ by at most one element; any ``n``, any ``p``). Rank ``r`` sends to ``r+1 mod p`` and receives from
``r-1 mod p`` in every step (one ``Sendrecv``):

* reduce-scatter, ``p-1`` steps: in step ``s`` rank ``r`` sends block ``r-s-1`` and receives block
  ``r-s-2``, which it adds to its own copy. Afterwards rank ``r`` holds the full sum of block ``r``
  (MPI ``Reduce_scatter_block`` placement);
* all-gather, ``p-1`` steps: in step ``s`` rank ``r`` forwards block ``r-s`` and receives block ``r-s-1``;
* allreduce = reduce-scatter + all-gather: ``2(p-1)`` steps of ``n/p`` elements, as the cost model counts.

Every block is summed in one fixed order and then copied, so all ranks end with bit-identical results.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mpi4py import MPI

from ._buffers import TAG, offsets, workspace
from .base import AllreduceAlgorithm

__all__ = ["Ring", "ring_reduce_scatter", "ring_allgather"]


def ring_reduce_scatter(a: np.ndarray, comm: MPI.Comm, off: Sequence[int]) -> None:
    """Ring reduce-scatter of ``a`` in place: afterwards ``a[off[r]:off[r+1]]`` on rank ``r`` is the sum of
    that block over all ranks (the other blocks hold partial sums).

    Parameters
    ----------
    a : numpy.ndarray
        1-D contiguous buffer, the same length on every rank.
    comm : mpi4py.MPI.Comm
    off : sequence of int
        ``p + 1`` non-decreasing block boundaries (elements), identical on every rank.
    """
    p, r = comm.Get_size(), comm.Get_rank()
    if p == 1:
        return
    right, left = (r + 1) % p, (r - 1) % p
    tmp = workspace(max(off[i + 1] - off[i] for i in range(p)), a.dtype)
    for s in range(p - 1):
        si, ri = (r - s - 1) % p, (r - s - 2) % p
        lo, hi = off[ri], off[ri + 1]
        rb = tmp[: hi - lo]
        comm.Sendrecv(a[off[si]:off[si + 1]], dest=right, sendtag=TAG, recvbuf=rb, source=left, recvtag=TAG)
        np.add(a[lo:hi], rb, out=a[lo:hi])


def ring_allgather(a: np.ndarray, comm: MPI.Comm, off: Sequence[int]) -> None:
    """Ring all-gather in place: on entry rank ``r`` owns ``a[off[r]:off[r+1]]``; on return every rank
    holds every rank's block at its place."""
    p, r = comm.Get_size(), comm.Get_rank()
    if p == 1:
        return
    right, left = (r + 1) % p, (r - 1) % p
    for s in range(p - 1):
        si, ri = (r - s) % p, (r - s - 1) % p
        comm.Sendrecv(a[off[si]:off[si + 1]], dest=right, sendtag=TAG,
                      recvbuf=a[off[ri]:off[ri + 1]], source=left, recvtag=TAG)


class Ring(AllreduceAlgorithm):
    """Ring reduce-scatter + ring all-gather (bandwidth-optimal; ``2(p-1)`` steps)."""

    name = "ring"
    summary = "ring reduce-scatter + all-gather, p blocks, 2(p-1) Sendrecv steps"

    def _allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        off = offsets(a.size, comm.Get_size())
        ring_reduce_scatter(a, comm, off)
        ring_allgather(a, comm, off)
