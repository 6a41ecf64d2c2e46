"""Sweeps: the analytic model over a grid of configurations (nodes x batch x optimizer x allreduce algorithm
x system, optionally x precision x bucket size x overlap), one result row per grid point.

How a sweep is evaluated
------------------------
Grid points that share everything but the batch — (system, model, nodes, ranks per node, algorithm,
optimizer, precision, bucket size, overlap) — form a *group*; :func:`perfmodel.predict.iteration_model` is
called once per group with the array of per-device batches, and the rest of time to train (epochs,
iterations, evaluation passes, start-up broadcast, scaling efficiency) is computed for the whole group with
numpy by :func:`time_to_train_arrays`, the same arithmetic, in the same order, as
:func:`perfmodel.predict.predict`. A sweep row therefore equals ``predict()`` of the same configuration (the
tests check 1e-9 relative). Scaling efficiency needs the one-node iteration time at the same per-device
batch: it is computed first, once per *family* (a group without its node count) over every per-device
batch the family needs.

Groups are spread over a process pool (``workers``; one worker runs in-process) or any
:class:`concurrent.futures.Executor` the caller passes, e.g. ``mpi4py.futures.MPIPoolExecutor`` for sweeps
that outgrow one machine (``perfmodel sweep --mpi``; this module never imports mpi4py).

Grid points that cannot be evaluated are rows too, with ``status`` and ``reason`` (never an exception):
``indivisible`` (global batch not divisible by the ranks), ``infeasible`` (more nodes than the system has,
more ranks than GPUs in a node, the model does not fit in device memory), ``invalid`` (a combination the
model rejects, e.g. an algorithm that cannot run on that many ranks). Input errors that concern the whole
sweep (unknown system, model, optimizer or algorithm name; a target accuracy above the ceiling; a model
without a convergence model and no ``epochs``) raise :class:`~hardware.errors.ConfigError` up front.

Speed and caches (what "cold" and "warm" mean)
----------------------------------------------
- Collective profiles are priced on the topology graph once per (system, nodes, ranks per node,
  algorithm, operation) and cached by :mod:`perfmodel.network` (in memory per process, and on disk).
  The first evaluation of a large node count builds and routes a graph of thousands of links and can take
  seconds to tens of seconds (KNL fat tree, halving-doubling: about 2 s at 512 nodes, 7 s at 2048, 30 s at
  4096; ``auto`` prices every candidate algorithm); every later one is a look-up.
- The optimizer cost model (:mod:`perfmodel.optimizers`) is a Python call per per-device batch, and K-FAC's
  takes milliseconds (ownership partition, per-layer factor costs). While a sweep runs, the optimizer cost
  that ``iteration_model`` calls is memoised on all of its inputs (see :func:`optimizer_cost_memo`); a
  miss calls the real model, so the numbers are unchanged.
- Warm, a sweep evaluates well over 10,000 configurations per second on two cores
  (``benchmarks/bench_predict_throughput.py`` prints cold and warm throughput with 1 and 2 workers).

Assumptions (as in :mod:`perfmodel.predict`)
--------------------------------------------
- ``optimizer_options`` of the base configuration apply to the base configuration's optimizer only; the
  other optimizers of the grid use their defaults (options of one optimizer are not valid for another).
- ``node_hours = nodes * time_to_train_s / 3600`` (whole nodes are charged, as allocations are).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import math
import os
import re
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from perfmodel.atomic import atomic_write as _atomic_write

import perfmodel.predict as _predict_mod
from hardware.catalog import load_system
from hardware.errors import ConfigError, InfeasibleError, ToolkitError
from hardware.specs import EfficiencyCurve, SystemSpec
from perfmodel import convergence
from perfmodel.collectives import get_algorithm, known_algorithms
from perfmodel.config import DATASETS, OPTIMIZER_NAMES, PRECISIONS, RunConfig
from perfmodel.network import best_profiles
from perfmodel.optimizers import get_optimizer
from perfmodel.optimizers import optimizer_cost as _real_optimizer_cost
from perfmodel.predict import iteration_model, time_to_train_arrays
from perfmodel.workload import load_workload

__all__ = [
    "CONFIG_COLUMNS", "RESULT_COLUMNS", "EXTRA_COLUMNS", "SWEEP_COLUMNS", "STATUSES",
    "SweepGrid", "SweepResult", "run_sweep", "time_to_train_arrays", "epochs_for_batches",
    "parse_int_list", "parse_float_list", "parse_name_list", "powers_of_two", "optimizer_cost_memo",
    "atomic_write", "WorkerPool",
]

#: configuration columns of a sweep row (``bucket_mb`` in MB = 1e6 bytes)
CONFIG_COLUMNS: tuple[str, ...] = (
    "system", "model", "dataset", "precision", "optimizer", "allreduce", "bucket_mb", "overlap", "nodes",
    "ranks_per_node", "ranks", "global_batch", "per_device_batch", "target_top1",
)
#: result columns (the ``predict --json`` keys; per-iteration seconds for the breakdown)
RESULT_COLUMNS: tuple[str, ...] = (
    "time_to_train_s", "epochs", "iterations", "iteration_s", "images_per_s", "scaling_efficiency",
    "compute_s", "comm_total_s", "comm_exposed_s", "optimizer_s", "io_s", "node_hours",
)
#: further detail columns (whole-run split, gradient accumulation, memory, the algorithms ``auto`` chose)
EXTRA_COLUMNS: tuple[str, ...] = (
    "training_s", "eval_s", "startup_s", "forward_s", "backward_s", "micro_batch", "accumulation_steps",
    "memory_per_rank_bytes", "allreduce_used",
)
#: every column, in CSV order
SWEEP_COLUMNS: tuple[str, ...] = CONFIG_COLUMNS + RESULT_COLUMNS + EXTRA_COLUMNS + ("status", "reason")
#: values of the ``status`` column
STATUSES: tuple[str, ...] = ("ok", "indivisible", "infeasible", "invalid")

_INT_COLUMNS = frozenset({"nodes", "ranks_per_node", "ranks", "global_batch", "per_device_batch", "iterations",
                          "micro_batch", "accumulation_steps"})
_NUMERIC_RESULTS = tuple(c for c in RESULT_COLUMNS + EXTRA_COLUMNS if c != "allreduce_used")


# ---------------------------------------------------------------------------------------------------------
# parsing of list-valued flags
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)(?:\s*([x*+])\s*(\d+))?$")


def parse_int_list(text: str | Iterable[int], source: str, field: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Parse ``"1,2,4"``, ranges ``"1-8"`` (every integer), ``"1-64x2"`` (geometric: 1, 2, 4, ..., 64) and
    ``"8-64+8"`` (arithmetic) into a sorted tuple of distinct integers ``>= minimum``.

    Raises ConfigError(source, field, text, reason) on anything else.
    """
    if not isinstance(text, str):
        items = list(text)
        if not items or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                            for v in items):
            raise ConfigError(source, field, items, f"must be integers >= {minimum}")
        return tuple(sorted({int(v) for v in items}))
    out: set[int] = set()
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ConfigError(source, field, text, "expected a comma-separated list such as 1,2,4 or a range 1-64x2")
    for part in parts:
        if part.isdigit():
            out.add(int(part))
            continue
        m = _RANGE.match(part)
        if not m:
            raise ConfigError(source, field, text, f"cannot read '{part}': expected an integer, A-B, A-BxF "
                                                   "(geometric) or A-B+S (arithmetic)")
        lo, hi, op, step = int(m[1]), int(m[2]), m[3], int(m[4]) if m[4] else 1
        if hi < lo:
            raise ConfigError(source, field, text, f"range '{part}' ends below its start")
        if op in ("x", "*"):
            if step < 2 or lo < 1:
                raise ConfigError(source, field, text, f"geometric range '{part}' needs a start >= 1 and a "
                                                       "factor >= 2")
            v = lo
            while v <= hi:
                out.add(v)
                v *= step
        else:
            if step < 1:
                raise ConfigError(source, field, text, f"range '{part}' needs a step >= 1")
            out.update(range(lo, hi + 1, step))
    if min(out) < minimum:
        raise ConfigError(source, field, text, f"values must be >= {minimum}")
    return tuple(sorted(out))


