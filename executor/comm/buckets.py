"""Gradient bucketing with communication/backward overlap: the rule :mod:`perfmodel.overlap` models, run
for real.

Rule (the cost model's, :func:`perfmodel.overlap.assign_buckets` is imported and used as is):

* gradients, in *ready order*, fill a bucket until it holds at least ``bucket_bytes``; the last bucket
  takes what is left;
* a bucket's allreduce is launched when all its gradients are ready *and* every earlier bucket has been
  launched; the communication engine runs one allreduce at a time, in bucket order, so an allreduce starts
  when its bucket is full and the previous one finished;
* ``finish()`` waits for the last allreduce, divides by the world size (average) and copies the gradients
  back into ``param.grad``. With ``overlap=False`` every allreduce runs in ``finish()``, after backward.

Ready order (documented choice): for an ``nn.Module`` the executor assumes gradients become ready in the
*reverse of the modules' registration order* (PyTorch DDP's assumption: registration order = forward
order), and groups parameters by the module that owns them (``granularity="module"``: a layer's weight
and bias stay together, as in the workload table's per-layer rows that the cost model buckets). With
``granularity="parameter"`` each parameter is its own unit, in reverse ``model.parameters()`` order
(exactly DDP). A sequence of parameters (or of groups of parameters) is taken as the ready order as given.
Buckets are assigned once, at construction, and never change. When autograd produces gradients in a
slightly different order, a later bucket that fills first simply waits for the earlier ones: the
sequence of collectives is the same on every rank, which is what keeps them matched.

Mechanics: ``torch.Tensor.register_post_accumulate_grad_hook`` on every parameter; the hook copies the
accumulated gradient into the bucket's flat buffer (one contiguous tensor per bucket, on the parameters'
device) and launches full buckets on the communication engine (:class:`executor.comm.engine.MPIEngine`
for MPI, :class:`executor.comm.torch_dist.TorchDistEngine` for torch.distributed). Parameters whose
gradient never became ready (unused in this backward) contribute zeros in ``finish()``.

Timings (``time.perf_counter()`` seconds, per bucket): ``ready_s`` (last gradient copied in),
``launch_s`` (handed to the engine), ``start_s`` and ``end_s`` of its allreduce; per iteration also the
first and last gradient ready times and when ``finish()`` returned. One backward per ``finish()`` (no
gradient accumulation over several backward passes).

APPROXIMATION: the copies into and out of the bucket buffers cost memory bandwidth that DDP avoids with
gradient views; they are counted in the measured time, not in the cost model.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from hardware.errors import ConfigError
from perfmodel.overlap import assign_buckets

from ._buffers import SOURCE
from .base import AllreduceAlgorithm
from .engine import CommEngine, MPIEngine

__all__ = ["BucketTiming", "IterationTiming", "GradientBucketer", "parameter_groups", "GRANULARITIES"]

GRANULARITIES = ("module", "parameter")


@dataclass(frozen=True)
class BucketTiming:
    """One bucket of one iteration (times are ``time.perf_counter()`` seconds).

    Attributes
    ----------
    index : int
        Bucket index (0 = first to become ready).
    nbytes : int
        Bytes reduced.
    n_params : int
        Parameters in the bucket.
    ready_s : float
        All its gradients copied in.
    launch_s : float
        Handed to the communication engine (during backward with overlap, in ``finish()`` without).
    start_s, end_s : float
        Its allreduce started / finished.
    """

    index: int
    nbytes: int
    n_params: int
    ready_s: float
    launch_s: float
    start_s: float
    end_s: float

    @property
    def comm_s(self) -> float:
        """Allreduce duration in seconds."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class IterationTiming:
    """Timings of one backward + ``finish()`` (``time.perf_counter()`` seconds).

    ``first_ready_s`` / ``last_ready_s``: first and last parameter gradient ready (``last_ready_s`` is the
    end of backward as far as gradients go); ``finish_s``: when ``finish()`` was called; ``waited_s``: when
    every bucket's collective had completed (None: not recorded); ``done_s``: when averaged gradients were
    back in ``param.grad``. ``comm_exposed_s = done_s - last_ready_s`` includes the final division and
    copies, which ``copy_out_s`` (``done_s - waited_s``) measures alone.
    """

    first_ready_s: float
    last_ready_s: float
    finish_s: float
    done_s: float
    buckets: tuple[BucketTiming, ...] = field(default_factory=tuple)
    waited_s: float | None = None

    @property
    def comm_total_s(self) -> float:
        """Sum of the buckets' allreduce durations (seconds)."""
        return float(sum(b.comm_s for b in self.buckets))

    @property
    def comm_exposed_s(self) -> float:
        """Seconds from the last ready gradient until the averaged gradients were in place (>= 0)."""
        return max(self.done_s - self.last_ready_s, 0.0)

    @property
    def copy_out_s(self) -> float:
        """Seconds of ``finish()`` after the collectives: averaging and copying back into ``param.grad``
        (0 when ``waited_s`` was not recorded)."""
        return 0.0 if self.waited_s is None else max(self.done_s - self.waited_s, 0.0)


