"""Interface of the executable allreduce algorithms.

An algorithm works on a flat 1-D numpy array (see :func:`executor.comm._buffers.as_flat_array`) in place,
summing over the ranks of an mpi4py intracommunicator. Subclasses implement :meth:`_allreduce` for
``p >= 2``; :meth:`allreduce` handles ``p == 1`` (nothing to do) and empty buffers.

Names match the cost models of :mod:`perfmodel.collectives` so that a measured ``ring`` and a predicted
``ring`` are the same sequence of messages.

Messages use mpi4py's buffer-based (upper-case) point-to-point API: ``Sendrecv``, ``Send``/``Recv``,
``Isend``/``Irecv``; nothing is pickled.
"""
from __future__ import annotations

import abc

import numpy as np
from mpi4py import MPI

__all__ = ["AllreduceAlgorithm"]


class AllreduceAlgorithm(abc.ABC):
    """An allreduce (sum) that runs in place on a flat numpy array."""

    #: registry name (matches :data:`perfmodel.collectives.ALGORITHMS` where the family exists there)
    name: str = ""
    #: one line: what it does and where it comes from
    summary: str = ""

    def allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        """Sum ``a`` (1-D, contiguous) over the ranks of ``comm``, in place; every rank gets the result."""
        if comm.Get_size() == 1 or a.size == 0:
            return
        self._allreduce(a, comm)

    @abc.abstractmethod
    def _allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        """The algorithm proper, for ``p >= 2`` and ``a.size >= 1``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
