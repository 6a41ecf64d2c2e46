"""Compute microbenchmarks of this machine with PyTorch: per-layer and whole-model forward/backward times,
GEMM peak, memory bandwidth, reduction throughput, optimizer steps and the gradient bucketer's overhead.

Run alone (one rank) or under MPI to measure ranks that share the machine::

    python -m executor.bench_compute [--models resnet20,tiny] [--batches 1,2,4,8,16,32] [--threads T] [--json]
    mpiexec -n 2 python -m executor.bench_compute ...     (every rank measures at once; rank 0 reports)

Method
------
- Threads: each rank runs ``--threads`` intra-op threads, by default what a training run with the same
  number of ranks on this host gets (:func:`executor.launch.cores_per_rank`).
- Timing: ``time.perf_counter`` around each repetition after ``warmup`` untimed ones. With several ranks
  every repetition starts after a barrier (the ranks compete for cores and memory as in a training run)
  and its time is the maximum over ranks (a synchronous iteration waits for the slowest rank).
- Statistics: this host may be shared with other work, so a repetition can be slowed by something else.
  Times of work (``*_s``) are the *typical undisturbed* time, the median of the fastest half of the
  repetitions (:func:`typical`); rates that are capacities (GEMM peak, memory bandwidth, reduction
  throughput) come from the fastest repetition, as STREAM reports its best rate (the ``*_typical`` keys
  give the typical ones). ``spread`` gives min, median and max of every measurement.
- Whole model (``models``): the executor's step without communication: ``zero_grad``,
  ``cross_entropy(model(x), y)`` (``forward_s``) and ``loss.backward()`` (``backward_s``) on synthetic
  inputs of the model's dataset shape.
- Per layer (``layers``): each leaf module in isolation on the input it receives in the model (captured by
  a forward hook), forward and backward (``autograd.backward`` with a ones gradient). In-place activations
  are run out of place. Isolated layers miss the autograd engine's bookkeeping between layers, so their
  sum is a little below the whole-model time.
- GEMM peak (``gemm``): square ``n x n`` fp32 (and fp64) ``torch.mm``, ``2 n^3`` FLOP per call; the fp32
  GEMM is sampled before, during (once per round) and after the whole-model measurements.
- Memory bandwidth (``memory``): STREAM-like on float32 arrays far larger than the caches: copy
  (``a.copy_(b)``, 2 bytes moved per byte) and triad (``torch.add(b, c, alpha=s, out=a)``, 3 per byte).
- Reduction throughput (``reduce``): ``numpy.add(a, b, out=a)`` on float32, the executor's allreduce
  reduction step; ``gamma_s_per_B`` is seconds per byte reduced (the ``gamma`` of the collective models).
- Optimizer (``optimizers``): ``opt.step()`` + ``opt.zero_grad(set_to_none=False)`` of the executor's SGD
  and LARS (:mod:`executor.optim`), each repetition after a fresh backward (untimed), per model.
- Loop (``loop``): the executor's per-step work outside forward, backward and the optimizer: fetching a
  synthetic batch (:class:`executor.data.SyntheticData`) and setting the learning rate.
- Speed probe (``probe_s`` of every whole-model row): the host speed probe of :mod:`executor.speed_probe`,
  one sample after every timed step and an untimed SGD optimizer phase (maximum over ranks), as the executor
  takes it after every iteration: the reference that a later run's probe is compared with.
- K-FAC (``kfac``, with ``--kfac MODEL:BATCH``): the executor's distributed K-FAC with every rank of the job,
  its factor computation, factor exchange and inversion per refresh (:func:`kfac_times`).
- Bucketer (``bucketer``): forward + backward + ``finish()`` with the executor's
  :class:`~executor.comm.buckets.GradientBucketer` on a communication engine whose operation does nothing
  (world size 2, so the averaging runs), minus the same step without it: the hooks, copies into and out of
  the buckets and the averaging, per iteration.

Output: one JSON object (:func:`run_compute_bench`), printed by rank 0 (``--json``) or as tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hardware.errors import ConfigError

__all__ = ["typical", "spread", "Sync", "gemm_flops", "memory_bandwidth", "reduce_throughput", "model_times",
           "layer_times", "optimizer_times", "bucketer_overhead", "loop_overhead", "run_compute_bench",
           "parse_int_list", "format_tables", "main", "DEFAULT_BATCHES"]

SOURCE = "bench compute"
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)


# ---------------------------------------------------------------------------------------------------------
# statistics and synchronisation
# ---------------------------------------------------------------------------------------------------------
def typical(xs: Sequence[float]) -> float:
    """Typical undisturbed value of repeated timings: the median of the fastest half (robust against
    repetitions slowed by other work on the host; equals the median when the noise is symmetric and small)."""
    a = np.sort(np.asarray(xs, dtype=float))
    if a.size == 0:
        raise ValueError("no samples")
    return float(np.median(a[: max(1, (a.size + 1) // 2)]))


def spread(xs: Sequence[float]) -> dict[str, float]:
    """``min``, ``median``, ``max`` and sample count of repeated timings (seconds)."""
    a = np.asarray(xs, dtype=float)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max()), "n": int(a.size)}


class Sync:
    """Barrier and max-over-ranks for timed repetitions; a no-op for one process (MPI is only imported when
    the process was started by an MPI launcher with more than one rank)."""

    def __init__(self, comm: Any = None):
        self.comm = comm
        if comm is None and int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) > 1:
            from mpi4py import MPI
            self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank() if self.comm is not None else 0
        self.size = self.comm.Get_size() if self.comm is not None else 1

    def barrier(self) -> None:
        if self.comm is not None:
            self.comm.Barrier()

    def max(self, values: Sequence[float]) -> list[float]:
        """Elementwise maximum over ranks (collective)."""
        if self.comm is None:
            return [float(v) for v in values]
        from mpi4py import MPI
        a = np.asarray(values, dtype=float)
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=MPI.MAX)
        return [float(v) for v in out]


def _timed(fn: Callable[[], Any], repeats: int, warmup: int, sync: Sync,
           setup: Callable[[], Any] | None = None) -> list[float]:
    """Seconds of ``fn()`` per repetition (max over ranks), after ``warmup`` untimed calls."""
    out = []
    for i in range(warmup + repeats):
        if setup is not None:
            setup()
        sync.barrier()
        t0 = time.perf_counter()
        fn()
        t = time.perf_counter() - t0
        if i >= warmup:
            out.append(t)
    return sync.max(out)


def _check_count(value: int, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(SOURCE, field, value, f"must be an integer >= {minimum}")
    return int(value)


def parse_int_list(text: str | Sequence[int], field: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (positive integers); ConfigError naming ``field`` otherwise."""
    if isinstance(text, str):
        parts = _names(text)
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(SOURCE, field, text, "must be a comma-separated list of positive integers") from None
    else:
        vals = list(text)
    if not vals or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in vals):
        raise ConfigError(SOURCE, field, text, "must be a comma-separated list of positive integers")
    return [int(v) for v in vals]