def parse_float_list(text: str, source: str, field: str) -> tuple[float, ...]:
    """Parse ``"25,50.5"`` into a tuple of distinct finite numbers > 0 (in the order given)."""
    out: list[float] = []
    for part in str(text).split(","):
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(source, field, text, f"cannot read '{part.strip()}' as a number") from None
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(source, field, text, "values must be finite numbers > 0")
        if v not in out:
            out.append(v)
    return tuple(out)


def parse_name_list(text: str | Iterable[str], source: str, field: str,
                    known: Sequence[str] | None = None) -> tuple[str, ...]:
    """Parse ``"sgd,lars"`` into a tuple of distinct names (order kept); check against ``known``."""
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p).strip() for p in text]
    if not items or any(not p for p in items):
        raise ConfigError(source, field, text, "expected a comma-separated list of names")
    out = list(dict.fromkeys(items))
    if known is not None:
        for name in out:
            if name not in known:
                raise ConfigError(source, field, name, f"unknown; known: {', '.join(known)}")
    return tuple(out)


def powers_of_two(maximum: int) -> tuple[int, ...]:
    """``(1, 2, 4, ..., 2**k)`` with ``2**k <= maximum``."""
    out, v = [], 1
    while v <= maximum:
        out.append(v)
        v *= 2
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# the grid
@dataclass(frozen=True)
class SweepGrid:
    """A grid of configurations around a base :class:`~perfmodel.config.RunConfig`.

    Every dimension left empty takes the base configuration's value. ``nodes = None`` means powers of two
    up to each system's ``max_nodes``. Give either ``batches`` (global batches, images) or
    ``per_device_batches`` (the global batch is ``per_device_batch * ranks``, so it scales with the ranks).

    Attributes
    ----------
    base : RunConfig
        Model, dataset, epochs or target, evaluation interval, ranks per node, optimizer options.
    systems : tuple of str
        Catalog ids or spec paths.
    nodes : tuple of int or None
    batches, per_device_batches : tuple of int
    optimizers, algorithms, precisions : tuple of str
    bucket_bytes : tuple of float
        Gradient bucket sizes in bytes.
    overlaps : tuple of bool
    """

    base: RunConfig = field(default_factory=RunConfig)
    systems: tuple[str, ...] = ()
    nodes: tuple[int, ...] | None = ()
    batches: tuple[int, ...] = ()
    per_device_batches: tuple[int, ...] = ()
    optimizers: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    bucket_bytes: tuple[float, ...] = ()
    overlaps: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        b = self.base
        fill = {"systems": (b.system,), "optimizers": (b.optimizer,), "algorithms": (b.allreduce,),
                "precisions": (b.precision,), "bucket_bytes": (b.bucket_bytes,), "overlaps": (b.overlap,)}
        for name, default in fill.items():
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(dict.fromkeys(value)) if value else default)
        if self.nodes is not None:
            object.__setattr__(self, "nodes", parse_int_list(self.nodes or (b.nodes,), "--nodes", "nodes"))
        if self.batches and self.per_device_batches:
            raise ConfigError("--batch", "batch", list(self.batches),
                              "give either global batches or --per-device-batch, not both")
        if self.per_device_batches:
            object.__setattr__(self, "per_device_batches",
                               parse_int_list(self.per_device_batches, "--per-device-batch", "per_device_batch"))
        else:
            object.__setattr__(self, "batches", parse_int_list(self.batches or (b.batch,), "--batch", "batch"))
        for o in self.optimizers:
            if o not in OPTIMIZER_NAMES:
                raise ConfigError("--optimizers", "optimizer", o, f"unknown optimizer; known: "
                                                                   f"{', '.join(OPTIMIZER_NAMES)}")
        for a in self.algorithms:
            try:
                get_algorithm(a)
            except ConfigError:
                raise ConfigError("--allreduce", "allreduce", a, "unknown allreduce algorithm; known: "
                                                                 f"{', '.join(known_algorithms())}") from None
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ConfigError("--precision", "precision", p, f"must be one of {', '.join(PRECISIONS)}")
        for bb in self.bucket_bytes:
            if not (isinstance(bb, (int, float)) and math.isfinite(bb) and bb > 0):
                raise ConfigError("--bucket-mb", "bucket_mb", bb, "must be > 0")
        if b.ranks_per_node is not None and b.ranks_per_node < 1:
            raise ConfigError(b.source, "system.ranks_per_node", b.ranks_per_node, "must be >= 1")

    @property
    def per_device_mode(self) -> bool:
        """True when the batch dimension is the per-device batch."""
        return bool(self.per_device_batches)

    def nodes_for(self, system: SystemSpec) -> tuple[int, ...]:
        """Node counts of the grid on ``system``."""
        return powers_of_two(system.max_nodes) if self.nodes is None else self.nodes


