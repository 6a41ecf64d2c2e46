"""Failure paths of the executor's MPI helpers (run under mpiexec). Usage: check_guard.py MODE

raise           rank 1 raises while rank 0 waits in a Recv that can never complete: run_guarded must
                abort the job (non-zero exit, "rank 1: ValueError: boom" on stderr).
barrier_timeout rank 1 never reaches the barrier: the others' barrier(timeout_s=2) raises BarrierTimeout,
                and the job aborts.
comm_thread     the allreduce in rank 1's communication thread raises while rank 1's main thread sits in
                a barrier and rank 0 waits for its handle: the engine aborts the job
                ("rank 1: RuntimeError: thread boom (communication thread)").
ok              everything succeeds: exit 0, rank 0 prints "guard OK".
"""
from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

from executor.comm import MPIEngine, Ring
from executor.mpi_utils import barrier, run_guarded

COMM = MPI.COMM_WORLD
R = COMM.Get_rank()


class FailsOnRank1(Ring):
    name = "fails_on_rank1"

    def _allreduce(self, a, comm):
        if comm.Get_rank() == 1:
            raise RuntimeError("thread boom")
        super()._allreduce(a, comm)


def main(mode: str) -> int:
    if mode == "raise":
        if R == 1:
            time.sleep(0.2)
            raise ValueError("boom")
        buf = np.zeros(1, np.float32)
        COMM.Recv(buf, source=1, tag=99)  # never satisfied
    elif mode == "barrier_timeout":
        if R == 1:
            time.sleep(300)
        barrier(COMM, timeout_s=2.0)
    elif mode == "comm_thread":
        eng = MPIEngine(COMM, FailsOnRank1())
        h = eng.submit(np.ones(8, np.float32))
        if R == 1:
            COMM.Barrier()  # never completes: rank 0 waits on its handle
        h.wait()
    elif mode == "ok":
        barrier(COMM, timeout_s=30.0)
        if R == 0:
            print("guard OK", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    run_guarded(main, sys.argv[1])
    sys.exit(0)