def parameter_groups(model: nn.Module, granularity: str = "module") -> list[list[nn.Parameter]]:
    """Trainable parameters of ``model`` in assumed ready order (see the module docstring).

    ``granularity="module"``: one group per module owning parameters directly, modules in reverse
    registration order. ``"parameter"``: one group per parameter, reverse ``model.parameters()`` order.
    Shared parameters are counted once (at their first registration).
    """
    if granularity not in GRANULARITIES:
        raise ConfigError(SOURCE, "granularity", granularity, f"must be one of {', '.join(GRANULARITIES)}")
    seen: set[int] = set()
    if granularity == "parameter":
        out = []
        for p in model.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append([p])
        return out[::-1]
    groups = []
    for mod in model.modules():
        ps = []
        for p in mod.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                ps.append(p)
        if ps:
            groups.append(ps)
    return groups[::-1]


def _as_groups(params: Any, granularity: str) -> list[list[torch.Tensor]]:
    if isinstance(params, nn.Module):
        return parameter_groups(params, granularity)
    if isinstance(params, torch.Tensor):
        raise ConfigError(SOURCE, "params", "Tensor", "must be a model or a sequence of parameters")
    groups = []
    for item in params:
        if isinstance(item, torch.Tensor):
            groups.append([item])
        else:
            groups.append(list(item))
    return groups