# ---------------------------------------------------------------------------------------------------------
# the arithmetic of predict(), vectorised over a group
def epochs_for_batches(base: RunConfig, optimizer: str, global_batch) -> tuple[np.ndarray, float | None]:
    """Epochs to train at each global batch and the target used (None when ``base.epochs`` is given), as
    :func:`perfmodel.predict.predict` computes them."""
    b = np.asarray(global_batch, dtype=float)
    if base.epochs is not None:
        return np.full(b.shape, float(base.epochs)), base.target_top1
    try:
        target = base.target_top1 if base.target_top1 is not None else convergence.reference_top1(base.model)
        epochs = np.asarray(convergence.epochs_to_target(optimizer, b, target, model=base.model), dtype=float)
    except ConfigError as exc:
        if exc.field == "model":
            raise ConfigError(base.source, "training.epochs", None,
                              f"no convergence model for '{base.model}' (fitted: resnet50); pass --epochs") from None
        raise
    return epochs, float(target)


# ---------------------------------------------------------------------------------------------------------
# memoised optimizer cost (installed into perfmodel.predict while a sweep evaluates)
#
# Key: every argument of optimizer_cost except the injected ``comm``. Value: a list of (trace, result) where
# ``trace`` is the sequence of ``comm(kind, nbytes, p)`` calls the model made and what they returned. A hit
# replays the trace against the current ``comm`` (each call itself memoised per comm closure): the optimizer
# models are deterministic functions of their arguments and of what ``comm`` returns, so equal answers mean
# an identical computation. SGD and LARS make no calls (one entry serves every algorithm); K-FAC asks for a
# reduce-scatter and an all-gather, which do not depend on the allreduce algorithm (one entry serves all).
_MEMO: dict[tuple, list] = {}
_COMM_MEMO: dict[tuple, float] = {}
_PINNED: dict[int, Any] = {}   # objects keyed by id() in the memos: kept alive so their ids are never reused
_MEMO_LIMIT = 500_000
_memo_depth = 0
_PRIMITIVES = (int, float, str, bool, bytes, type(None))


def _value_key(v: Any):
    """Hashable stand-in for ``v``: itself for primitives, identity for frozen objects, else None."""
    if isinstance(v, _PRIMITIVES):
        return v
    if isinstance(v, tuple):
        parts = tuple(_value_key(x) for x in v)
        return None if any(p is None and x is not None for p, x in zip(parts, v)) else ("t", parts)
    params = getattr(type(v), "__dataclass_params__", None)
    if params is not None and params.frozen:
        _PINNED[id(v)] = v
        return ("id", id(v))
    return None


def _freeze(v: Any):
    if isinstance(v, Mapping):
        return tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v if isinstance(v, _PRIMITIVES) else repr(v)


_last_comm: tuple[Any, Any] = (None, None)
_last_opts: tuple[Any, Any] = (None, None)   # (options object, frozen); the object is kept alive


def _comm_key(comm: Any):
    """Key of a ``comm(kind, nbytes, p)`` closure: its code and the values it closes over (None when a
    closed-over value is not immutable: that closure's answers are then not memoised)."""
    global _last_comm
    if _last_comm[0] is comm:
        return _last_comm[1]
    key = None
    code = getattr(comm, "__code__", None)
    if code is not None and not getattr(comm, "__defaults__", None) and not getattr(comm, "__kwdefaults__", None):
        keys = []
        for cell in comm.__closure__ or ():
            try:
                v = cell.cell_contents
            except ValueError:
                keys = None
                break
            k = _value_key(v)
            if k is None and v is not None:
                keys = None
                break
            keys.append(k)
        if keys is not None:
            key = (code, tuple(keys))
    _last_comm = (comm, key)
    return key


def _comm_value(comm, ck, args: tuple) -> float:
    if ck is None:
        return comm(*args)
    k = (ck, args)
    v = _COMM_MEMO.get(k)
    if v is None:
        v = _COMM_MEMO[k] = comm(*args)
    return v