# ---------------------------------------------------------------------------------------------------------
# machine rates
# ---------------------------------------------------------------------------------------------------------
def gemm_flops(n: int = 1024, dtype: str = "float32", repeats: int = 7, warmup: int = 2,
               sync: Sync | None = None) -> dict[str, Any]:
    """FLOP/s of a square ``n x n`` matrix product (``2 n^3`` FLOP) at the current torch thread count."""
    import torch

    sync = sync or Sync()
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g, dtype=dt), torch.randn(n, n, generator=g, dtype=dt)
    c = torch.empty(n, n, dtype=dt)
    times = _timed(lambda: torch.mm(a, b, out=c), repeats, warmup, sync)
    return gemm_summary(n, dtype, times)


def gemm_summary(n: int, dtype: str, times: Sequence[float]) -> dict[str, Any]:
    """``flops``: the peak, from the fastest call (the best rate the host delivers when nothing else runs);
    ``flops_typical`` from the typical time; ``spread_flops`` min/median/max of the rate."""
    flops = 2.0 * n ** 3
    sp = spread(times)
    return {"n": n, "dtype": dtype, "flops": flops / sp["min"], "flops_typical": flops / typical(times),
            "time_s": sp["min"], "samples": len(times),
            "spread_flops": {"min": flops / sp["max"], "median": flops / sp["median"], "max": flops / sp["min"],
                             "n": sp["n"]}}


