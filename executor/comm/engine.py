"""Non-blocking collectives: a communication thread that runs submitted operations one at a time, in order.

Why a thread: MPICH (like most MPIs) makes progress on a non-blocking collective only while some thread is
inside the MPI library, so ``Iallreduce`` started during backward mostly runs when the main thread finally
waits. A dedicated thread that runs the *blocking* algorithm keeps the collective moving while the main
thread computes, and works the same for the explicit algorithms, which are sequences of ``Sendrecv``.
mpi4py releases the GIL inside MPI calls and numpy releases it inside large additions, so the main thread's
autograd keeps running.

Rules (the ones :mod:`perfmodel.overlap` models):

* one collective in flight per engine; operations run in submission order (every rank must submit the same
  sequence, as for any collective);
* :class:`MPIEngine` duplicates its communicator (``comm.Dup()``), so its messages never match the main
  thread's; with ``MPI_THREAD_MULTIPLE`` (what MPICH from the ``mpich`` wheel provides) the main thread may
  keep using the original communicator meanwhile; with ``MPI_THREAD_SERIALIZED`` it must not call MPI while
  an operation is in flight; below that the engine refuses to start;
* an exception in the communication thread is stored in the operation's :class:`Handle` (``wait()``
  re-raises it) and, by default (``abort_on_error=True``), aborts the whole job at once with
  ``rank R: <ExcType>: <message> (communication thread)``: the partners of a failed collective would
  otherwise wait forever.

:func:`iallreduce` is the functional entry point: a per-communicator default engine, or MPI's own
``Iallreduce`` with ``native=True`` for ``algorithm="mpi"`` (progress then depends on MPI: mostly at
``wait()``).
"""
from __future__ import annotations

import atexit
import queue
import threading
import time
from typing import Any, Callable

from mpi4py import MPI

from hardware.errors import ConfigError, ToolkitError

from ..mpi_utils import abort, get_comm, require_thread_level
from ._buffers import SOURCE, as_flat_array
from .api import get_algorithm
from .base import AllreduceAlgorithm
from .hierarchical import free_layouts
from .polite import PoliteComm

__all__ = ["Handle", "CommTimeout", "CommEngine", "MPIEngine", "iallreduce", "default_engine",
           "close_default_engines"]


class CommTimeout(ToolkitError, TimeoutError):
    """A communication operation did not finish within the given time."""


