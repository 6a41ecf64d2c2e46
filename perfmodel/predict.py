"""The analytic time-to-train model: for a run configuration, how long until the target accuracy, and where
the time goes.

Per iteration (seconds, one rank; every rank is identical in this model)::

    iteration = forward + backward + exposed communication + optimizer + input pipeline
    exposed communication = bucketed gradient allreduce not hidden behind backward (perfmodel.overlap)

and for the whole run::

    time_to_train = iterations * iteration + evaluations + start-up
    iterations    = ceil(epochs * ceil(train_images / global_batch))
    epochs        = --epochs, or the convergence model's epochs to the target top-1 at this batch

Components and where they come from: compute per layer and pass (:mod:`perfmodel.compute`), collectives on
the system's topology (:mod:`perfmodel.network`), optimizer cost (:mod:`perfmodel.optimizers`), convergence
(:mod:`perfmodel.convergence`). Scaling efficiency is images/s on N nodes divided by N times images/s on one
node at the same per-device batch (weak scaling).

Assumptions (each an approximation, marked):

- Ranks are identical: no jitter, no stragglers (the discrete-event simulator adds them), except on a
  calibrated system that measured its compute jitter: there the step waits for the slowest rank, the
  expected maximum of ``ranks`` normal draws, beyond the slowest of the ranks that shared the device in
  the calibration, which its compute times already are (``sync_wait_s`` in the breakdown; 0 on one node,
  and on an emulated cluster whose hosts all share the calibrated machine).
- Several ranks on one device (CPU ranks on shared cores) each get ``devices / ranks`` of the device; a
  calibrated device's efficiency curve for that many sharing ranks is used when it has one
  (:meth:`hardware.specs.DeviceSpec.efficiency_for`: the sharing changes the cores, and so the threads, a
  rank gets).
- K-FAC on a system whose calibration measured the executor's K-FAC: the per-refresh terms (factor
  computation, factor exchange, inversion) are scaled by measured / modelled on the calibration's
  reference configuration (EMPIRICAL, :func:`kfac_scales`).
- A calibrated device may carry an EMPIRICAL factor on the compute time of each calibration workload, per
  benchmarked batch where several were measured (:meth:`hardware.specs.DeviceSpec.workload_factor`; 1 for
  every other workload and every catalog device).
- A calibrated system may carry an EMPIRICAL factor per number of ranks sharing the device on every compute
  time: forward + backward inside the executor's training loop over the benchmark's, measured on a real run
  of a reference workload (:meth:`hardware.specs.Calibration.loop_compute_for`; 1 where not measured).
- Every calibrated time is a benchmark's *typical* one (median of the fastest half of its repetitions); a
  calibrated system's step tail (EMPIRICAL, :meth:`hardware.specs.Calibration.step_tail_for`, mean over
  typical of the benchmark's repeated steps) turns the compute and optimizer times into the mean a run
  measures.
- A calibrated system (``perfmodel calibrate``) adds the executor's measured per-iteration overheads
  (EMPIRICAL, :class:`hardware.specs.ExecutorOverheads`) as ``overhead_s``: a fixed cost per step, and with
  more than one rank the bucketer's fixed cost, a cost per parameterised layer (gradient hooks) and the
  copies of the gradients into and out of the buckets and their averaging (6 bytes of memory traffic per
  gradient byte, at the rank's share of the memory bandwidth). Its per-kernel launch cost is the optimizer models' default
  ``launch_overhead_s``; its optimizer traffic scale the one measured with as many ranks stepping at once
  (:meth:`hardware.specs.Calibration.optimizer_traffic_for`), else the one-rank one.
- On a CPU (or KNL) each rank's communication thread polls (and on one node copies and reduces) on the cores
  that compute the backward: with overlap on, the overlapped part of the bucket collectives' time (total
  less exposed) times one core's share of the rank's cores (:func:`_collective_cpu_share`, at most 1) is
  added to the backward, and to the collectives' total (their wall spans stretch as much while they share
  the cores). With one core per rank or fewer (this machine's runs) overlap hides no communication; with
  many cores per rank nearly all of it.
- When the activations of the per-device batch do not fit in device memory, the batch is split into
  micro-batches with gradient accumulation; gradients are reduced once, overlapped with the last
  micro-batch's backward only.
- Input pipeline: images are decoded and prefetched in parallel with compute (``io_s = 0``) unless the
  config's ``optimizer_options`` do not matter here — there is no I/O model yet; see ``io_s`` in the
  breakdown, which is reported as 0 with this assumption.
- Evaluation: a forward pass over the validation set, split over all ranks, every ``eval_every_epochs``.
- Start-up: one broadcast of the parameters from rank 0.
- K-FAC: the executor's default (``grad_allgather`` on) averages the gradients with the bucketed allreduce
  and then all-gathers every owner's preconditioned gradients (all parameters, fp32) with a ring
  (:mod:`executor.optim.mpi_buffers`), which the optimizer model prices with the ring's profile; with it
  off, the reduce-scatter to layer owners + that all-gather move the same bytes as an allreduce and are
  priced as the bucketed allreduce. The optimizer model adds the factor communication, factor computation
  and inversion.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from hardware.catalog import load_system
from hardware.errors import ConfigError, InfeasibleError, SpecError
from hardware.specs import SystemSpec
from perfmodel import convergence
from perfmodel.compute import layer_times, shared_layer_overhead_s
from perfmodel.config import RunConfig
from perfmodel.network import best_profiles
from perfmodel.optimizers import optimizer_cost
from perfmodel.overlap import assign_buckets, overlap_schedule
from perfmodel.provenance import machine_description, software_versions
from perfmodel.sim.variability import Variability
from perfmodel.workload import WorkloadTable, load_workload

__all__ = ["Prediction", "IterationModel", "predict", "iteration_model", "resolve", "time_to_train_arrays"]

_ACT_SCALE = {"fp32": 1.0, "fp16": 0.5}
_GRAD_SCALE = {"fp32": 1.0, "fp16": 0.5}


@dataclass(frozen=True)
class Resolved:
    """A configuration resolved against the catalog: the objects the model needs."""

    cfg: RunConfig
    system: SystemSpec
    table: WorkloadTable
    ranks_per_node: int
    ranks: int
    per_device_batch: int


def resolve(cfg: RunConfig) -> Resolved:
    """Load the system and workload of ``cfg`` and check that the configuration can run."""
    try:
        system = load_system(cfg.system)
    except SpecError as exc:  # name the config field and its source, not the catalog's internals
        if (exc.source, exc.field) != ("catalog", "id"):
            raise
        raise ConfigError(cfg.source, "system.system", cfg.system, exc.reason) from None
    try:
        table = load_workload(cfg.model)
    except ConfigError as exc:
        if (exc.source, exc.field) != ("--model", "model"):
            raise
        raise ConfigError(cfg.source, "workload.model", cfg.model, exc.reason) from None
    if cfg.dataset is None:
        cfg = cfg.replace(dataset=table.dataset)
    if cfg.nodes > system.max_nodes:
        raise InfeasibleError(f"{cfg.source}: field 'system.nodes' = {cfg.nodes}: system '{system.id}' has "
                              f"only {system.max_nodes} nodes")
    rpn = cfg.ranks_per_node or system.devices_per_node
    if system.device.kind == "gpu" and rpn > system.devices_per_node:
        raise InfeasibleError(f"{cfg.source}: field 'system.ranks_per_node' = {rpn}: a node of '{system.id}' "
                              f"has {system.devices_per_node} GPUs (one rank per GPU)")
    ranks = cfg.nodes * rpn
    if cfg.batch % ranks:
        raise ConfigError(cfg.source, "training.batch", cfg.batch,
                          f"global batch is not divisible by the {ranks} ranks ({cfg.nodes} nodes x {rpn} "
                          f"ranks per node)")
    return Resolved(cfg, system, table, rpn, ranks, cfg.batch // ranks)


@dataclass(frozen=True)
class IterationModel:
    """Per-iteration costs of one configuration family, arrays over per-device batches (shape (C,))."""

    per_device_batch: np.ndarray
    micro_batch: np.ndarray
    accumulation_steps: np.ndarray
    forward_s: np.ndarray
    backward_s: np.ndarray
    comm_total_s: np.ndarray
    comm_exposed_s: np.ndarray
    optimizer_s: np.ndarray
    io_s: np.ndarray
    memory_per_rank_bytes: np.ndarray
    buckets: int
    algorithms: tuple[str, ...]
    optimizer_details: tuple[Mapping[str, float], ...] = field(default=())
    #: per-layer seconds of one micro-batch on this rank (C, L), forward order, device share applied
    fwd_layer_s: np.ndarray | None = None
    bwd_layer_s: np.ndarray | None = None
    #: bytes of each gradient bucket (K,) and the bucket of each layer in forward order (L,), -1 without
    #: gradient
    bucket_nbytes: np.ndarray | None = None
    layer_bucket: np.ndarray | None = None
    overhead_s: np.ndarray | None = None   # calibrated executor overheads (None: none)
    #: expected wait for the slowest rank's compute (calibrated jitter; None: no jitter model)
    sync_wait_s: np.ndarray | None = None

    @property
    def compute_s(self) -> np.ndarray:
        return self.forward_s + self.backward_s

    @property
    def iteration_s(self) -> np.ndarray:
        t = self.compute_s + self.comm_exposed_s + self.optimizer_s + self.io_s
        t = t if self.overhead_s is None else t + self.overhead_s
        return t if self.sync_wait_s is None else t + self.sync_wait_s


def _micro_batches(table: WorkloadTable, system: SystemSpec, precision: str, b: np.ndarray,
                   fixed_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest micro-batch whose activations fit beside ``fixed_bytes``; accumulation steps per batch."""
    avail = system.memory_per_device_bytes - fixed_bytes
    per_image = table.totals.act_bytes * _ACT_SCALE.get(precision, 1.0)
    fit = np.floor(avail / per_image)
    if np.any(fit < 1):
        raise InfeasibleError(
            f"{table.model} does not fit on {system.device.id}: parameters, gradients and optimizer state take "
            f"{fixed_bytes.max() / 2**30:.2f} GiB of {system.memory_per_device_bytes / 2**30:.2f} GiB")
    steps = np.ceil(b / np.minimum(fit, b))
    micro = np.ceil(b / steps)
    return micro, steps