def memory_bandwidth(nbytes: int = 128 << 20, repeats: int = 7, warmup: int = 1,
                     sync: Sync | None = None) -> dict[str, Any]:
    """STREAM-like copy and triad bandwidth (bytes/s) on float32 arrays of ``nbytes`` each."""
    import torch

    sync = sync or Sync()
    n = int(nbytes) // 4
    a, b, c = torch.zeros(n), torch.ones(n), torch.full((n,), 2.0)
    t_copy = _timed(lambda: a.copy_(b), repeats, warmup, sync)
    t_triad = _timed(lambda: torch.add(b, c, alpha=3.0, out=a), repeats, warmup, sync)
    nb = 4.0 * n
    return {"array_bytes": int(nb), "copy_Bps": 2 * nb / min(t_copy), "triad_Bps": 3 * nb / min(t_triad),
            "copy_typical_Bps": 2 * nb / typical(t_copy), "triad_typical_Bps": 3 * nb / typical(t_triad),
            "spread_copy_s": spread(t_copy), "spread_triad_s": spread(t_triad)}


def reduce_throughput(nbytes: int = 16 << 20, repeats: int = 7, warmup: int = 1,
                      sync: Sync | None = None) -> dict[str, Any]:
    """Seconds per byte of ``numpy.add(a, b, out=a)`` on float32 (the allreduce reduction step)."""
    sync = sync or Sync()
    n = int(nbytes) // 4
    a, b = np.zeros(n, np.float32), np.ones(n, np.float32)
    t = _timed(lambda: np.add(a, b, out=a), repeats, warmup, sync)
    return {"array_bytes": 4 * n, "gamma_s_per_B": min(t) / (4.0 * n),
            "gamma_typical_s_per_B": typical(t) / (4.0 * n), "spread_s": spread(t)}


# ---------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------
def _model_and_data(name: str, batch: int, seed: int = 0):
    import torch

    from executor.models import build_model, get_model_info

    info = get_model_info(name)
    torch.manual_seed(seed)
    model = build_model(info.name)
    model.train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *info.input_shape), generator=g)
    y = torch.randint(0, info.num_classes, (batch,), generator=g)
    return info.name, model, x, y


def model_times(name: str, batches: Sequence[int], repeats: int = 7, warmup: int = 2,
                sync: Sync | None = None) -> list[dict[str, Any]]:
    """Whole-model forward (with the loss) and backward seconds per per-rank batch (one row per batch);
    see :func:`models_times`."""
    return models_times({name: batches}, repeats, warmup, sync)


def models_times(plan: Mapping[str, Sequence[int]], repeats: int = 7, warmup: int = 2, sync: Sync | None = None,
                 tick: Callable[[], Any] | None = None, probe: Any = None) -> list[dict[str, Any]]:
    """Whole-model forward (with the loss) and backward seconds of every (model, per-rank batch) of ``plan``.

    The measurements are interleaved: round ``i`` takes repetition ``i`` of every (model, batch), so that a
    burst of other work on the host spoils one repetition of several entries rather than every repetition
    of one (and slow drifts of the host's speed affect every entry alike). ``tick()`` runs at the start of
    every round (e.g. a GEMM sample, so that the peak is sampled across the same period). With ``probe`` (an
    :class:`executor.speed_probe.SpeedProbe`), a pair of probe samples follows every timed step after an
    untimed optimizer phase, as in the executor's loop (the probe's time depends on what ran just before it),
    and each row gets ``probe_s`` (the warm sample's typical value) and ``probe_cold_s`` (the first's).
    """
    import torch.nn.functional as F

    sync = sync or Sync()
    entries = []
    for name, batches in plan.items():
        bs = [int(b) for b in batches]
        key, model, x, y = _model_and_data(name, max(bs))
        for b in bs:
            entries.append((key, model, x[:b].contiguous(), y[:b].contiguous(), b))
    fwd: list[list[float]] = [[] for _ in entries]
    bwd: list[list[float]] = [[] for _ in entries]
    prb: list[list[float]] = [[] for _ in entries]
    prb_cold: list[list[float]] = [[] for _ in entries]
    # with the probe, the executor's optimizer phase (SGD with momentum: step() and zero_grad()) runs untimed
    # between a step and its probe sample, as in the executor's loop: the probe's time depends on what ran
    # just before it, and the optimizer's pass over every parameter and momentum buffer (100s of MB for
    # ResNet-50 or AlexNet) leaves the caches as a training iteration does; lr 0 leaves the weights as they are
    opts: dict[int, Any] = {}
    if probe is not None:
        from executor.optim import build_optimizer

        for e in entries:
            opts.setdefault(id(e[1]), build_optimizer("sgd", e[1], lr=0.0))

    def step(e) -> tuple[float, float]:
        _, model, xb, yb, _ = e
        model.zero_grad(set_to_none=False)
        sync.barrier()
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    for e in entries:
        for _ in range(warmup):
            step(e)
    for _ in range(repeats):
        if tick is not None:
            tick()
        for i, e in enumerate(entries):
            f, w = step(e)
            fwd[i].append(f)
            bwd[i].append(w)
            if probe is not None:
                opt = opts[id(e[1])]
                opt.step()
                opt.zero_grad(set_to_none=False)
                sync.barrier()   # every rank probes at once, as the executor does (executor.speed_probe)
                cold, warm = probe.sample_pair()   # the warm sample is the statistic (executor.speed_probe)
                prb[i].append(warm)
                prb_cold[i].append(cold)
    rows = []
    for i, (key, _, _, _, b) in enumerate(entries):
        both = sync.max(fwd[i] + bwd[i])
        fb, bb = both[:repeats], both[repeats:]
        st = [f + w for f, w in zip(fb, bb)]
        rows.append({"model": key, "batch": b, "forward_s": typical(fb), "backward_s": typical(bb),
                     "step_s": typical(st), "spread_step_s": spread(st)})
        if probe is not None:
            rows[-1]["probe_s"] = typical(sync.max(prb[i]))
            rows[-1]["probe_cold_s"] = typical(sync.max(prb_cold[i]))
    return rows