class Handle:
    """Request-like handle of one submitted operation.

    Attributes
    ----------
    index : int
        Position in the engine's submission order (0, 1, ...).
    nbytes : int
        Size of the buffer in bytes.
    submit_s, start_s, end_s : float or None
        ``time.perf_counter()`` when submitted, when the communication thread started it and when it ended
        (``None`` until known).
    error : BaseException or None
        The exception the operation raised, if any.
    """

    def __init__(self, index: int, nbytes: int):
        self.index = index
        self.nbytes = nbytes
        self.submit_s: float = time.perf_counter()
        self.start_s: float | None = None
        self.end_s: float | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        """Whether the operation has finished (successfully or not)."""
        return self._done.is_set()

    def test(self) -> bool:
        """Non-blocking completion check (re-raises the operation's exception once done)."""
        if self._done.is_set() and self.error is not None:
            raise self.error
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the operation finished; re-raise its exception; :class:`CommTimeout` after
        ``timeout_s`` seconds (``None``: wait forever)."""
        if not self._done.wait(timeout_s):
            raise CommTimeout(f"communication operation {self.index} ({self.nbytes} bytes) not finished "
                              f"within {timeout_s:g} s")
        if self.error is not None:
            raise self.error

    @property
    def elapsed_s(self) -> float | None:
        """``end_s - start_s`` (seconds) once finished."""
        if self.start_s is None or self.end_s is None:
            return None
        return self.end_s - self.start_s

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"Handle(index={self.index}, nbytes={self.nbytes}, {state})"


class CommEngine:
    """A communication thread running ``op(payload)`` for each submitted payload, one at a time, in order.

    Parameters
    ----------
    op : callable
        Blocking operation applied to each payload (e.g. an allreduce of a buffer).
    rank, world_size : int
        Of the group the operation communicates in (for the caller's bookkeeping, e.g. averaging).
    on_error : callable, optional
        Called (in the communication thread) with the exception after a failed operation; e.g. abort.
    name : str
        Thread name.
    """

    def __init__(self, op: Callable[[Any], None], *, rank: int = 0, world_size: int = 1,
                 on_error: Callable[[BaseException], None] | None = None, name: str = "comm-engine"):
        self._op = op
        self.rank, self.world_size = int(rank), int(world_size)
        self._on_error = on_error
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._count = 0
        self._last: Handle | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---- the communication thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handle, payload, op = item
            if self._failed is not None:
                handle.error = RuntimeError(f"not run: an earlier operation failed ({self._failed!r})")
                handle._done.set()
                continue
            handle.start_s = time.perf_counter()
            try:
                (op or self._op)(payload)
            except BaseException as exc:  # noqa: BLE001 - reported through the handle / on_error
                handle.error = exc
                self._failed = exc
            handle.end_s = time.perf_counter()
            handle._done.set()
            if handle.error is not None and self._on_error is not None:
                self._on_error(handle.error)

    # ---- caller side --------------------------------------------------------------------------------
    def _new_handle(self, nbytes: int) -> Handle:
        if self._closed:
            raise RuntimeError("communication engine is closed")
        h = Handle(self._count, int(nbytes))
        self._count += 1
        self._last = h
        return h

    def submit(self, payload: Any, nbytes: int = 0, op: Callable[[Any], None] | None = None) -> Handle:
        """Queue ``op(payload)`` (default: the engine's op) behind the operations already submitted."""
        h = self._new_handle(nbytes)
        self._queue.put((h, payload, op))
        return h

    def run(self, payload: Any, nbytes: int = 0, op: Callable[[Any], None] | None = None) -> Handle:
        """Run ``op(payload)`` in the calling thread, after every submitted operation finished; returns a
        finished handle (exceptions propagate)."""
        self.drain()
        h = self._new_handle(nbytes)
        h.start_s = time.perf_counter()
        try:
            (op or self._op)(payload)
        except BaseException as exc:
            h.error = exc
            raise
        finally:
            h.end_s = time.perf_counter()
            h._done.set()
        return h

    def drain(self, timeout_s: float | None = None) -> None:
        """Wait until every submitted operation finished (re-raises the last one's exception)."""
        if self._last is not None:
            self._last.wait(timeout_s)

    def close(self) -> None:
        """Finish the submitted operations and stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> "CommEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MPIEngine(CommEngine):
    """Communication thread running allreduces of one algorithm on a duplicate of ``comm``.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Default ``COMM_WORLD``. Duplicated (collective).
    algorithm : str or AllreduceAlgorithm
        Registry name (:data:`executor.comm.ALGORITHMS`) or instance.
    abort_on_error : bool
        Abort the whole job when an operation fails in the thread (default True: never hang).
    """

    def __init__(self, comm: MPI.Comm | None = None, algorithm: str | AllreduceAlgorithm = "ring", *,
                 abort_on_error: bool = True, polite: bool = True):
        self.algorithm = get_algorithm(algorithm)
        self.thread_level = require_thread_level("serialized")
        parent = get_comm(comm)
        self.comm = parent.Dup()
        #: what the thread's operations talk through: with ``polite`` (default) its blocking waits yield the
        #: processor between polls instead of busy-polling (executor.comm.polite)
        self._talk = PoliteComm(self.comm) if polite else self.comm
        on_error = (lambda exc: abort(exc, MPI.COMM_WORLD, where="communication thread")) if abort_on_error \
            else None
        super().__init__(self._allreduce, rank=self.comm.Get_rank(), world_size=self.comm.Get_size(),
                         on_error=on_error, name=f"mpi-comm-{self.algorithm.name}")

    def _allreduce(self, payload: tuple[Any, Any, AllreduceAlgorithm]) -> None:
        arr, writeback, alg = payload
        alg.allreduce(arr, self._talk)
        if writeback is not None:
            writeback()

    def submit(self, buf: Any, algorithm: str | AllreduceAlgorithm | None = None) -> Handle:  # type: ignore[override]
        """Queue an in-place allreduce (sum) of ``buf`` (checked now, in the caller's thread)."""
        alg = self.algorithm if algorithm is None else get_algorithm(algorithm)
        arr, writeback = as_flat_array(buf)
        return super().submit((arr, writeback, alg), arr.nbytes)

    def run(self, buf: Any, algorithm: str | AllreduceAlgorithm | None = None) -> Handle:  # type: ignore[override]
        """Blocking allreduce of ``buf`` in the calling thread (after the submitted ones), timed."""
        alg = self.algorithm if algorithm is None else get_algorithm(algorithm)
        arr, writeback = as_flat_array(buf)
        return super().run((arr, writeback, alg), arr.nbytes)

    def close(self) -> None:
        """Stop the thread and free the duplicated communicator (collective over ``comm``)."""
        if self._closed:
            return
        super().close()
        free_layouts(self._talk)
        free_layouts(self.comm)
        self.comm.Free()



class _RequestHandle(Handle):
    """Handle around an MPI request (``native=True``)."""

    def __init__(self, req: MPI.Request, nbytes: int, keep: Any, writeback: Callable[[], None] | None):
        super().__init__(-1, nbytes)
        self.start_s = self.submit_s
        self._req, self._keep, self._writeback = req, keep, writeback

    def _complete(self) -> None:
        self.end_s = time.perf_counter()
        if self._writeback is not None:
            self._writeback()
        self._keep = None
        self._done.set()

    def test(self) -> bool:
        if not self._done.is_set() and self._req.Test():
            self._complete()
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> None:
        if self._done.is_set():
            return
        if timeout_s is None:
            self._req.Wait()
        else:
            deadline = time.monotonic() + timeout_s
            while not self._req.Test():
                if time.monotonic() > deadline:
                    raise CommTimeout(f"MPI Iallreduce ({self.nbytes} bytes) not finished within {timeout_s:g} s")
                time.sleep(1e-4)
        self._complete()


_DEFAULT: dict[int, tuple[MPI.Comm, MPIEngine]] = {}
_DEFAULT_LOCK = threading.Lock()


def default_engine(comm: MPI.Comm | None = None) -> MPIEngine:
    """The per-communicator engine used by :func:`iallreduce` (created, collectively, on first use)."""
    comm = get_comm(comm)
    with _DEFAULT_LOCK:
        hit = _DEFAULT.get(id(comm))
        if hit is None or hit[0] is not comm:
            hit = _DEFAULT[id(comm)] = (comm, MPIEngine(comm, "ring"))
        return hit[1]


def close_default_engines() -> None:
    """Stop the default engines' threads (collective: frees their communicators)."""
    with _DEFAULT_LOCK:
        engines = [e for _, e in _DEFAULT.values()]
        _DEFAULT.clear()
    for e in engines:
        e.close()


def _stop_default_threads() -> None:  # at exit: stop threads only (MPI_Finalize frees the communicators)
    for _, e in list(_DEFAULT.values()):
        if not e._closed:
            e._closed = True
            e._queue.put(None)
            e._thread.join(timeout=5.0)


atexit.register(_stop_default_threads)


def iallreduce(buf: Any, comm: MPI.Comm | None = None, algorithm: str | AllreduceAlgorithm = "ring", *,
               native: bool = False) -> Handle:
    """Start an in-place allreduce (sum) of ``buf``; returns a :class:`Handle` (``wait()``, ``test()``).

    Operations run on the communicator's default engine (:func:`default_engine`) in call order, one at a
    time. ``native=True`` (only with ``algorithm="mpi"``) uses ``comm.Iallreduce`` instead. Do not touch
    ``buf`` until ``wait()`` returned.
    """
    alg = get_algorithm(algorithm)
    comm = get_comm(comm)
    if native:
        if alg.name != "mpi":
            raise ConfigError(SOURCE, "native", True, "only with algorithm 'mpi' (MPI's own Iallreduce)")
        arr, writeback = as_flat_array(buf)
        req = comm.Iallreduce(MPI.IN_PLACE, arr, op=MPI.SUM)
        return _RequestHandle(req, arr.nbytes, arr, writeback)
    return default_engine(comm).submit(buf, alg)