def measured_together(share: float, ranks: int, nodes_per_machine: int = 1) -> int:
    """How many ranks a calibrated compute time is already the slowest of: ``bench compute`` runs the ``share``
    ranks that share a device at once, step by step, and keeps the slowest rank's time of every step; so
    on one device the wait for the slowest rank is part of the calibrated compute (1 to ``ranks``). On an
    emulated cluster every one of its ``nodes_per_machine`` hosts shares the calibrated machine
    (:attr:`hardware.specs.Calibration.nodes_per_machine`): its compute is the slowest of ``share`` times
    that many ranks."""
    return max(1, min(int(ranks), int(round(share * max(1, int(nodes_per_machine))))))


def _sync_wait(system: SystemSpec, ranks: int, share: float, compute_s: np.ndarray) -> np.ndarray | None:
    """Expected extra wait for the slowest of ``ranks`` ranks: with a calibrated compute jitter (coefficient
    of variation ``cv`` of one rank's compute time, normal), a synchronous step takes ``E[max of ranks
    draws]`` times one rank's nominal compute. The calibrated compute is already the slowest of the
    :func:`measured_together` ranks that shared the device during the calibration, so the wait added is
    ``(E[max_ranks] / E[max_m] - 1) * compute``: nothing for a run on the one calibrated node (counting it
    again over-predicted 4 ranks on this machine by up to 25 %), more for several such nodes. None without a
    calibration (catalog systems: ranks are identical, as in the rest of this model; the simulator samples
    stragglers)."""
    cal = system.calibration
    if cal is None or ranks < 2:
        return None
    cv = cal.jitter_for(share)
    if cv <= 0:
        return None
    m = measured_together(share, ranks, cal.nodes_per_machine)
    if m >= ranks:   # the calibrated node: the wait is in the compute already (and no quadrature to run)
        return np.zeros_like(compute_s)
    v = Variability("normal", cv)
    return (v.expected_max(ranks) / v.expected_max(m) - 1.0) * compute_s