def layer_times(name: str, batch: int, repeats: int = 5, warmup: int = 1,
                sync: Sync | None = None) -> list[dict[str, Any]]:
    """Forward and backward seconds of every leaf module of ``name`` in isolation, in forward order."""
    import torch

    sync = sync or Sync()
    key, model, x, _ = _model_and_data(name, int(batch))
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    captured: dict[str, tuple] = {}
    order: list[str] = []

    def hook(mod, args, out, lname):
        if lname not in captured:
            captured[lname] = tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)
            order.append(lname)

    handles = [m.register_forward_hook(lambda mod, args, out, lname=n: hook(mod, args, out, lname)) for n, m in leaves]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    mods = dict(leaves)
    rows = []
    for lname in order:
        m, args = mods[lname], captured[lname]
        inplace = getattr(m, "inplace", False)
        if inplace:
            m.inplace = False
        state: dict[str, Any] = {}

        def make_inputs():
            state["ins"] = [a.detach().requires_grad_(a.is_floating_point()) if torch.is_tensor(a) else a
                            for a in args]

        def fwd():
            state["out"] = m(*state["ins"])

        def run_fwd_then_grad():
            make_inputs()
            fwd()
            state["g"] = torch.ones_like(state["out"])

        def bwd():
            if state["out"].requires_grad:
                torch.autograd.backward(state["out"], state["g"])

        t_f = _timed(fwd, repeats, warmup, sync, setup=make_inputs)
        t_b = _timed(bwd, repeats, warmup, sync, setup=run_fwd_then_grad)
        if inplace:
            m.inplace = True
        rows.append({"model": key, "batch": int(batch), "layer": lname, "type": type(m).__name__,
                     "forward_s": typical(t_f), "backward_s": typical(t_b),
                     "spread_forward_s": spread(t_f), "spread_backward_s": spread(t_b)})
    return rows


def optimizer_times(name: str, optimizers: Sequence[str] = ("sgd", "lars"), batch: int = 2, repeats: int = 9,
                    warmup: int = 2, sync: Sync | None = None) -> list[dict[str, Any]]:
    """Seconds of one ``opt.step()`` + ``opt.zero_grad(set_to_none=False)`` of the executor's optimizers on
    ``name``, each repetition after a fresh forward and backward (untimed), as in the executor's loop: the
    parameters, gradients and momenta come from memory, not from a cache the previous step warmed."""
    import torch.nn.functional as F

    from executor.optim import build_optimizer

    sync = sync or Sync()
    rows = []
    for opt_name in optimizers:
        key, model, x, y = _model_and_data(name, int(batch))
        opt = build_optimizer(opt_name, model, lr=0.01, momentum=0.9, weight_decay=1e-4)

        def fresh_gradients() -> None:
            F.cross_entropy(model(x), y).backward()

        def step() -> None:
            opt.step()
            opt.zero_grad(set_to_none=False)

        t = _timed(step, repeats, warmup, sync, setup=fresh_gradients)
        params = [p for p in model.parameters() if p.requires_grad]
        rows.append({"model": key, "optimizer": opt_name, "step_s": typical(t), "spread_s": spread(t),
                     "tensors": len(params), "param_bytes": int(sum(p.numel() * p.element_size() for p in params))})
    return rows


