"""MPI helpers of the executor: the job never hangs.

* :func:`run_guarded` runs a rank's main function; on any exception it prints one line
  ``rank R: <ExcType>: <message>`` to stderr and calls ``comm.Abort(1)``, which makes ``mpiexec`` kill every
  rank and exit non-zero. Without it, a rank that dies while the others wait in a collective leaves them
  waiting forever.
* :func:`abort` is the same action for code that catches an error itself (the communication thread).
* :func:`barrier` is a barrier with a timeout (``Ibarrier`` + polling): a rank that never arrives turns
  into a :class:`BarrierTimeout` (and, under :func:`run_guarded`, an abort) instead of a hang.
* :func:`thread_level` / :func:`require_thread_level`: the thread support MPI was initialised with.

Thread level
------------
mpi4py initialises MPI with ``mpi4py.rc.thread_level`` (default ``"multiple"``) when ``mpi4py.MPI`` is first
imported. MPICH 5 from the ``mpich`` wheel (ch4, checked here with mpi4py 4.1) provides
``MPI_THREAD_MULTIPLE``, so the communication thread of :mod:`executor.comm.engine` may run while the main
thread makes other MPI calls (on another communicator; the engine duplicates its own). With an MPI that only
provides ``MPI_THREAD_SERIALIZED``, the engine still works, but the main thread must not call MPI while an
operation is in flight.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any, Callable, TypeVar

from mpi4py import MPI

from hardware.errors import ConfigError, InfeasibleError, ToolkitError

__all__ = ["get_comm", "run_guarded", "abort", "format_error", "barrier", "BarrierTimeout", "thread_level",
           "thread_level_name", "require_thread_level", "THREAD_LEVELS"]

T = TypeVar("T")

#: MPI thread-support level name -> constant
THREAD_LEVELS: dict[str, int] = {
    "single": MPI.THREAD_SINGLE,
    "funneled": MPI.THREAD_FUNNELED,
    "serialized": MPI.THREAD_SERIALIZED,
    "multiple": MPI.THREAD_MULTIPLE,
}


class BarrierTimeout(ToolkitError, TimeoutError):
    """A rank did not reach a barrier in time."""


def get_comm(comm: MPI.Comm | None = None) -> MPI.Comm:
    """``comm``, or ``MPI.COMM_WORLD`` when ``None``."""
    return MPI.COMM_WORLD if comm is None else comm


def format_error(exc: BaseException, rank: int, where: str = "") -> str:
    """``"rank R: <ExcType>: <message>"`` (``where`` is appended in parentheses when given)."""
    msg = str(exc).strip().replace("\n", " | ")
    tail = f" ({where})" if where else ""
    return f"rank {rank}: {type(exc).__name__}: {msg}{tail}"


def abort(exc: BaseException, comm: MPI.Comm | None = None, where: str = "", code: int = 1,
          show_traceback: bool = False) -> None:
    """Print :func:`format_error` of ``exc`` to stderr and abort the whole job (``comm.Abort(code)``).

    Never returns. ``show_traceback`` (or the environment variable ``TTT_TRACEBACK=1``) also prints the
    traceback before the one-line message.
    """
    comm = get_comm(comm)
    try:
        if show_traceback or os.environ.get("TTT_TRACEBACK") == "1":
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.stdout.flush()
        line = format_error(exc, comm.Get_rank(), where)
        sys.stderr.write(line + "\n")  # one write: lines do not mix
        sys.stderr.flush()
        run_dir = os.environ.get("TTT_RUN_DIR")
        if run_dir:  # the launcher reads this even when the MPI launcher tears the job down before
            try:     # forwarding our stderr
                os.makedirs(os.path.join(run_dir, "errors"), exist_ok=True)
                with open(os.path.join(run_dir, "errors", f"rank-{comm.Get_rank()}.txt"), "w") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass
        time.sleep(0.5)  # let the MPI launcher forward the line before Abort tears the job down
    finally:
        comm.Abort(code)
    os._exit(code)  # pragma: no cover  (Abort does not return)


def run_guarded(fn: Callable[..., T], *args: Any, comm: MPI.Comm | None = None, show_traceback: bool = False,
                **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)``; abort the job if it raises.

    Any exception (including ``KeyboardInterrupt`` and ``SystemExit`` with a non-zero code) prints
    ``rank R: <ExcType>: <message>`` to stderr and calls ``comm.Abort(1)`` (``comm`` defaults to
    ``COMM_WORLD``), so the other ranks never wait forever. ``SystemExit(0)`` / ``SystemExit(None)`` pass
    through (a normal exit).

    Returns
    -------
    The return value of ``fn``.
    """
    try:
        return fn(*args, **kwargs)
    except SystemExit as exc:
        if exc.code in (None, 0):
            raise
        abort(exc, comm, show_traceback=show_traceback)
    except BaseException as exc:  # noqa: BLE001 - everything must abort, never hang
        abort(exc, comm, show_traceback=show_traceback)
    raise AssertionError("unreachable")  # pragma: no cover


def barrier(comm: MPI.Comm | None = None, timeout_s: float | None = None, poll_s: float = 1e-3) -> None:
    """Barrier on ``comm``; with ``timeout_s``, raise :class:`BarrierTimeout` when not every rank arrives
    within ``timeout_s`` seconds (non-blocking ``Ibarrier`` polled every ``poll_s`` seconds).

    After a timeout the communicator is in an undefined state (the barrier is still pending): abort.
    """
    comm = get_comm(comm)
    if timeout_s is None:
        comm.Barrier()
        return
    if not timeout_s > 0:
        raise ConfigError("barrier", "timeout_s", timeout_s, "must be > 0 seconds (or None: no timeout)")
    req = comm.Ibarrier()
    deadline = time.monotonic() + float(timeout_s)
    while not req.Test():
        if time.monotonic() > deadline:
            raise BarrierTimeout(f"barrier not reached by every rank of {comm.Get_size()} within {timeout_s:g} s")
        time.sleep(poll_s)


def thread_level() -> int:
    """The thread-support level MPI provides (``MPI.Query_thread()``)."""
    return MPI.Query_thread()


def thread_level_name(level: int | None = None) -> str:
    """Name (``single``, ``funneled``, ``serialized``, ``multiple``) of ``level`` (default: the current)."""
    level = thread_level() if level is None else level
    for name, value in THREAD_LEVELS.items():
        if value == level:
            return name
    return str(level)


def require_thread_level(required: str = "serialized") -> int:
    """Check that MPI provides at least ``required``; return the provided level.

    Raises
    ------
    InfeasibleError
        MPI was initialised with less thread support (set ``mpi4py.rc.thread_level = "multiple"`` before the
        first ``from mpi4py import MPI``, or use an MPI built with thread support).
    """
    provided = thread_level()
    if provided < THREAD_LEVELS[required]:
        raise InfeasibleError(f"MPI provides thread level '{thread_level_name(provided)}'; the communication "
                              f"thread needs '{required}' or higher (mpi4py.rc.thread_level = 'multiple')")
    return provided