def _optimizer_bw_Bps(system: SystemSpec, share: float) -> float:
    """Memory bandwidth (bytes/s) one rank's optimizer step gets: its share of the device's, over the
    calibrated optimizer traffic scale (1 without a calibration): the one measured with ``share`` ranks
    stepping at once where the calibration has it, else the one-rank scale."""
    traffic = system.overheads.optimizer_traffic_scale if system.overheads is not None else 1.0
    shared = system.calibration.optimizer_traffic_for(share) if system.calibration is not None else None
    if shared is not None:
        traffic = shared
    return system.device.memory_bw_Bps / share / traffic


def overlap_stretch_s(system: SystemSpec, share: float, overlap: bool, comm_total_s, comm_exposed_s):
    """Seconds that overlapped bucket collectives take from the backward on a CPU (0 on a GPU or without
    overlap): their overlapped time (total less exposed) times :func:`_collective_cpu_share`. The backward
    grows by it, and so do the collectives' wall spans (both share the cores while they overlap)."""
    if not overlap or system.device.kind == "gpu":
        return np.zeros_like(np.asarray(comm_total_s, dtype=float))
    return (np.asarray(comm_total_s) - np.asarray(comm_exposed_s)) * _collective_cpu_share(system, share)


def _collective_cpu_share(system: SystemSpec, share: float) -> float:
    """Share (0..1) of a rank's cores that its communication thread takes from the backward while a bucket
    collective runs: one core's worth out of the rank's ``cores / share`` (at most all of them). MPI's
    progress engine polls for the whole collective, shared memory or network, and on one node the copies and
    reductions are CPU work too.

    Measured on this machine (2 cores, 2 ranks of one core each, so the share is 1): AlexNet at 2 ranks ran
    715 ms per iteration with overlap and 718 ms without, the backward 29 % slower while it overlapped. A
    node of 28 cores with 2 ranks: 1/14 of the overlapped time. GPUs: not called (their collectives run on
    the copy engines and NCCL's own SMs, not modelled as contention)."""
    cores_per_rank = max(1e-9, system.device.cores / max(1.0, share))
    return min(1.0, 1.0 / cores_per_rank)


