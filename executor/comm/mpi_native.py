"""MPI's own collectives (``comm.Allreduce(MPI.IN_PLACE, ...)`` and friends): the baseline the explicit
algorithms are measured against. Which algorithm MPI picks internally is the library's choice (MPICH 4/5:
recursive doubling for short messages, Rabenseifner for long ones, with its own thresholds; tunable with
``MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM``). The cost model has no family called ``mpi``; compare it against
``auto`` or against the algorithm MPICH is known to choose.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .base import AllreduceAlgorithm

__all__ = ["MPINative"]


class MPINative(AllreduceAlgorithm):
    """``comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)``."""

    name = "mpi"
    summary = "MPI's own Allreduce (in place, MPI.SUM); the library chooses the algorithm"

    def _allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