def kfac_times(name: str, batch: int, repeats: int = 5, warmup: int = 1, sync: Sync | None = None) -> dict[str, Any]:
    """The executor's distributed K-FAC (:class:`executor.optim.kfac.KFAC`) on ``name`` at per-rank ``batch``
    with every rank of the job: medians over ``repeats`` refresh steps of its phases (``factor_s`` in the
    forward/backward hooks, ``reduce_scatter_s`` = the factor exchange with its packing and running averages,
    ``inversion_s``), each the maximum over ranks, and of the step (``step()`` + ``zero_grad()``) of the
    non-refresh steps in between (refresh interval 2)."""
    import torch.nn.functional as F

    from executor.optim import build_optimizer

    sync = sync or Sync()
    key, model, x, y = _model_and_data(name, int(batch))
    comm = sync.comm if sync.size > 1 else None
    opt = build_optimizer("kfac", model, lr=0.01, momentum=0.9, weight_decay=1e-4,
                          options={"refresh_interval": 2}, comm=comm, source=SOURCE)
    phases = ("factor_s", "reduce_scatter_s", "inversion_s")
    refresh: dict[str, list[float]] = {k: [] for k in phases}
    plain: list[float] = []
    for i in range(2 * (warmup + repeats)):
        opt.zero_grad(set_to_none=False)
        sync.barrier()
        F.cross_entropy(model(x), y).backward()
        sync.barrier()
        t0 = time.perf_counter()
        opt.step()
        t = time.perf_counter() - t0
        if i < 2 * warmup:
            continue
        lt = dict(opt.last_timings)
        if lt.get("refresh"):
            for k in phases:
                refresh[k].append(float(lt.get(k, 0.0)))
        else:
            plain.append(t)
    out = {"model": key, "batch": int(batch), "ranks": sync.size, "refresh_interval": 2}
    for k in phases:
        vals = sync.max(refresh[k])
        out[k] = float(np.median(vals))
        out["spread_" + k] = spread(vals)
    out["step_s"] = float(np.median(sync.max(plain)))
    return out


def bucketer_overhead(name: str, batch: int = 2, bucket_bytes: float = 25e6, repeats: int = 9, warmup: int = 2,
                      sync: Sync | None = None) -> dict[str, Any]:
    """Extra seconds per iteration of the gradient bucketer (hooks, bucket copies, averaging), measured as
    (forward + backward + ``finish()`` with it) - (forward + backward without it), on an engine whose
    operation does nothing."""
    import torch.nn.functional as F

    from executor.comm.buckets import GradientBucketer, parameter_groups
    from executor.comm.engine import CommEngine

    sync = sync or Sync()
    key, model, x, y = _model_and_data(name, int(batch))

    def plain():
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()

    t_plain = _timed(plain, repeats, warmup, sync)
    engine = CommEngine(lambda payload: None, world_size=2, name="bench-null-engine")
    bucketer = GradientBucketer(model, bucket_bytes, engine=engine, close_engine=True, overlap=True)

    def bucketed():
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()
        bucketer.finish()

    try:
        t_buck = _timed(bucketed, repeats, warmup, sync)
    finally:
        bucketer.close()
    params = [p for p in model.parameters() if p.requires_grad]
    return {"model": key, "batch": int(batch), "bucket_bytes": float(bucket_bytes), "plain_s": typical(t_plain),
            "bucketed_s": typical(t_buck), "overhead_s": typical(t_buck) - typical(t_plain),
            "spread_plain_s": spread(t_plain), "spread_bucketed_s": spread(t_buck),
            "grad_layers": len(parameter_groups(model)), "tensors": len(params),
            "param_bytes": int(sum(p.numel() * p.element_size() for p in params))}