#: K-FAC options that change the modelled cost of the calibration's reference configuration
_KFAC_REFERENCE_OPTIONS = ("launch_overhead_s", "inverse", "factor_dtype_bytes", "inversion_efficiency",
                           "factor_peak_flops")


def kfac_scales(system: SystemSpec, ranks: int, precision: str = "fp32",
                options: Mapping[str, Any] | None = None, nodes: int = 1) -> dict[str, float]:
    """EMPIRICAL multipliers of the K-FAC model's per-refresh terms on a system whose calibration measured the
    executor's K-FAC (``[calibration.kfac]``): measured over modelled on the calibration's reference
    configuration (its model and per-rank batch on its nodes, one unless the table says otherwise, at the
    measured ranks per node closest to the run's, ``ranks / nodes``, from below, else the smallest), for
    the factor computation, the factor exchange (only when the reference had several ranks on as many nodes
    as the run) and the inversion. Empty when there is nothing to scale by. Cached per (system, ranks per
    node, precision, the options that change the reference's cost)."""
    cal = system.calibration
    if cal is None or not cal.kfac:
        return {}
    keys = sorted(cal.kfac)
    per_node = max(1, int(ranks) // max(1, int(nodes)))
    k = max([x for x in keys if x <= per_node], default=keys[0])
    opts = tuple(sorted((key, v) for key, v in (options or {}).items() if key in _KFAC_REFERENCE_OPTIONS))
    out = dict(_kfac_scales_at(system, k, precision, opts))
    if int(nodes) != cal.kfac[k].nodes:   # the reference's exchange crossed another number of nodes
        out.pop("exchange_scale", None)
    return out


@functools.lru_cache(maxsize=64)
def _kfac_scales_at(system: SystemSpec, k: int, precision: str,
                    options: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, float], ...]:
    """:func:`kfac_scales` for the calibration's reference at ``k`` ranks per node (on ``ref.nodes`` nodes)."""
    ref = system.calibration.kfac[k]
    share = system.ranks_sharing_device(k)
    dev = system.device
    curve = dev.efficiency_for(precision, share)

    def comm(kind: str, nbytes: float, p: int) -> float:
        if p <= 1:
            return 0.0
        return float(best_profiles(system, ref.nodes, k, "auto", [nbytes], op=kind)[0][0])

    oc = optimizer_cost("kfac", load_workload(ref.model), per_device_batch=int(ref.per_rank_batch),
                        ranks=k * ref.nodes,
                        peak_flops=dev.peak_flops_for(precision) / share,
                        efficiency=max(1e-6, min(1.0, float(curve.at(ref.per_rank_batch)))),
                        mem_bw_Bps=_optimizer_bw_Bps(system, share), comm=comm,
                        options={**dict(options), "grad_allgather": False}, source="calibration.kfac")
    d = oc.details
    out = {}
    factor = d["factor_compute_s_per_refresh"] + d["bn_fisher_s_per_refresh"]
    if factor > 0 and ref.factor_s > 0:
        out["factor_scale"] = ref.factor_s / factor
    if k * ref.nodes > 1 and d["reduce_scatter_s_per_refresh"] > 0 and ref.exchange_s > 0:   # no scale options
        out["exchange_scale"] = ref.exchange_s / d["reduce_scatter_s_per_refresh"]
    if d["inversion_s_per_refresh"] > 0 and ref.inversion_s > 0:
        out["inversion_scale"] = ref.inversion_s / d["inversion_s_per_refresh"]
    return tuple(out.items())


