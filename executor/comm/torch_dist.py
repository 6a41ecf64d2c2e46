"""The torch.distributed backend: gloo on CPU, NCCL on GPU, behind the same engine/bucket interface as MPI.

Ranks are still launched by ``mpiexec``; MPI only bootstraps torch.distributed: rank 0 opens a
``TCPStore`` on a free port (chosen by the operating system, so no race), broadcasts the port with MPI,
and every rank joins with the rank and world size of ``COMM_WORLD``. The address is ``MASTER_ADDR`` when
set, ``127.0.0.1`` when all ranks run on one host, else rank 0's host name.

:class:`TorchDistEngine` runs ``dist.all_reduce`` in a communication thread, one at a time and in order
(like :class:`~executor.comm.engine.MPIEngine`); give it to
:class:`~executor.comm.buckets.GradientBucketer` (``make_bucketer`` does). For NCCL, completion is host-side
completion of the collective (``work.is_completed()`` polled after ``work.wait()``), so ``end_s`` is when
the GPU finished it, comparable with the MPI timings.

GPU choice for NCCL: local rank (rank within the node, from ``COMM_TYPE_SHARED``) modulo the visible GPUs.
NCCL refuses two ranks on one GPU; with fewer GPUs than ranks per node use gloo (or MPI) instead.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from mpi4py import MPI

from hardware.errors import ConfigError

from ..mpi_utils import abort, get_comm
from ._buffers import SOURCE
from .buckets import GradientBucketer
from .engine import CommEngine, Handle

__all__ = ["BACKENDS", "TorchDistInfo", "default_backend", "init_from_mpi", "destroy", "allreduce",
           "TorchDistEngine", "make_bucketer"]

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class TorchDistInfo:
    """The process group this rank joined.

    Attributes
    ----------
    rank, world_size, local_rank : int
    backend : str
        ``gloo`` or ``nccl``.
    device : str
        Where tensors for this backend live (``cpu`` or ``cuda:<i>``).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str


_INFO: TorchDistInfo | None = None


def default_backend() -> str:
    """``nccl`` when CUDA and NCCL are available, else ``gloo``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def init_from_mpi(comm: MPI.Comm | None = None, backend: str | None = None,
                  timeout_s: float = 120.0) -> TorchDistInfo:
    """Initialise the default torch.distributed process group over the ranks of ``comm`` (collective).

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Default ``COMM_WORLD``; its ranks become the torch ranks.
    backend : str, optional
        ``gloo`` or ``nccl`` (default :func:`default_backend`).
    timeout_s : float
        Store and collective timeout in seconds.

    Returns
    -------
    TorchDistInfo
        Also when already initialised by an earlier call (then the arguments must agree).
    """
    global _INFO
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ConfigError(SOURCE, "backend", backend, f"must be one of {', '.join(BACKENDS)}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError(SOURCE, "backend", backend, "needs CUDA, which this torch build or machine lacks")
    if dist.is_initialized():
        if _INFO is None or _INFO.backend != backend:
            raise ConfigError(SOURCE, "backend", backend, "torch.distributed is already initialised differently")
        return _INFO
    comm = get_comm(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank = node.Get_rank()
    node.Free()
    hosts = comm.allgather(socket.gethostname())
    host = os.environ.get("MASTER_ADDR") or ("127.0.0.1" if len(set(hosts)) == 1 else hosts[0])
    timeout = timedelta(seconds=float(timeout_s))
    port = None
    if rank == 0:
        store = dist.TCPStore(host, 0, size, is_master=True, timeout=timeout, wait_for_workers=False)
        port = store.port
    port = comm.bcast(port, root=0)
    if rank != 0:
        store = dist.TCPStore(host, port, size, is_master=False, timeout=timeout)
    device = "cpu"
    if backend == "nccl":
        idx = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(idx)
        device = f"cuda:{idx}"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = torch.device(device)
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout, **kwargs)
    _INFO = TorchDistInfo(rank=rank, world_size=size, local_rank=local_rank, backend=backend, device=device)
    return _INFO


def destroy() -> None:
    """Destroy the default process group (if any)."""
    global _INFO
    if dist.is_initialized():
        dist.destroy_process_group()
    _INFO = None


def _check_tensor(t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ConfigError(SOURCE, "buf", type(t).__name__, "must be a torch.Tensor for torch.distributed")
    if not t.is_contiguous():
        raise ConfigError(SOURCE, "buf", f"tensor of shape {tuple(t.shape)}", "must be contiguous")
    return t


def _all_reduce_complete(t: torch.Tensor, group: Any) -> None:
    work = dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group, async_op=True)
    work.wait()
    if t.is_cuda:  # wait() only orders streams for NCCL: wait for the GPU to finish the collective
        while not work.is_completed():
            time.sleep(2e-5)


def allreduce(t: torch.Tensor, group: Any = None) -> None:
    """Blocking in-place sum of ``t`` over ``group`` (default: the world), complete when it returns."""
    _all_reduce_complete(_check_tensor(t), group)


class TorchDistEngine(CommEngine):
    """Communication thread running ``torch.distributed.all_reduce`` (sum), one at a time, in order.

    Parameters
    ----------
    group : ProcessGroup, optional
        Default: the world group (initialise it first, e.g. with :func:`init_from_mpi`).
    abort_on_error : bool
        Abort the whole MPI job when a collective fails in the thread (default True).
    """

    def __init__(self, group: Any = None, *, abort_on_error: bool = True):
        if not dist.is_initialized():
            raise ConfigError(SOURCE, "torch.distributed", "not initialised", "call init_from_mpi() first")
        self.group = group
        self.backend = str(dist.get_backend(group))
        on_error = (lambda exc: abort(exc, MPI.COMM_WORLD, where="torch.distributed thread")) if abort_on_error \
            else None
        device = torch.cuda.current_device() if self.backend == "nccl" else None

        def op(t: torch.Tensor) -> None:
            if device is not None:
                torch.cuda.set_device(device)
            _all_reduce_complete(t, group)

        super().__init__(op, rank=dist.get_rank(group), world_size=dist.get_world_size(group),
                         on_error=on_error, name=f"torch-dist-{self.backend}")

    def submit(self, buf: torch.Tensor) -> Handle:  # type: ignore[override]
        """Queue an in-place all_reduce (sum) of ``buf``."""
        t = _check_tensor(buf)
        return super().submit(t, t.numel() * t.element_size())

    def run(self, buf: torch.Tensor) -> Handle:  # type: ignore[override]
        """Blocking all_reduce of ``buf`` in the calling thread (after the submitted ones), timed."""
        t = _check_tensor(buf)
        return super().run(t, t.numel() * t.element_size())


def make_bucketer(params: Any, bucket_bytes: float, overlap: bool = True, group: Any = None,
                  **kwargs: Any) -> GradientBucketer:
    """A :class:`GradientBucketer` whose buckets are reduced with torch.distributed (it owns the engine)."""
    return GradientBucketer(params, bucket_bytes, overlap=overlap, engine=TorchDistEngine(group),
                            close_engine=True, **kwargs)