def loop_overhead(name: str, batch: int = 2, repeats: int = 9, warmup: int = 2,
                  sync: Sync | None = None) -> dict[str, Any]:
    """Seconds per step of the executor's loop bookkeeping: ``SyntheticData.next_batch()`` and ``set_lr``."""
    from executor.data import SyntheticData
    from executor.models import get_model_info
    from executor.optim import build_optimizer, set_lr

    sync = sync or Sync()
    key, model, _, _ = _model_and_data(name, int(batch))
    data = SyntheticData(get_model_info(key).dataset, int(batch), 0)
    opt = build_optimizer("sgd", model, lr=0.01)

    def step():
        data.next_batch()
        set_lr(opt, 0.01)

    t = _timed(step, repeats, warmup, sync)
    return {"model": key, "step_s": typical(t), "spread_s": spread(t)}


# ---------------------------------------------------------------------------------------------------------
# the whole benchmark
# ---------------------------------------------------------------------------------------------------------
def run_compute_bench(models: Sequence[str] = ("resnet20",), batches: Sequence[int] = DEFAULT_BATCHES,
                      threads: int | None = None, *, layer_batches: Sequence[int] | None = None,
                      repeats: int = 7, gemm_n: int = 1024, memory_bytes: int = 128 << 20,
                      optimizers: Sequence[str] = ("sgd", "lars"), bucketer: bool = True,
                      model_batches: dict[str, Sequence[int]] | None = None,
                      aux_models: Sequence[str] | None = None, kfac: tuple[str, int] | None = None,
                      bucketer_models: Sequence[str] | None = None,
                      sync: Sync | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every measurement and return the JSON document (see the module docstring).

    Parameters
    ----------
    models : sequence of str
        Model registry names.
    batches : sequence of int
        Per-rank batches of the whole-model times (``model_batches`` overrides them per model).
    threads : int, optional
        Intra-op threads of this rank (default: :func:`executor.launch.cores_per_rank` of the rank count).
    layer_batches : sequence of int, optional
        Batches of the per-layer table (default: the smallest and largest of ``batches``); empty: none.
    repeats : int
        Timed repetitions of every measurement.
    aux_models : sequence of str, optional
        Models of the optimizer and bucketer measurements (default: ``models``).
    bucketer_models : sequence of str, optional
        Models of the bucketer measurement (default: ``aux_models``).
    kfac : (str, int), optional
        Model and per-rank batch of the K-FAC measurement (:func:`kfac_times`); None: not measured.
    """
    import torch

    from executor.launch import cores_per_rank

    from executor.heap import keep_heap

    heap = keep_heap()   # the executor's ranks allocate the same way (executor.heap)
    sync = sync or Sync()
    say = progress or (lambda msg: None)
    models = list(models)
    batches = parse_int_list(batches, "batches")
    repeats = _check_count(repeats, "repeats")
    threads = cores_per_rank(sync.size) if threads is None else _check_count(threads, "threads")
    torch.set_num_threads(threads)
    from executor.models import get_model_info
    for m in models:
        get_model_info(m)  # unknown names fail before anything is measured
    if layer_batches is None:
        layer_batches = sorted({min(batches), max(batches)})
    doc: dict[str, Any] = {
        "benchmark": "compute", "ranks": sync.size, "threads": threads, "cpu_count": os.cpu_count(),
        "host": platform.node(), "torch": torch.__version__, "repeats": repeats,
        "malloc_kept_heap": heap,
        "statistic": "median of the fastest half of the repetitions (max over ranks per repetition)",
    }
    say(f"GEMM {gemm_n}x{gemm_n} fp32/fp64")
    gemm_times: list[float] = []
    ga, gb = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    gc = torch.empty(gemm_n, gemm_n)

    def gemm_sample() -> None:  # one timed GEMM (max over ranks) per round of the model measurements
        sync.barrier()
        t0 = time.perf_counter()
        torch.mm(ga, gb, out=gc)
        gemm_times.append(sync.max([time.perf_counter() - t0])[0])

    gemm_times += _timed(lambda: torch.mm(ga, gb, out=gc), repeats, 2, sync)
    doc["gemm_fp64"] = gemm_flops(max(256, gemm_n // 2), "float64", repeats, sync=sync)
    say("memory bandwidth")
    doc["memory"] = memory_bandwidth(memory_bytes, max(3, repeats // 2), sync=sync)
    doc["reduce"] = reduce_throughput(min(memory_bytes, 16 << 20), max(3, repeats // 2), sync=sync)
    doc["models"], doc["layers"], doc["optimizers"], doc["bucketer"] = [], [], [], []
    aux = list(models if aux_models is None else aux_models)
    for m in aux:
        get_model_info(m)
    if models:
        doc["loop"] = loop_overhead(models[0], repeats=repeats, sync=sync)
        plan = {m: list((model_batches or {}).get(m, batches)) for m in models}
        say(f"whole models, interleaved: {plan}")
        from executor.speed_probe import SpeedProbe

        probe = SpeedProbe()
        doc["models"] = models_times(plan, repeats, sync=sync, tick=gemm_sample, probe=probe)
        doc["speed_probe"] = {**probe.describe(),
                              "note": "one sample after every timed whole-model step (maximum over ranks); "
                                      "typical per (model, batch) in models[].probe_s"}
    gemm_times += _timed(lambda: torch.mm(ga, gb, out=gc), repeats, 0, sync)
    doc["gemm"] = gemm_summary(gemm_n, "float32", gemm_times)
    doc["gemm"]["note"] = "sampled before, during (one per round) and after the model measurements"
    for m in models:
        for lb in layer_batches:
            say(f"{m}: per layer at batch {lb}")
            doc["layers"] += layer_times(m, lb, max(3, repeats // 2), sync=sync)
        if optimizers and m in aux:
            say(f"{m}: optimizer steps {list(optimizers)}")
            doc["optimizers"] += optimizer_times(m, optimizers, repeats=repeats, sync=sync)
        if bucketer and m in (aux if bucketer_models is None else bucketer_models):
            say(f"{m}: gradient bucketer")
            doc["bucketer"].append(bucketer_overhead(m, min((model_batches or {}).get(m, batches)), repeats=repeats, sync=sync))
    if kfac is not None:
        say(f"{kfac[0]}: K-FAC at per-rank batch {kfac[1]}")
        doc["kfac"] = kfac_times(kfac[0], kfac[1], repeats=max(3, repeats // 2), sync=sync)
    return doc


def format_tables(doc: dict[str, Any]) -> str:
    """Human-readable summary of a :func:`run_compute_bench` document."""
    lines = [f"compute benchmark: {doc['ranks']} rank(s) x {doc['threads']} thread(s) on {doc['host']} "
             f"(torch {doc['torch']}; {doc['statistic']})",
             f"GEMM fp32 n={doc['gemm']['n']}: {doc['gemm']['flops'] / 1e9:.1f} GFLOP/s "
             f"(min..max {doc['gemm']['spread_flops']['min'] / 1e9:.1f}..{doc['gemm']['spread_flops']['max'] / 1e9:.1f})"
             f"; fp64 {doc['gemm_fp64']['flops'] / 1e9:.1f} GFLOP/s",
             f"memory: copy {doc['memory']['copy_Bps'] / 1e9:.2f} GB/s, triad {doc['memory']['triad_Bps'] / 1e9:.2f} GB/s;"
             f" reduction {1e-9 / doc['reduce']['gamma_s_per_B']:.2f} GB/s reduced",
             "", f"{'model':<12} {'batch':>5} {'forward ms':>11} {'backward ms':>12} {'step ms':>9} {'min..max ms':>17}"]
    for r in doc["models"]:
        s = r["spread_step_s"]
        lines.append(f"{r['model']:<12} {r['batch']:>5} {r['forward_s'] * 1e3:11.3f} {r['backward_s'] * 1e3:12.3f} "
                     f"{r['step_s'] * 1e3:9.3f} {s['min'] * 1e3:8.2f}..{s['max'] * 1e3:<8.2f}")
    if doc["layers"]:
        lines += ["", f"{'model':<12} {'batch':>5} {'layer':<22} {'type':<18} {'fwd us':>9} {'bwd us':>9}"]
        for r in doc["layers"]:
            lines.append(f"{r['model']:<12} {r['batch']:>5} {r['layer'][:22]:<22} {r['type'][:18]:<18} "
                         f"{r['forward_s'] * 1e6:9.1f} {r['backward_s'] * 1e6:9.1f}")
    for r in doc["optimizers"]:
        lines.append(f"optimizer {r['optimizer']:<5} on {r['model']:<12} step {r['step_s'] * 1e3:8.3f} ms "
                     f"({r['tensors']} tensors, {r['param_bytes'] / 1e6:.2f} MB)")
    for r in doc["bucketer"]:
        lines.append(f"bucketer on {r['model']:<12} +{r['overhead_s'] * 1e3:7.3f} ms per iteration "
                     f"({r['grad_layers']} layers, {r['param_bytes'] / 1e6:.2f} MB)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="executor.bench_compute", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", "--model", default="resnet20", help="comma-separated model names (default resnet20)")
    ap.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="per-rank batches")
    ap.add_argument("--layer-batches", default=None, help="batches of the per-layer table (default: min,max; "
                    "'none' for none)")
    ap.add_argument("--threads", type=int, default=None, help="threads per rank (default: cores per rank)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repetitions of every measurement")
    ap.add_argument("--gemm-n", type=int, default=1024, help="GEMM matrix size")
    ap.add_argument("--memory-mb", type=int, default=128, help="array size of the bandwidth test, MiB")
    ap.add_argument("--optimizers", default="sgd,lars", help="optimizer steps to time ('none' for none)")
    ap.add_argument("--no-bucketer", action="store_true", help="skip the bucketer overhead")
    ap.add_argument("--aux-models", default=None, help="models of the optimizer and bucketer measurements "
                    "(default: --models)")
    ap.add_argument("--bucketer-models", default=None, help="models of the bucketer measurement (default: "
                    "--aux-models)")
    ap.add_argument("--kfac", default=None, metavar="MODEL:BATCH",
                    help="also time the executor's K-FAC phases on MODEL at per-rank BATCH (e.g. resnet20:16)")
    ap.add_argument("--model-batches", default=None,
                    help="per-model batches overriding --batches, e.g. 'resnet18=1,2;tiny=1,8'")
    ap.add_argument("--json", action="store_true", help="print JSON (default: tables)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file (atomically)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return ap


def _model_batches(text: str | None) -> dict[str, list[int]] | None:
    if not text:
        return None
    out = {}
    for part in (p for p in text.split(";") if p.strip()):
        if "=" not in part:
            raise ConfigError(SOURCE, "model_batches", text, "expected 'model=1,2,4;other=1,8'")
        name, bs = part.split("=", 1)
        out[name.strip()] = parse_int_list(bs, "model_batches")
    return out


def _kfac_arg(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    name, sep, batch = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError(SOURCE, "kfac", text, "expected MODEL:BATCH, e.g. resnet20:16")
    return name.strip(), parse_int_list(batch, "kfac")[0]


def _names(text: str) -> list[str]:
    """The non-empty names of a comma-separated list."""
    return [m.strip() for m in text.split(",") if m.strip()]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; rank 0 prints. Returns the exit status."""
    args = _parser().parse_args(argv)
    sync = Sync()
    lb = None
    if args.layer_batches is not None:
        lb = [] if args.layer_batches.strip().lower() == "none" else parse_int_list(args.layer_batches, "layer_batches")
    opts = [] if args.optimizers.strip().lower() == "none" else _names(args.optimizers)
    say = None if args.quiet or sync.rank != 0 else (lambda msg: print(f"bench compute: {msg}", file=sys.stderr,
                                                                        flush=True))
    doc = run_compute_bench(_names(args.models),
                            parse_int_list(args.batches, "batches"), args.threads, layer_batches=lb,
                            repeats=args.repeats, gemm_n=_check_count(args.gemm_n, "gemm_n", 16),
                            memory_bytes=_check_count(args.memory_mb, "memory_mb") << 20, optimizers=opts,
                            bucketer=not args.no_bucketer, model_batches=_model_batches(args.model_batches),
                            aux_models=None if args.aux_models is None else
                            _names(args.aux_models),
                            kfac=_kfac_arg(args.kfac), sync=sync, progress=say,
                            bucketer_models=None if args.bucketer_models is None else
                            _names(args.bucketer_models))
    if sync.rank == 0:
        text = json.dumps(doc, indent=1)
        if args.out:
            from executor.measurement import write_json_atomic
            write_json_atomic(args.out, doc)
        print(text if args.json else format_tables(doc), flush=True)
    return 0


if __name__ == "__main__":
    if int(os.environ.get("PMI_SIZE", "1")) > 1:
        from executor.mpi_utils import run_guarded
        sys.exit(run_guarded(main))
    try:
        sys.exit(main())
    except ConfigError as exc:
        print(f"bench compute: error: {exc}", file=sys.stderr)
        sys.exit(2)