def iteration_model(table: WorkloadTable, system: SystemSpec, nodes: int, ranks_per_node: int, per_device_batch,
                    *, precision: str = "fp32", algorithm: str = "auto", bucket_bytes: float = 25e6,
                    overlap: bool = True, optimizer: str = "sgd", optimizer_options: Mapping[str, Any] | None = None,
                    source: str = "--optimizer", efficiency=None) -> IterationModel:
    """Per-iteration costs for each per-device batch in ``per_device_batch`` (vectorised over it)."""
    b = np.atleast_1d(np.asarray(per_device_batch, dtype=float))
    dev = system.device
    ranks = nodes * ranks_per_node
    share = system.ranks_sharing_device(ranks_per_node)
    curve = efficiency or dev.efficiency_for(precision, share)
    overheads = system.overheads   # calibrated systems only

    # --- communication: gradient buckets in ready order, priced on the topology ----------------------------
    grad_bytes = table.gradient_sizes_in_ready_order() * _GRAD_SCALE.get(precision, 1.0)
    bucket_of = assign_buckets(grad_bytes, bucket_bytes)
    n_buckets = int(bucket_of.max()) + 1 if bucket_of.size else 0
    bucket_bytes_arr = np.bincount(bucket_of, weights=grad_bytes, minlength=n_buckets)
    if ranks > 1 and n_buckets:
        bucket_s, algs = best_profiles(system, nodes, ranks_per_node, algorithm, bucket_bytes_arr)
    else:
        bucket_s, algs = np.zeros(n_buckets), [algorithm] * n_buckets

    def comm(kind: str, nbytes: float, p: int) -> float:
        if p <= 1:
            return 0.0
        # the executor's K-FAC all-gathers with its ring (executor.optim.mpi_buffers); MPI's reduce-scatter: auto
        alg = algorithm if kind == "allreduce" else ("ring" if kind == "allgather" else "auto")
        return float(best_profiles(system, nodes, ranks_per_node, alg, [nbytes], op=kind)[0][0])

    # --- optimizer (depends on the per-device batch through K-FAC's factor computation) -------------------
    opts = dict(optimizer_options or {})
    if overheads is not None and overheads.kernel_launch_s > 0:
        opts.setdefault("launch_overhead_s", overheads.kernel_launch_s)
    if optimizer == "kfac":
        for key, v in kfac_scales(system, ranks, precision, opts, nodes=nodes).items():
            opts.setdefault(key, v)
    opt_s, opt_mem, details = [], [], []
    cache: dict[float, Any] = {}
    for bi in b:
        if bi not in cache:
            cache[bi] = optimizer_cost(optimizer, table, per_device_batch=int(bi), ranks=ranks,
                                       peak_flops=dev.peak_flops_for(precision) / share,
                                       efficiency=max(1e-6, min(1.0, float(curve.at(bi)))),
                                       mem_bw_Bps=_optimizer_bw_Bps(system, share), comm=comm, options=opts,
                                       source=source)
        oc = cache[bi]
        opt_s.append(oc.total_s)
        opt_mem.append(oc.memory_bytes)
        details.append(dict(oc.details))
    opt_s, opt_mem = np.array(opt_s), np.array(opt_mem)

    # --- memory and gradient accumulation --------------------------------------------------------------------
    fixed = 2.0 * table.gradient_bytes + opt_mem   # weights + gradients + optimizer state
    micro, steps = _micro_batches(table, system, precision, b, fixed)

    # --- compute at the micro-batch, repeated over accumulation steps ----------------------------------------
    # a calibrated CPU device's per-layer framework overhead is serial work of each rank (see compute)
    lt = layer_times(table, dev, micro, precision, efficiency=curve,
                     overhead_s=shared_layer_overhead_s(dev, share))
    scale = share * dev.workload_factor(table.model, share, micro)[:, None]   # 1 unless calibrated
    if system.calibration is not None:   # EMPIRICAL, 1 where not measured (see the module docstring)
        tail = system.calibration.step_tail_for(share)   # a mean step over the typical one the benchmarks keep
        scale *= system.calibration.loop_compute_for(share) * tail   # and the executor loop's compute speed
        opt_s = opt_s * tail
    fwd_layers, bwd_layers = lt.fwd_s * scale, lt.bwd_s * scale
    forward = fwd_layers.sum(axis=1) * steps
    bwd_last = bwd_layers.sum(axis=1)
    backward = bwd_last * steps

    # --- overlap of the bucketed allreduce with the last micro-batch's backward ------------------------------
    layer_bucket = np.full(table.n_layers, -1, dtype=np.int64)
    layer_bucket[table.ready_order()] = bucket_of
    if n_buckets and ranks > 1:
        ov = overlap_schedule(bwd_layers[:, ::-1], layer_bucket[::-1], bucket_s[None, :], overlap=overlap)
        comm_total, exposed = ov.comm_total_s, ov.comm_exposed_s
        # the communication thread polls (and copies, and reduces) on the cores of the backward it overlaps
        stolen = overlap_stretch_s(system, share, overlap, comm_total, exposed)
        bwd_layers = bwd_layers * (1.0 + stolen / np.maximum(bwd_last, 1e-30))[:, None]
        backward = backward + stolen
        comm_total = comm_total + stolen
    else:
        comm_total = exposed = np.zeros_like(b)
    mem = fixed + micro * table.totals.act_bytes * _ACT_SCALE.get(precision, 1.0)
    overhead = None
    if overheads is not None:
        per_step = overheads.step_s
        if ranks > 1:
            n_grad_layers = int(np.count_nonzero(layer_bucket >= 0))
            per_step += overheads.bucketer_s + n_grad_layers * overheads.grad_hook_s
            per_step += 6.0 * float(grad_bytes.sum()) / (dev.memory_bw_Bps / share)
        overhead = np.full_like(b, per_step)
    return IterationModel(per_device_batch=b, micro_batch=micro, accumulation_steps=steps, forward_s=forward,
                          backward_s=backward, comm_total_s=np.broadcast_to(comm_total, b.shape).copy(),
                          comm_exposed_s=np.broadcast_to(exposed, b.shape).copy(), optimizer_s=opt_s,
                          io_s=np.zeros_like(b), memory_per_rank_bytes=mem, buckets=n_buckets,
                          algorithms=tuple(algs), optimizer_details=tuple(details), overhead_s=overhead,
                          sync_wait_s=_sync_wait(system, ranks, share, forward + backward),
                          fwd_layer_s=fwd_layers, bwd_layer_s=bwd_layers, bucket_nbytes=bucket_bytes_arr,
                          layer_bucket=layer_bucket)