class GradientBucketer:
    """Allreduce a model's gradients in buckets, overlapped with backward.

    Parameters
    ----------
    params : nn.Module, sequence of parameters, or sequence of sequences of parameters
        What to reduce, in ready order (see the module docstring for a model).
    bucket_bytes : float
        Bucket capacity in bytes (> 0): a bucket is closed once it holds at least this much.
    comm : mpi4py.MPI.Intracomm, optional
        Communicator for the default MPI engine (default ``COMM_WORLD``).
    algorithm : str or AllreduceAlgorithm
        Allreduce algorithm of the default MPI engine (``executor.comm.ALGORITHMS``).
    overlap : bool
        Launch buckets during backward (True) or all in :meth:`finish` (False).
    engine : CommEngine, optional
        Use this engine instead of creating an :class:`MPIEngine` (e.g. a ``TorchDistEngine``); it must
        provide ``submit(tensor)``, ``run(tensor)`` and ``world_size``.
    close_engine : bool, optional
        Close the engine in :meth:`close` (default: only an engine the bucketer created).
    average : bool
        Divide the sums by the world size (default True).
    granularity : str
        ``"module"`` (default) or ``"parameter"``, for a model (see :func:`parameter_groups`).
    timeout_s : float, optional
        :meth:`finish` raises :class:`~executor.comm.engine.CommTimeout` when an allreduce takes longer.

    Notes
    -----
    Construction is collective (the MPI engine duplicates ``comm``); every rank must build the bucketer
    from the same model so that the buckets agree.
    """

    def __init__(self, params: Any, bucket_bytes: float, comm: MPI.Comm | None = None,
                 algorithm: str | AllreduceAlgorithm = "ring", overlap: bool = True, *,
                 engine: CommEngine | None = None, close_engine: bool | None = None, average: bool = True,
                 granularity: str = "module", timeout_s: float | None = None):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, Real) or not bucket_bytes > 0 \
                or not np.isfinite(bucket_bytes):
            raise ConfigError(SOURCE, "bucket_bytes", bucket_bytes, "must be a finite number of bytes > 0")
        groups = [g for g in _as_groups(params, granularity) if g]
        flat = [p for g in groups for p in g]
        if not flat:
            raise ConfigError(SOURCE, "params", "[]", "no trainable parameters")
        if len({id(p) for p in flat}) != len(flat):
            raise ConfigError(SOURCE, "params", "duplicates", "a parameter appears twice")
        dtypes = {p.dtype for p in flat}
        devices = {p.device for p in flat}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
            raise ConfigError(SOURCE, "params.dtype", sorted(str(d) for d in dtypes),
                              "all parameters must be float32 (or all float64)")
        if len(devices) != 1:
            raise ConfigError(SOURCE, "params.device", sorted(str(d) for d in devices), "must be one device")
        if not all(p.requires_grad for p in flat):
            raise ConfigError(SOURCE, "params", "requires_grad=False", "every parameter must require grad")
        self.bucket_bytes = float(bucket_bytes)
        self.overlap = bool(overlap)
        self.average = bool(average)
        self.timeout_s = timeout_s
        dtype, device = next(iter(dtypes)), next(iter(devices))

        #: bytes of each group (ready order) and its bucket index (perfmodel.overlap.assign_buckets)
        self.group_nbytes = np.array([sum(p.numel() * p.element_size() for p in g) for g in groups], np.int64)
        self.group_bucket = assign_buckets(self.group_nbytes, self.bucket_bytes)
        n_buckets = int(self.group_bucket[-1]) + 1
        #: parameters of each bucket, in ready order
        self.bucket_params: list[list[torch.Tensor]] = [[] for _ in range(n_buckets)]
        for g, k in zip(groups, self.group_bucket):
            self.bucket_params[int(k)].extend(g)
        self._where: dict[int, tuple[int, int, int]] = {}
        self._flat: list[torch.Tensor] = []
        for k, ps in enumerate(self.bucket_params):
            off = 0
            for p in ps:
                self._where[id(p)] = (k, off, p.numel())
                off += p.numel()
            self._flat.append(torch.zeros(off, dtype=dtype, device=device))
        #: bytes of each bucket
        self.bucket_nbytes = [int(f.numel() * f.element_size()) for f in self._flat]

        if engine is None:
            engine = MPIEngine(comm, algorithm)
            close_engine = True if close_engine is None else close_engine
        self.engine = engine
        self._close_engine = bool(close_engine)
        self.world_size = int(engine.world_size)

        self._lock = threading.Lock()
        #: when False the gradient hooks do nothing: the micro-batches of gradient accumulation but the last
        #: accumulate into ``param.grad`` untouched; the last one (enabled) fills the buckets with the sums
        self.enabled = True
        self._reset()
        self.history: list[IterationTiming] = []
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_grad_ready) for p in flat]
        self._params = flat

    # ---- per iteration state --------------------------------------------------------------------------
    def _reset(self) -> None:
        K = len(self._flat)
        self._pending = [len(ps) for ps in self.bucket_params]
        self._copied: set[int] = set()
        self._ready_s: list[float | None] = [None] * K
        self._handles: list[Any] = [None] * K
        self._next = 0
        self._first_ready: float | None = None
        self._last_ready: float | None = None

    @property
    def n_buckets(self) -> int:
        """Number of buckets."""
        return len(self._flat)

    @property
    def last_timing(self) -> IterationTiming | None:
        """Timings of the most recent :meth:`finish` (``None`` before the first)."""
        return self.history[-1] if self.history else None

    def _copy_in(self, p: torch.Tensor) -> int:
        k, off, n = self._where[id(p)]
        if id(p) in self._copied:
            raise RuntimeError("a parameter's gradient became ready twice before finish(): one backward per "
                               "finish() (gradient accumulation over several backward passes is not supported)")
        dst = self._flat[k][off:off + n]
        if p.grad is None:
            dst.zero_()
        else:
            dst.copy_(p.grad.detach().reshape(-1))
        self._copied.add(id(p))
        self._pending[k] -= 1
        return k

    def _on_grad_ready(self, p: torch.Tensor) -> None:
        if not self.enabled:
            return
        with self._lock:
            k = self._copy_in(p)
            now = time.perf_counter()
            if self._first_ready is None:
                self._first_ready = now
            self._last_ready = now
            if self._pending[k] == 0:
                self._ready_s[k] = now
                if self.overlap:
                    self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self._flat) and self._pending[self._next] == 0:
            self._handles[self._next] = self.engine.submit(self._flat[self._next])
            self._next += 1

    # ---- public ---------------------------------------------------------------------------------------
    def finish(self) -> IterationTiming:
        """Wait for every bucket's allreduce, average, copy back into ``param.grad``; return the timings.

        Gradients that never became ready in this backward count as zeros (every rank still reduces every
        bucket, so the collectives stay matched).
        """
        finish_s = time.perf_counter()
        with self._lock:
            for k, ps in enumerate(self.bucket_params):
                if self._pending[k] > 0:
                    for p in ps:
                        if id(p) not in self._copied:
                            self._copy_in(p)
                    self._ready_s[k] = time.perf_counter()
            if self.overlap:
                self._launch_ready()
        if not self.overlap:
            for k, f in enumerate(self._flat):
                self._handles[k] = self.engine.run(f)
        for h in self._handles:
            h.wait(self.timeout_s)
        waited_s = time.perf_counter()
        scale = 1.0 / self.world_size
        for k, ps in enumerate(self.bucket_params):
            f = self._flat[k]
            if self.average and self.world_size > 1:
                f.mul_(scale)
            for p in ps:
                _, off, n = self._where[id(p)]
                src = f[off:off + n].view_as(p)
                if p.grad is None:
                    p.grad = src.clone()
                else:
                    p.grad.copy_(src)
        done_s = time.perf_counter()
        buckets = tuple(
            BucketTiming(index=k, nbytes=self.bucket_nbytes[k], n_params=len(self.bucket_params[k]),
                         ready_s=float(self._ready_s[k]), launch_s=float(h.submit_s), start_s=float(h.start_s),
                         end_s=float(h.end_s))
            for k, h in enumerate(self._handles))
        first = self._first_ready if self._first_ready is not None else finish_s
        last = self._last_ready if self._last_ready is not None else finish_s
        timing = IterationTiming(first_ready_s=first, last_ready_s=last, finish_s=finish_s, done_s=done_s,
                                 buckets=buckets, waited_s=waited_s)
        self.history.append(timing)
        self._reset()
        return timing

    def close(self) -> None:
        """Remove the hooks; close the engine if the bucketer owns it (collective for an MPI engine)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._close_engine:
            self.engine.close()
            self._close_engine = False

    def __enter__(self) -> "GradientBucketer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GradientBucketer(buckets={self.n_buckets}, bucket_bytes={self.bucket_bytes:g}, "
                f"overlap={self.overlap}, world_size={self.world_size})")