_RECORDS: dict[int, tuple] = {}


def _layer_records(layers: Any):
    """The layer records ``parse_layers`` would build from a workload table (``to_dict()`` of each layer),
    converted once per table: the same input, without converting 175 layers on every call."""
    recs = _RECORDS.get(id(layers))
    if recs is None:
        rows = getattr(layers, "layers", None)
        if rows is None or not all(callable(getattr(r, "to_dict", None)) for r in rows):
            return layers
        recs = _RECORDS[id(layers)] = tuple(r.to_dict() for r in rows)
        _PINNED[id(layers)] = layers
    return recs


def _memo_optimizer_cost(name, layers, *, per_device_batch, ranks, peak_flops, efficiency, mem_bw_Bps, comm,
                         options=None, source="--optimizer"):
    """Drop-in for :func:`perfmodel.optimizers.optimizer_cost` that memoises (see the comment above)."""
    lk = _value_key(layers)
    if lk is None:
        return _real_optimizer_cost(name, layers, per_device_batch=per_device_batch, ranks=ranks,
                                    peak_flops=peak_flops, efficiency=efficiency, mem_bw_Bps=mem_bw_Bps,
                                    comm=comm, options=options, source=source)
    ck = _comm_key(comm)
    global _last_opts
    if _last_opts[0] is options:
        frozen = _last_opts[1]
    else:
        frozen = _freeze(options or {})
        _last_opts = (options, frozen)
    key = (name, lk, per_device_batch, ranks, peak_flops, efficiency, mem_bw_Bps, frozen, source)
    entries = _MEMO.get(key)
    if entries is not None:
        for trace, result in entries:
            if all(_comm_value(comm, ck, args) == value for args, value in trace):
                return result
    trace: list = []

    def recording(*args):
        value = _comm_value(comm, ck, args)
        trace.append((args, value))
        return value
    result = _real_optimizer_cost(name, _layer_records(layers), per_device_batch=per_device_batch, ranks=ranks,
                                  peak_flops=peak_flops, efficiency=efficiency, mem_bw_Bps=mem_bw_Bps,
                                  comm=recording, options=options, source=source)
    if len(_MEMO) >= _MEMO_LIMIT or len(_COMM_MEMO) >= _MEMO_LIMIT:
        _clear_memo()
    _MEMO.setdefault(key, []).append((tuple(trace), result))
    return result


@contextlib.contextmanager
def optimizer_cost_memo() -> Iterator[None]:
    """Within the block, :func:`perfmodel.predict.iteration_model` prices the optimizer through a memo.

    The memo's key is every argument of :func:`perfmodel.optimizers.optimizer_cost` but ``comm``; a hit
    also requires that every collective the model asked ``comm`` for returns what it returned when the
    entry was made. A miss calls the real model, so results are identical (assumption: the optimizer models
    are deterministic functions of their arguments and of ``comm``'s answers, as :mod:`perfmodel.optimizers`
    states; ``comm`` is a pure function of the immutable values it closes over). Re-entrant; not for use
    from several threads at once. The memo persists per process (bounded: emptied when it reaches 500,000
    entries) and is emptied by ``optimizer_cost_memo.clear()``.
    """
    global _memo_depth
    installed = False
    if _memo_depth == 0 and _predict_mod.optimizer_cost is _real_optimizer_cost:
        _predict_mod.optimizer_cost = _memo_optimizer_cost
        installed = True
    _memo_depth += 1
    try:
        yield
    finally:
        _memo_depth -= 1
        if installed:
            _predict_mod.optimizer_cost = _real_optimizer_cost


def _clear_memo() -> None:
    global _last_comm, _last_opts
    _MEMO.clear()
    _COMM_MEMO.clear()
    _last_comm = _last_opts = (None, None)


optimizer_cost_memo.clear = _clear_memo  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------------------
# tasks (picklable: they travel to worker processes or MPI ranks)
@dataclass(frozen=True, eq=False)
class _Family:
    """Everything ``iteration_model`` needs except the node count and the batches (compared by identity:
    one object per family of the grid)."""

    system: str
    model: str
    ranks_per_node: int
    precision: str
    algorithm: str
    optimizer: str
    options: tuple            # frozen optimizer options (items)
    bucket_bytes: float
    overlap: bool
    source: str


@dataclass
class _Task:
    """One group (``kind == "group"``) or one family's one-node reference (``kind == "ref"``)."""

    kind: str
    index: int
    family: _Family
    nodes: int
    per_device_batch: np.ndarray
    global_batch: np.ndarray | None = None
    epochs: np.ndarray | None = None
    ref_iteration_s: np.ndarray | None = None
    ref_reason: list | None = None
    train_images: int = 0
    val_images: int = 0
    eval_every_epochs: float = 1.0


class _ScalarFastCurve(EfficiencyCurve):
    """The device's efficiency curve with a fast path for one float batch (``iteration_model`` asks once per
    per-device batch). Same arithmetic as :meth:`EfficiencyCurve.at` (IEEE double either way), so the same
    numbers; arrays and invalid input go to the original method."""

    def at(self, batch):
        if type(batch) is float or type(batch) is np.float64 or type(batch) is int:
            b = float(batch)
            if 0.0 <= b < math.inf:
                denom = b + self.batch_half
                return self.eff_max * b / denom if denom > 0 else 0.0
        return EfficiencyCurve.at(self, batch)


def _fast_curve(system: SystemSpec, precision: str, ranks_per_node: int = 1) -> EfficiencyCurve:
    """The curve iteration_model would pick (it depends on how many ranks share a device), as a fast copy."""
    share = system.ranks_sharing_device(ranks_per_node)
    c = system.device.efficiency_for(precision, share)
    if type(c) is not EfficiencyCurve:    # a curve of another kind: use it as it is
        return c
    return _ScalarFastCurve(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)})