@dataclass(frozen=True)
class Prediction:
    """An analytic prediction for one configuration (SI units). ``to_dict`` gives the JSON contract."""

    config: RunConfig
    system: str
    ranks: int
    ranks_per_node: int
    per_device_batch: int
    epochs: float
    epochs_source: str
    target_top1: float | None
    iterations_per_epoch: int
    iterations: int
    iteration_s: float
    images_per_s: float
    scaling_efficiency: float
    breakdown: Mapping[str, float]
    run_breakdown: Mapping[str, float]
    time_to_train_s: float
    details: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "prediction", "method": "analytic",
            "time_to_train_s": self.time_to_train_s, "epochs": self.epochs, "epochs_source": self.epochs_source,
            "target_top1": self.target_top1, "iterations": self.iterations,
            "iterations_per_epoch": self.iterations_per_epoch, "iteration_s": self.iteration_s,
            "images_per_s": self.images_per_s, "scaling_efficiency": self.scaling_efficiency,
            "breakdown": dict(self.breakdown), "run_breakdown": dict(self.run_breakdown),
            "system": self.system, "nodes": self.config.nodes, "ranks": self.ranks,
            "ranks_per_node": self.ranks_per_node, "global_batch": self.config.batch,
            "per_device_batch": self.per_device_batch, "details": dict(self.details),
            "config": self.config.to_dict(), "config_hash": self.config.config_hash,
            "software": software_versions(), "machine": machine_description(),
        }


