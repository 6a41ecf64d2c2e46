"""A communicator wrapper whose blocking calls wait politely: they start the non-blocking operation and poll
it with ``MPI_Testall``, yielding the processor between polls after a short spin.

Why: MPICH waits by busy-polling. In the communication thread that overlaps allreduces with backward, a
busy-polling wait for a partner that is still computing burns the very core that partner (or this rank's
own main thread) needs; with as many ranks as cores (or more) the collective then slows compute down
instead of hiding behind it. Yielding lets the computing thread run; the spin before the first yield keeps
small-message latency low.

Only the calls the explicit algorithms and MPI's own allreduce make are wrapped (``Sendrecv``, ``Send``,
``Recv``, ``Allreduce``); anything else is delegated to the wrapped communicator unchanged.
"""
from __future__ import annotations

import os
import time
from typing import Any

from mpi4py import MPI

__all__ = ["PoliteComm", "polite_wait"]

#: polls before the first yield (a few microseconds each)
SPIN_POLLS = 64


def polite_wait(reqs: list) -> None:
    """Wait for every request in ``reqs``: spin briefly, then poll with a yield between polls."""
    testall = MPI.Request.Testall
    for _ in range(SPIN_POLLS):
        if testall(reqs):
            return
    yield_ = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
    while not testall(reqs):
        yield_()


class PoliteComm:
    """``comm`` with polite blocking point-to-point calls and allreduce (see the module docstring)."""

    def __init__(self, comm: MPI.Comm):
        self._comm = comm

    @property
    def comm(self) -> MPI.Comm:
        """The wrapped communicator."""
        return self._comm

    def Sendrecv(self, sendbuf: Any, dest: int, sendtag: int = 0, recvbuf: Any = None, source: int = MPI.ANY_SOURCE,
                 recvtag: int = MPI.ANY_TAG, status: MPI.Status | None = None) -> None:  # noqa: N802 - MPI name
        r = self._comm.Irecv(recvbuf, source=source, tag=recvtag)
        s = self._comm.Isend(sendbuf, dest=dest, tag=sendtag)
        polite_wait([r, s])

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:  # noqa: N802
        polite_wait([self._comm.Isend(buf, dest=dest, tag=tag)])

    def Recv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG,  # noqa: N802
             status: MPI.Status | None = None) -> None:
        polite_wait([self._comm.Irecv(buf, source=source, tag=tag)])

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: MPI.Op = MPI.SUM) -> None:  # noqa: N802
        polite_wait([self._comm.Iallreduce(sendbuf, recvbuf, op=op)])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._comm, name)