_ITER_FIELDS = ("iteration_s", "compute_s", "forward_s", "backward_s", "comm_total_s", "comm_exposed_s",
                "optimizer_s", "io_s", "micro_batch", "accumulation_steps", "memory_per_rank_bytes")


def _iteration_arrays(family: _Family, nodes: int, pdb: np.ndarray, cache: dict):
    """``iteration_model`` for a group; elements that fail get NaN, a status and a reason.

    Returns (arrays: dict, status: list[str], reason: list[str|None], algorithms: tuple[str, ...]).
    """
    system = cache.get(("sys", family.system))
    if system is None:
        system = cache[("sys", family.system)] = load_system(family.system)
    table = cache.get(("tab", family.model))
    if table is None:
        table = cache[("tab", family.model)] = load_workload(family.model)
    n = len(pdb)
    key = ("curve", family.system, family.precision, family.ranks_per_node)
    curve = cache.get(key)
    if curve is None:
        try:
            curve = _fast_curve(system, family.precision, family.ranks_per_node)
        except ToolkitError as exc:    # e.g. no efficiency curve at this precision: every point fails
            curve = exc
        cache[key] = curve
    if isinstance(curve, ToolkitError):
        return {f: np.full(n, np.nan) for f in _ITER_FIELDS}, [_status_of(curve)] * n, [str(curve)] * n, ()
    kw = dict(precision=family.precision, algorithm=family.algorithm, bucket_bytes=family.bucket_bytes,
              overlap=family.overlap, optimizer=family.optimizer, optimizer_options=dict(family.options),
              source=family.source, efficiency=curve)
    status, reason = ["ok"] * n, [None] * n
    try:
        it = iteration_model(table, system, nodes, family.ranks_per_node, pdb, **kw)
        return {f: np.asarray(getattr(it, f), dtype=float) for f in _ITER_FIELDS}, status, reason, it.algorithms
    except ToolkitError as exc:
        if n == 1:
            out = {f: np.full(1, np.nan) for f in _ITER_FIELDS}
            return out, [_status_of(exc)], [str(exc)], ()
    # some element failed: evaluate one by one to attribute the failure
    out = {f: np.full(n, np.nan) for f in _ITER_FIELDS}
    algs: tuple[str, ...] = ()
    for i in range(n):
        try:
            it = iteration_model(table, system, nodes, family.ranks_per_node, pdb[i:i + 1], **kw)
        except ToolkitError as exc:
            status[i], reason[i] = _status_of(exc), str(exc)
            continue
        for f in _ITER_FIELDS:
            out[f][i] = float(getattr(it, f)[0])
        algs = algs or it.algorithms
    return out, status, reason, algs


def _status_of(exc: BaseException) -> str:
    return "infeasible" if isinstance(exc, InfeasibleError) else "invalid"


def _run_task(task: _Task, cache: dict) -> dict:
    fam = task.family
    arrays, status, reason, algs = _iteration_arrays(fam, task.nodes, task.per_device_batch, cache)
    if task.kind == "ref":
        return {"kind": "ref", "index": task.index, "iteration_s": arrays["iteration_s"], "reason": reason}
    system = cache[("sys", fam.system)]
    table = cache[("tab", fam.model)]
    ranks = task.nodes * fam.ranks_per_node
    startup_s = 0.0
    if ranks > 1 and any(s == "ok" for s in status):
        startup_s = float(best_profiles(system, task.nodes, fam.ranks_per_node, "auto", [table.gradient_bytes],
                                        op="broadcast")[0][0])
    with np.errstate(invalid="ignore", divide="ignore"):
        totals = time_to_train_arrays(
            iteration_s=arrays["iteration_s"], forward_s=arrays["forward_s"], micro_batch=arrays["micro_batch"],
            accumulation_steps=arrays["accumulation_steps"], global_batch=task.global_batch,
            per_device_batch=task.per_device_batch, epochs=task.epochs, nodes=task.nodes,
            ranks_per_node=fam.ranks_per_node, train_images=task.train_images, val_images=task.val_images,
            eval_every_epochs=task.eval_every_epochs, startup_s=startup_s, ref_iteration_s=task.ref_iteration_s)
    if task.nodes > 1 and task.ref_reason is not None:
        for i, r in enumerate(task.ref_reason):
            if r is not None and status[i] == "ok":
                reason[i] = f"scaling efficiency undefined: the one-node reference failed: {r}"
    cols = {k: arrays[k] for k in ("iteration_s", "compute_s", "forward_s", "backward_s", "comm_total_s",
                                   "comm_exposed_s", "optimizer_s", "io_s", "micro_batch", "accumulation_steps",
                                   "memory_per_rank_bytes")}
    cols.update({k: totals[k] for k in ("time_to_train_s", "iterations", "images_per_s", "scaling_efficiency",
                                        "training_s", "eval_s")})
    cols["startup_s"] = np.full(len(status), startup_s)
    cols["epochs"] = np.asarray(task.epochs, dtype=float)
    cols["node_hours"] = task.nodes * cols["time_to_train_s"] / 3600.0
    bad = np.array([s != "ok" for s in status])
    if bad.any():
        for v in cols.values():
            v[bad] = np.nan
    return {"kind": "group", "index": task.index, "cols": cols, "status": status, "reason": reason,
            "allreduce_used": "+".join(sorted(set(algs)))}


_LOADED: dict = {}          # systems, tables and curves loaded for the current sweep (per process)
_LOADED_TOKEN: list = [None]