def time_to_train_arrays(*, iteration_s, forward_s, micro_batch, accumulation_steps, global_batch,
                         per_device_batch, epochs, nodes: int, ranks_per_node: int, train_images: int,
                         val_images: int, eval_every_epochs: float, startup_s: float,
                         ref_iteration_s=None) -> dict[str, np.ndarray]:
    """Whole-run quantities of a group, vectorised: the arithmetic of :func:`predict` (which calls it with one element).

    Parameters
    ----------
    iteration_s, forward_s, micro_batch, accumulation_steps : array_like
        Per-iteration seconds, forward seconds, micro-batch and accumulation steps (from ``iteration_model``).
    global_batch, per_device_batch, epochs : array_like
        Images per iteration (all ranks / one rank) and epochs to train.
    nodes, ranks_per_node : int
    train_images, val_images : int
        Dataset sizes (images per epoch, per evaluation).
    eval_every_epochs : float
    startup_s : float
        Start-up broadcast of the parameters, seconds.
    ref_iteration_s : array_like, optional
        One-node iteration seconds at the same per-device batch (needed when ``nodes > 1``).

    Returns
    -------
    dict of numpy.ndarray
        ``time_to_train_s, iterations, iterations_per_epoch, images_per_s, scaling_efficiency,
        training_s, eval_s, evaluations`` (seconds, counts, images/s).
    """
    it = np.asarray(iteration_s, dtype=float)
    B = np.asarray(global_batch, dtype=float)
    pdb = np.asarray(per_device_batch, dtype=float)
    ep = np.asarray(epochs, dtype=float)
    ranks = nodes * ranks_per_node
    images_per_s = B / it
    if nodes > 1:
        scaling = images_per_s / (nodes * ranks_per_node * pdb / np.asarray(ref_iteration_s, dtype=float))
    else:
        scaling = np.ones_like(it)
    ipe = np.ceil(train_images / B)
    iterations = np.ceil(ep * ipe - 1e-9)
    fwd_per_image = np.asarray(forward_s, dtype=float) / (np.asarray(micro_batch, dtype=float)
                                                          * np.asarray(accumulation_steps, dtype=float))
    n_evals = np.floor(ep / eval_every_epochs + 1e-9)
    eval_s = n_evals * math.ceil(val_images / ranks) * fwd_per_image
    training_s = iterations * it
    return {"time_to_train_s": training_s + eval_s + startup_s, "iterations": iterations,
            "iterations_per_epoch": ipe, "images_per_s": images_per_s, "scaling_efficiency": scaling,
            "training_s": training_s, "eval_s": eval_s, "evaluations": n_evals}


def _epochs(cfg: RunConfig) -> tuple[float, str, float | None]:
    """Epochs to train, where that number came from, and the target (None when epochs were given)."""
    if cfg.epochs is not None:
        return float(cfg.epochs), "config", cfg.target_top1
    try:
        target = cfg.target_top1 if cfg.target_top1 is not None else convergence.reference_top1(cfg.model)
        epochs = float(convergence.epochs_to_target(cfg.optimizer, cfg.batch, target, model=cfg.model))
    except ConfigError as exc:
        if exc.field == "model":
            raise ConfigError(cfg.source, "training.epochs", None,
                              f"no convergence model for '{cfg.model}' (fitted: resnet50); pass --epochs") from None
        raise
    return epochs, f"convergence model: {cfg.optimizer} to {target:g}% top-1 at batch {cfg.batch}", target


