"""Broadcast: a binomial tree (MPICH's short-message broadcast) and MPI's own ``Bcast``.

Binomial tree: relative rank ``v = (rank - root) mod p``; ``v`` receives the whole vector from
``v - 2^k`` where ``2^k`` is the lowest set bit of ``v``, then sends it to ``v + 2^j`` for every
``2^j < 2^k`` with ``v + 2^j < p``, largest first. ``ceil(log2 p)`` rounds of ``alpha + n beta``.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from ._buffers import TAG

__all__ = ["binomial_broadcast", "mpi_broadcast", "BROADCASTS"]


def binomial_broadcast(a: np.ndarray, comm: MPI.Comm, root: int = 0) -> None:
    """Broadcast ``a`` from ``root`` along a binomial tree (in place)."""
    p, rank = comm.Get_size(), comm.Get_rank()
    if p == 1 or a.size == 0:
        return
    v = (rank - root) % p
    mask = 1
    while mask < p:
        if v & mask:
            comm.Recv(a, source=(v - mask + root) % p, tag=TAG)
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:
        if v + mask < p:
            comm.Send(a, dest=(v + mask + root) % p, tag=TAG)
        mask >>= 1


def mpi_broadcast(a: np.ndarray, comm: MPI.Comm, root: int = 0) -> None:
    """``comm.Bcast(a, root)``."""
    if comm.Get_size() > 1 and a.size:
        comm.Bcast(a, root=root)


#: broadcast algorithm name -> function(a, comm, root)
BROADCASTS = {"binomial": binomial_broadcast, "mpi": mpi_broadcast}