def _evaluate_chunk(tasks: Sequence[_Task], token: Any = None) -> list[dict]:
    """Evaluate a chunk of tasks (runs in a worker process, an MPI rank, or in-process). Systems and
    workloads are loaded once per sweep (``token``) and process."""
    if token is None or _LOADED_TOKEN[0] != token:
        _LOADED.clear()
        _LOADED_TOKEN[0] = token
    with optimizer_cost_memo():
        return [_run_task(t, _LOADED) for t in tasks]


# ---------------------------------------------------------------------------------------------------------
# expansion of the grid into rows and groups
@dataclass
class _Expanded:
    n: int
    config: dict[str, list]
    status: list[str]
    reason: list[str | None]
    groups: list[_Task]
    group_rows: list[np.ndarray]         # row indices of each group's elements
    refs: list[_Task]
    ref_of_group: list[tuple[int, np.ndarray] | None]   # (ref index, positions in the ref's batch array)


def _expand(grid: SweepGrid) -> _Expanded:
    base = grid.base
    table = load_workload(base.model)
    dataset = base.dataset or table.dataset
    if dataset not in DATASETS:
        raise ConfigError(base.source, "workload.dataset", dataset, f"unknown dataset; known: {', '.join(DATASETS)}")
    resolved = dataclasses.replace(base, dataset=dataset)
    train_images, val_images = resolved.train_images, resolved.val_images
    systems = [(ref, load_system(ref)) for ref in grid.systems]
    opts_of = {o: (tuple(sorted(dict(base.optimizer_options).items())) if o == base.optimizer else ())
               for o in grid.optimizers}
    if base.optimizer in grid.optimizers:   # bad options are an input error of the whole sweep
        get_optimizer(base.optimizer, base.source).resolve_options(dict(base.optimizer_options), base.source)

    # epochs per (optimizer, global batch), computed once (vectorised) and checked up front
    all_B: set[int] = set()
    for _, system in systems:
        rpn = base.ranks_per_node or system.devices_per_node
        for nodes in grid.nodes_for(system):
            if grid.per_device_mode:
                all_B.update(p * nodes * rpn for p in grid.per_device_batches)
            else:
                all_B.update(grid.batches)
    Bs = np.array(sorted(all_B), dtype=float)
    epochs_of: dict[str, dict[int, float]] = {}
    target_of: dict[str, float | None] = {}
    for o in grid.optimizers:
        e, target = epochs_for_batches(base, o, Bs)
        epochs_of[o] = dict(zip((int(b) for b in Bs), e.tolist()))
        target_of[o] = target

    config: dict[str, list] = {c: [] for c in CONFIG_COLUMNS}
    status: list[str] = []
    reason: list[str | None] = []
    groups: list[_Task] = []
    group_rows: list[np.ndarray] = []
    ref_index: dict[_Family, int] = {}
    ref_pdbs: list[dict[int, None]] = []
    group_ref_pdbs: list[tuple[_Family, np.ndarray] | None] = []
    row = 0
    for sys_ref, system in systems:
        rpn = base.ranks_per_node or system.devices_per_node
        gpu_over = system.device.kind == "gpu" and rpn > system.devices_per_node
        for precision in grid.precisions:
            for optimizer in grid.optimizers:
                for algorithm in grid.algorithms:
                    for bucket in grid.bucket_bytes:
                        for overlap in grid.overlaps:
                            fam = _Family(sys_ref, base.model, rpn, precision, algorithm, optimizer,
                                          opts_of[optimizer], float(bucket), bool(overlap), base.source)
                            for nodes in grid.nodes_for(system):
                                ranks = nodes * rpn
                                pre = None
                                if nodes > system.max_nodes:
                                    pre = ("infeasible", f"{base.source}: field 'system.nodes' = {nodes}: system "
                                                         f"'{system.id}' has only {system.max_nodes} nodes")
                                elif gpu_over:
                                    pre = ("infeasible", f"{base.source}: field 'system.ranks_per_node' = {rpn}: a "
                                                         f"node of '{system.id}' has {system.devices_per_node} "
                                                         f"GPUs (one rank per GPU)")
                                bvals = ([p * ranks for p in grid.per_device_batches] if grid.per_device_mode
                                         else list(grid.batches))
                                rows_ok, B_ok = [], []
                                for B in bvals:
                                    config["system"].append(system.id)
                                    config["model"].append(base.model)
                                    config["dataset"].append(dataset)
                                    config["precision"].append(precision)
                                    config["optimizer"].append(optimizer)
                                    config["allreduce"].append(algorithm)
                                    config["bucket_mb"].append(float(bucket) / 1e6)
                                    config["overlap"].append(bool(overlap))
                                    config["nodes"].append(nodes)
                                    config["ranks_per_node"].append(rpn)
                                    config["ranks"].append(ranks)
                                    config["global_batch"].append(B)
                                    config["target_top1"].append(target_of[optimizer])
                                    if pre is not None:
                                        config["per_device_batch"].append(B // ranks if B % ranks == 0 else None)
                                        status.append(pre[0])
                                        reason.append(pre[1])
                                    elif B % ranks:
                                        config["per_device_batch"].append(None)
                                        status.append("indivisible")
                                        reason.append(f"global batch {B} is not divisible by the {ranks} ranks "
                                                      f"({nodes} nodes x {rpn} ranks per node)")
                                    else:
                                        config["per_device_batch"].append(B // ranks)
                                        status.append("ok")
                                        reason.append(None)
                                        rows_ok.append(row)
                                        B_ok.append(B)
                                    row += 1
                                if not rows_ok:
                                    continue
                                Barr = np.array(B_ok, dtype=np.int64)
                                pdb = Barr // ranks
                                task = _Task("group", len(groups), fam, nodes, pdb, Barr,
                                             np.array([epochs_of[optimizer][int(b)] for b in B_ok]),
                                             train_images=train_images, val_images=val_images,
                                             eval_every_epochs=base.eval_every_epochs)
                                groups.append(task)
                                group_rows.append(np.array(rows_ok, dtype=np.int64))
                                if nodes > 1:
                                    if fam not in ref_index:
                                        ref_index[fam] = len(ref_pdbs)
                                        ref_pdbs.append({})
                                    ref_pdbs[ref_index[fam]].update(dict.fromkeys(pdb.tolist()))
                                    group_ref_pdbs.append((fam, pdb))
                                else:
                                    group_ref_pdbs.append(None)
    refs = []
    for fam, k in ref_index.items():
        refs.append(_Task("ref", k, fam, 1, np.array(sorted(ref_pdbs[k]), dtype=np.int64)))
    ref_of_group: list[tuple[int, np.ndarray] | None] = []
    for g in group_ref_pdbs:
        if g is None:
            ref_of_group.append(None)
            continue
        k = ref_index[g[0]]
        ref_of_group.append((k, np.searchsorted(refs[k].per_device_batch, g[1])))
    return _Expanded(row, config, status, reason, groups, group_rows, refs, ref_of_group)


# ---------------------------------------------------------------------------------------------------------
# results
@dataclass
class SweepResult:
    """Rows of a sweep, stored by column (``columns[name]`` is a list or a numpy array of length ``n``).

    Numeric result columns are NaN where a row has no value (``rows()`` gives None there).
    """

    columns: dict[str, Any]
    n: int
    elapsed_s: float = 0.0
    evaluated: int = 0                # rows whose iteration model ran (status ok)

    def column(self, name: str) -> list:
        """One column as a list of Python values (None for missing)."""
        col = self.columns[name]
        if isinstance(col, np.ndarray):
            vals = col.tolist()
            if name in _INT_COLUMNS:
                return [None if v != v else int(v) for v in vals]
            return [None if v != v else v for v in vals]
        return list(col)

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts with keys :data:`SWEEP_COLUMNS` (JSON-ready)."""
        cols = [self.column(c) for c in SWEEP_COLUMNS]
        return [dict(zip(SWEEP_COLUMNS, vals)) for vals in zip(*cols)]

    def ok_rows(self) -> list[dict[str, Any]]:
        """Rows with ``status == "ok"``."""
        return [r for r in self.rows() if r["status"] == "ok"]

    def status_counts(self) -> dict[str, int]:
        """Number of rows per status."""
        out: dict[str, int] = {}
        for s in self.columns["status"]:
            out[s] = out.get(s, 0) + 1
        return out

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (header :data:`SWEEP_COLUMNS`) atomically: a temporary file in the same
        directory, then ``os.replace``, so a crash never leaves a half-written file."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(SWEEP_COLUMNS)
        cols = [self.column(c) for c in SWEEP_COLUMNS]
        for vals in zip(*cols):
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in vals])
        return atomic_write(path, buf.getvalue())


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`perfmodel.atomic.atomic_write`); the folder must exist."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ConfigError("--out", "out", str(path), "directory does not exist")
    return _atomic_write(path, data, make_parents=False)


def _progress_bar(total: int, progress: bool | None):
    enabled = progress if progress is not None else sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm  # lazily: only when a bar is shown
    return tqdm(total=total, file=sys.stderr, unit="cfg", desc="sweep", leave=False, dynamic_ncols=True)


class WorkerPool:
    """``workers`` single-process executors with task affinity: tasks of the same (system, nodes) always go
    to the same process, so its topology profiles and memoised optimizer costs stay warm between sweeps
    (and no two processes price the same topology). Keep one across sweeps to reuse warm workers; shut it
    down (or use it as a context manager) when done.
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ConfigError("--workers", "workers", workers, "must be >= 1")
        self._pools = [ProcessPoolExecutor(max_workers=1) for _ in range(int(workers))]
        for pool in self._pools:   # start the processes now, before a progress bar starts its thread
            pool.submit(int).result()

    @property
    def workers(self) -> int:
        """Number of worker processes."""
        return len(self._pools)

    def submit(self, worker: int, fn: Callable, *args: Any):
        """Run ``fn(*args)`` in process ``worker`` (modulo the pool size); returns a Future."""
        return self._pools[worker % len(self._pools)].submit(fn, *args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Shut every process down."""
        for pool in self._pools:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(cancel_futures=exc[0] is not None)


def _weight(task: _Task) -> float:
    return len(task.per_device_batch) * (4.0 if task.family.optimizer == "kfac" else 1.0)


def _assign(tasks: list[_Task], workers: int) -> list[list[_Task]]:
    """Deterministic affinity: tasks keyed by (system, nodes) — or, with too few keys to keep every worker
    busy, by (system, nodes, algorithm, optimizer) — and keys assigned largest first to the least loaded
    worker (the same grid always lands the same way)."""
    def by(keyf) -> dict:
        out: dict = {}
        for t in tasks:
            out.setdefault(keyf(t), []).append(t)
        return out
    keyed = by(lambda t: (t.family.system, t.nodes))
    if len(keyed) < 2 * workers:
        keyed = by(lambda t: (t.family.system, t.nodes, t.family.algorithm, t.family.optimizer))
    if len(keyed) < workers:
        keyed = {(i,): [t] for i, t in enumerate(tasks)}
    items = sorted(keyed.items(), key=lambda kv: (-sum(_weight(t) for t in kv[1]), repr(kv[0])))
    load = [0.0] * workers
    out: list[list[_Task]] = [[] for _ in range(workers)]
    for _, ts in items:
        w = min(range(workers), key=lambda i: (load[i], i))
        out[w].extend(ts)
        load[w] += sum(_weight(t) for t in ts)
    return out


def _split(tasks: list[_Task], n: int) -> list[list[_Task]]:
    """``n`` contiguous chunks (fewer when there are fewer tasks)."""
    n = max(1, min(n, len(tasks)))
    bounds = np.linspace(0, len(tasks), n + 1).round().astype(int)
    return [tasks[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _execute(tasks: list[_Task], executor: Executor | WorkerPool | None, workers: int, chunks_per_worker: int,
             on_done: Callable[[list[dict]], None], token: Any) -> None:
    if not tasks:
        return
    if executor is None:
        for chunk in _split(tasks, 50):        # in-process: chunks only pace the progress bar
            on_done(_evaluate_chunk(chunk, token))
        return
    if isinstance(executor, WorkerPool):
        futures = [executor.submit(w, _evaluate_chunk, chunk, token)
                   for w, ts in enumerate(_assign(tasks, executor.workers)) if ts
                   for chunk in _split(ts, chunks_per_worker)]
    else:
        n = max(1, workers * chunks_per_worker)
        futures = [executor.submit(_evaluate_chunk, tasks[i::n], token) for i in range(min(n, len(tasks)))]
    try:
        for fut in as_completed(futures):
            on_done(fut.result())
    except BaseException:
        for f in futures:
            f.cancel()
        raise


_SWEEP_COUNTER = itertools.count()


def _default_workers() -> int:
    return os.cpu_count() or 1


def run_sweep(grid: SweepGrid, *, workers: int | None = None, executor: WorkerPool | Executor | None = None,
              progress: bool | None = None, chunks_per_worker: int = 4) -> SweepResult:
    """Evaluate every point of ``grid``; one row per point, in grid order (system, precision, optimizer,
    algorithm, bucket, overlap, nodes, batch).

    Parameters
    ----------
    grid : SweepGrid
    workers : int, optional
        Worker processes (default ``os.cpu_count()``); 1 evaluates in this process. With the default,
        sweeps of fewer than 16 groups run in-process (starting processes would cost more than it saves).
    executor : WorkerPool or concurrent.futures.Executor, optional
        Use this pool instead of creating one (it is not shut down): a :class:`WorkerPool` kept across
        sweeps keeps its workers' caches warm; any Executor works, e.g. ``mpi4py.futures.MPIPoolExecutor``
        (tasks are then spread round-robin; pass ``workers`` = its number of workers to size the chunks).
    progress : bool, optional
        Show a tqdm bar on stderr; default: only when stderr is a terminal.
    chunks_per_worker : int
        Tasks are sent in ``workers * chunks_per_worker`` chunks per stage.

    Returns
    -------
    SweepResult
    """
    t0 = time.perf_counter()
    token = (os.getpid(), next(_SWEEP_COUNTER), t0)
    exp = _expand(grid)
    n = exp.n
    own_pool = None
    explicit = workers is not None
    workers = max(1, int(workers)) if workers is not None else _default_workers()
    if isinstance(executor, WorkerPool):
        workers = executor.workers
    if executor is None and workers > 1 and (explicit or len(exp.groups) >= 16):
        own_pool = executor = WorkerPool(workers)
    elif executor is None:
        workers = 1

    cols: dict[str, Any] = {c: exp.config[c] for c in CONFIG_COLUMNS}
    for c in _NUMERIC_RESULTS:
        cols[c] = np.full(n, np.nan)
    cols["allreduce_used"] = [None] * n
    status, reason = exp.status, exp.reason
    bar = _progress_bar(n, progress)
    try:
        if bar is not None:
            bar.update(n - sum(len(r) for r in exp.group_rows))
        # stage 1: one-node references for scaling efficiency
        ref_out: list[dict | None] = [None] * len(exp.refs)

        def take_refs(outs: list[dict]) -> None:
            for o in outs:
                ref_out[o["index"]] = o
        _execute(exp.refs, executor, workers, chunks_per_worker, take_refs, token)
        for g, ref in zip(exp.groups, exp.ref_of_group):
            if ref is not None:
                o = ref_out[ref[0]]
                g.ref_iteration_s = o["iteration_s"][ref[1]]
                rr = [o["reason"][j] for j in ref[1].tolist()]
                g.ref_reason = rr if any(r is not None for r in rr) else None

        # stage 2: the groups
        evaluated = 0

        def take_groups(outs: list[dict]) -> None:
            nonlocal evaluated
            for o in outs:
                rows = exp.group_rows[o["index"]]
                for k, v in o["cols"].items():
                    cols[k][rows] = v
                used = o["allreduce_used"] or None
                rl = rows.tolist()
                for j, r in enumerate(rl):
                    status[r] = o["status"][j]
                    reason[r] = o["reason"][j]
                    if o["status"][j] == "ok":
                        cols["allreduce_used"][r] = used
                        evaluated += 1
                if bar is not None:
                    bar.update(len(rl))
        _execute(exp.groups, executor, workers, chunks_per_worker, take_groups, token)
    except BaseException:
        if own_pool is not None:   # interrupted or failed: do not wait for the chunks still running
            own_pool.shutdown(wait=False, cancel_futures=True)
            own_pool = None
        raise
    finally:
        if bar is not None:
            bar.close()
        if own_pool is not None:
            own_pool.shutdown(wait=True)
    cols["status"], cols["reason"] = status, reason
    return SweepResult(cols, n, elapsed_s=time.perf_counter() - t0, evaluated=evaluated)