def predict(cfg: RunConfig) -> Prediction:
    """Analytic prediction of time to train for ``cfg``."""
    r = resolve(cfg)
    cfg, system, table = r.cfg, r.system, r.table
    kw = dict(precision=cfg.precision, algorithm=cfg.allreduce, bucket_bytes=cfg.bucket_bytes,
              overlap=cfg.overlap, optimizer=cfg.optimizer, optimizer_options=cfg.optimizer_options,
              source=cfg.source)
    it = iteration_model(table, system, cfg.nodes, r.ranks_per_node, [r.per_device_batch], **kw)
    ref_iteration_s, scaling_note = None, None
    if cfg.nodes > 1:
        try:
            ref_iteration_s = iteration_model(table, system, 1, r.ranks_per_node, [r.per_device_batch],
                                              **kw).iteration_s
        except InfeasibleError as exc:  # e.g. K-FAC state that only fits when spread over more ranks
            scaling_note = f"no one-node reference: {exc}"
    epochs, epochs_source, target = _epochs(cfg)
    startup_s = 0.0
    if r.ranks > 1:
        startup_s = float(best_profiles(system, cfg.nodes, r.ranks_per_node, "auto", [table.gradient_bytes],
                                        op="broadcast")[0][0])
    if cfg.nodes > 1 and ref_iteration_s is None:
        ref_iteration_s = np.full_like(it.iteration_s, np.nan)  # scaling efficiency unknown (NaN -> null)
    whole = time_to_train_arrays(
        iteration_s=it.iteration_s, forward_s=it.forward_s, micro_batch=it.micro_batch,
        accumulation_steps=it.accumulation_steps, global_batch=cfg.batch, per_device_batch=r.per_device_batch,
        epochs=epochs, nodes=cfg.nodes, ranks_per_node=r.ranks_per_node, train_images=cfg.train_images,
        val_images=cfg.val_images, eval_every_epochs=cfg.eval_every_epochs, startup_s=startup_s,
        ref_iteration_s=ref_iteration_s)
    whole = {k: float(np.ravel(v)[0]) for k, v in whole.items()}
    iteration_s = float(it.iteration_s[0])
    scaling = whole["scaling_efficiency"]
    ipe, iterations = int(whole["iterations_per_epoch"]), int(whole["iterations"])
    n_evals, eval_s, training_s = int(whole["evaluations"]), float(whole["eval_s"]), float(whole["training_s"])
    breakdown = {"compute_s": float(it.compute_s[0]), "forward_s": float(it.forward_s[0]),
                 "backward_s": float(it.backward_s[0]), "comm_total_s": float(it.comm_total_s[0]),
                 "comm_exposed_s": float(it.comm_exposed_s[0]), "optimizer_s": float(it.optimizer_s[0]),
                 "io_s": float(it.io_s[0])}
    if it.overhead_s is not None:
        breakdown["overhead_s"] = float(it.overhead_s[0])
    if it.sync_wait_s is not None:
        breakdown["sync_wait_s"] = float(it.sync_wait_s[0])
    details = {"buckets": it.buckets, "bucket_algorithms": list(it.algorithms),
               "micro_batch": int(it.micro_batch[0]), "accumulation_steps": int(it.accumulation_steps[0]),
               "memory_per_rank_bytes": float(it.memory_per_rank_bytes[0]),
               "memory_available_bytes": float(system.memory_per_device_bytes),
               "optimizer": dict(it.optimizer_details[0]) if it.optimizer_details else {},
               "device": system.device.id, "evaluations": n_evals}
    if scaling_note:
        details["scaling_efficiency_note"] = scaling_note
    return Prediction(config=cfg, system=system.id, ranks=r.ranks, ranks_per_node=r.ranks_per_node,
                      per_device_batch=r.per_device_batch, epochs=epochs, epochs_source=epochs_source,
                      target_top1=target, iterations_per_epoch=ipe, iterations=iterations,
                      iteration_s=iteration_s, images_per_s=float(whole["images_per_s"]), scaling_efficiency=scaling,
                      breakdown=breakdown,
                      run_breakdown={"training_s": training_s, "eval_s": eval_s, "startup_s": startup_s},
                      time_to_train_s=training_s + eval_s + startup_s, details=details)
