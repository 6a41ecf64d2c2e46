"""Frozen, SI-unit dataclasses describing devices (one processor or accelerator) and systems (nodes of
devices joined by an intra-node interconnect, nodes joined by a network).

Everything here is in SI units: bytes, bytes per second, seconds, hertz, FLOP per second. The data files
(``hardware/data``) carry units in their key names and are converted once, by :mod:`hardware.catalog`.

Assumptions and approximations
------------------------------
- A *device* is what one training rank drives: one CPU socket, one Xeon Phi, one GPU. A 2-socket Xeon
  node is ``devices_per_node = 2`` in its system.
- Achieved compute efficiency follows a saturating curve of the per-device batch ``b`` (images):
  ``eff(b) = eff_max * b / (b + batch_half)``. This is an empirical fit, not a roofline; the initial
  values in the catalog are end-to-end fractions of peak from published runs and are recalibrated later.
- Two-level memory (Xeon Phi MCDRAM + DDR4) in ``"cache"`` mode is approximated by one memory with the
  capacity of the slow pool and the bandwidth of the fast pool (i.e. a perfect cache hit rate). In
  ``"flat"`` mode the fast pool is the compute memory and the slow pool is a separate, slower memory.
- For CPU and many-core devices the device's DRAM is the host memory of its node; the device's own
  memory figures describe the reference configuration of its data file, and
  :attr:`SystemSpec.memory_per_device_bytes` takes the smaller of that and the node's share.
- Several ranks may share one device (CPU ranks on the cores of one socket). A calibrated device may carry
  one efficiency curve per number of ranks sharing it (:attr:`DeviceSpec.shared_efficiency`): the fraction
  of the device's peak that all the sharing ranks achieve together, each at the per-rank batch ``b``
  (measured, because the cores a rank gets, and so its threads, change with the sharing). A calibrated
  device may also carry a fixed framework cost per layer and pass (:attr:`DeviceSpec.layer_overhead_s`:
  operator dispatch of an eager framework on a CPU, independent of the batch).
- A calibrated system (``perfmodel calibrate``) carries a :class:`Calibration`: measured allreduce cost
  per algorithm (a fitted alpha-beta-gamma closed form and/or a measured linear profile per rank count)
  and the executor's per-iteration overheads. Catalog systems have none.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from hardware.errors import ConfigError, SpecError

__all__ = [
    "PRECISIONS", "DEVICE_KINDS", "MEMORY_MODES", "INTRA_KINDS", "TOPOLOGY_KINDS",
    "FrozenMap", "MemorySpec", "EfficiencyCurve", "DeviceSpec", "IntraNodeSpec", "NodeSpec",
    "NetworkSpec", "SystemSpec", "CALIBRATED_ALGORITHMS", "CLOSED_FORM_ALGORITHMS", "CalibratedCollective",
    "ExecutorOverheads", "KfacMeasured", "Calibration",
]

#: numeric precisions a device may quote a peak for (``peak_tflops_<precision>`` in the data files)
PRECISIONS: tuple[str, ...] = ("fp64", "fp32", "fp16", "bf16")
#: device kinds
DEVICE_KINDS: tuple[str, ...] = ("cpu", "manycore", "gpu")
#: memory modes of a device with two memory pools (Xeon Phi KNL)
MEMORY_MODES: tuple[str, ...] = ("flat", "cache")
#: kinds of intra-node interconnect
INTRA_KINDS: tuple[str, ...] = ("shared-memory", "nvlink-hybrid-cube-mesh", "nvswitch", "pcie")
#: kinds of inter-node network topology (built by ``hardware.topology``)
TOPOLOGY_KINDS: tuple[str, ...] = ("fat-tree", "single-switch", "torus", "dragonfly")
#: allreduce algorithms a calibration may fit a closed form for (the names of ``perfmodel.collectives``)
CLOSED_FORM_ALGORITHMS: tuple[str, ...] = ("ring", "recursive_doubling", "halving_doubling", "binary_tree",
                                           "double_binary_tree", "hierarchical", "torus2d")
#: allreduce algorithms a calibration may hold measured profiles for (``mpi``: MPI's own Allreduce)
CALIBRATED_ALGORITHMS: tuple[str, ...] = (*CLOSED_FORM_ALGORITHMS, "mpi")


class FrozenMap(Mapping):
    """Immutable, hashable, picklable mapping (insertion order kept).

    Used for the mapping-valued fields of the frozen specs (``peak_flops``, ``memories``, ``sources``,
    ``topology_params``) so that the specs stay hashable; ``dict(m)`` or ``**m`` give a plain dict.
    """

    __slots__ = ("_d", "_h")

    def __init__(self, data: Mapping | None = None, **kw: Any):
        d = dict(data or {})
        d.update(kw)
        object.__setattr__(self, "_d", d)
        object.__setattr__(self, "_h", None)

    def __getitem__(self, key):
        return self._d[key]

    def __iter__(self) -> Iterator:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            object.__setattr__(self, "_h", hash(tuple(self._d.items())))
        return self._h

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self._d) == dict(other)

    def __setattr__(self, name, value):
        raise AttributeError("FrozenMap is immutable")

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"

    def __reduce__(self):
        return (FrozenMap, (self._d,))


@dataclass(frozen=True)
class MemorySpec:
    """One memory pool of a device.

    Attributes
    ----------
    name : str
        Pool name as in the data file (``"ddr4"``, ``"mcdram"``, ``"hbm2"``), or a composite name for the
        effective memory of a cache-mode device (``"mcdram-cache+ddr4"``).
    capacity_bytes : float
        Capacity in bytes.
    bw_Bps : float
        Peak bandwidth in bytes per second.
    """

    name: str
    capacity_bytes: float
    bw_Bps: float


@dataclass(frozen=True)
class EfficiencyCurve:
    """Achieved fraction of peak FLOP/s on convnet training as a function of the per-device batch.

    ``eff(b) = eff_max * b / (b + batch_half)`` with ``b`` in images; ``eff(batch_half) = eff_max / 2``.

    Attributes
    ----------
    eff_max : float
        Asymptotic efficiency for large batches, in (0, 1].
    batch_half : float
        Per-device batch (images) at which half of ``eff_max`` is reached, >= 0.
    """

    eff_max: float
    batch_half: float

    def at(self, batch):
        """Efficiency at per-device batch ``batch`` (scalar or array of images, >= 0).

        Returns a float for a scalar input and a numpy array otherwise. ``batch = 0`` gives 0.
        """
        b = np.asarray(batch, dtype=float)
        if np.any(~np.isfinite(b)) or np.any(b < 0):
            raise ConfigError("EfficiencyCurve.at", "batch", batch, "per-device batch must be finite and >= 0")
        with np.errstate(invalid="ignore", divide="ignore"):
            denom = b + self.batch_half
            eff = np.where(denom > 0, self.eff_max * b / np.where(denom > 0, denom, 1.0), 0.0)
        return float(eff) if eff.ndim == 0 else eff


@dataclass(frozen=True)
class DeviceSpec:
    """One processor or accelerator (one socket, one Xeon Phi, one GPU), in SI units.

    Attributes
    ----------
    id : str
        Catalog id (file stem for catalog entries).
    name : str
        Human-readable name.
    kind : str
        One of :data:`DEVICE_KINDS`.
    cores : int
        CPU cores, or streaming multiprocessors for a GPU.
    clock_hz : float
        Clock used for the peak figures, in Hz.
    peak_flops : Mapping[str, float]
        Precision (:data:`PRECISIONS`) -> peak FLOP/s. For V100, ``"fp16"`` is the tensor-core peak.
    memories : Mapping[str, MemorySpec]
        Memory pools by name, as in the data file (one pool, or two for KNL).
    memory_mode : str or None
        ``"flat"`` or ``"cache"`` for a two-pool device, None otherwise.
    efficiency : Mapping[str, EfficiencyCurve]
        Precision -> achieved-efficiency curve (at least ``"fp32"``).
    sources : Mapping[str, str]
        Dotted data-file key -> citation, for every number of the file.
    source_file : str
        Path of the data file this spec was loaded from.
    notes : str
        Free text from the data file.
    layer_overhead_s : float
        Fixed seconds per layer and pass (forward; backward) on top of the roofline time: the framework's
        per-operator dispatch cost (0 unless calibrated; ``layer_overhead_us`` in the data file).
    shared_efficiency : Mapping[str, Mapping[int, EfficiencyCurve]]
        Precision -> ranks sharing the device (>= 2) -> efficiency curve (empty unless calibrated;
        ``[shared_efficiency.<precision>.ranks_<k>]`` in the data file). With ``k`` ranks on the device
        the ``k`` ranks together achieve ``peak * eff_k(b)`` at per-rank batch ``b`` (each gets ``1/k``);
        see :meth:`efficiency_for`.
    workload_scale : Mapping[int, Mapping[str, float]]
        Ranks sharing the device -> workload (model name) -> factor on its modelled compute time (empty
        unless calibrated; ``[workload_scale.ranks_<k>]`` in the data file). EMPIRICAL: what one efficiency
        curve per sharing cannot express (layer shapes that vectorise badly, e.g. 8-channel convolutions),
        measured for the calibration workloads; other workloads get 1. See :meth:`workload_factor`.
    workload_scale_batch : Mapping[int, Mapping[str, tuple[tuple[float, float], ...]]]
        Ranks sharing the device -> workload -> ``(per-rank batch, factor)`` points by increasing batch: the
        same EMPIRICAL factor at each benchmarked batch (``[workload_scale_batch.ranks_<k>.<model>]``), for
        a workload whose time grows with the batch unlike the efficiency curve says (ResNet-20's step
        grows 2.1-2.2 times from 32 to 64 images per rank as its activations leave the caches; AlexNet's
        fully connected layers read the same weights at any batch). See :meth:`workload_factor`.
    """

    id: str
    name: str
    kind: str
    cores: int
    clock_hz: float
    peak_flops: Mapping[str, float]
    memories: Mapping[str, MemorySpec]
    memory_mode: str | None
    efficiency: Mapping[str, EfficiencyCurve]
    sources: Mapping[str, str]
    source_file: str
    notes: str = ""
    layer_overhead_s: float = 0.0
    shared_efficiency: Mapping[str, Mapping[int, EfficiencyCurve]] = FrozenMap()
    workload_scale: Mapping[int, Mapping[str, float]] = FrozenMap()
    workload_scale_batch: Mapping[int, Mapping[str, tuple[tuple[float, float], ...]]] = FrozenMap()

    # -- memory semantics -------------------------------------------------------------------------------
    @property
    def fast_memory(self) -> MemorySpec:
        """The pool with the highest bandwidth (the only pool of a single-memory device)."""
        return max(self.memories.values(), key=lambda m: m.bw_Bps)

    @property
    def slow_memory(self) -> MemorySpec | None:
        """The other pool of a two-pool device (DDR4 on KNL); None for a single-memory device."""
        if len(self.memories) < 2:
            return None
        fast = self.fast_memory
        return next(m for m in self.memories.values() if m is not fast)

    @property
    def compute_memory(self) -> MemorySpec:
        """The memory that holds the training working set, as the time model sees it.

        - single pool: that pool;
        - ``"cache"`` mode (KNL): the fast pool acts as a cache in front of the slow pool. Approximation:
          effective capacity = slow-pool capacity (DDR4, 96 GiB), effective bandwidth = fast-pool
          bandwidth (MCDRAM, 490 GB/s), i.e. every access hits the cache;
        - ``"flat"`` mode (KNL): the fast pool (MCDRAM, 16 GiB at 490 GB/s) is the compute memory; the
          slow pool is a separate, slower memory (:attr:`slow_memory`).
        """
        if len(self.memories) == 1:
            return next(iter(self.memories.values()))
        fast, slow = self.fast_memory, self.slow_memory
        if self.memory_mode == "cache":
            return MemorySpec(f"{fast.name}-cache+{slow.name}", slow.capacity_bytes, fast.bw_Bps)
        return fast

    @property
    def memory_pools(self) -> tuple[MemorySpec, ...]:
        """The pools software can address: one in cache mode (:attr:`compute_memory`), both in flat mode."""
        if len(self.memories) == 1 or self.memory_mode == "cache":
            return (self.compute_memory,)
        return (self.fast_memory, self.slow_memory)

    @property
    def memory_capacity_bytes(self) -> float:
        """Capacity of :attr:`compute_memory` in bytes."""
        return self.compute_memory.capacity_bytes

    @property
    def memory_bw_Bps(self) -> float:
        """Bandwidth of :attr:`compute_memory` in bytes per second."""
        return self.compute_memory.bw_Bps

    def with_memory_mode(self, mode: str) -> "DeviceSpec":
        """Return a copy in memory mode ``mode`` (``"flat"`` or ``"cache"``); only for two-pool devices."""
        if mode not in MEMORY_MODES:
            raise SpecError(self.source_file, "memory_mode", mode,
                            f"unknown memory mode (known: {', '.join(MEMORY_MODES)})")
        if len(self.memories) < 2:
            raise SpecError(self.source_file, "memory_mode", mode,
                            f"device '{self.id}' has a single memory pool; memory modes need two")
        return dataclasses.replace(self, memory_mode=mode)

    # -- compute --------------------------------------------------------------------------------------------
    def peak_flops_for(self, precision: str) -> float:
        """Peak FLOP/s at ``precision``; SpecError when the device quotes none."""
        try:
            return self.peak_flops[precision]
        except KeyError:
            raise SpecError(self.source_file, f"peak_tflops_{precision}", None,
                            f"device '{self.id}' has no peak for {precision} "
                            f"(available: {', '.join(self.peak_flops)})") from None

    def efficiency_for(self, precision: str, ranks_sharing: float = 1) -> EfficiencyCurve:
        """Efficiency curve at ``precision`` when ``ranks_sharing`` ranks share the device; SpecError when
        the device has none.

        Without calibrated shared curves (every catalog device) this is the device's curve whatever the
        sharing. Otherwise ``k = round(ranks_sharing)`` selects ``shared_efficiency[precision][k]``; a
        ``k`` that was not measured takes the largest measured ``k' < k`` (beyond it, ranks time-slice
        cores that are all busy already: APPROXIMATION, no further loss), and ``k <= 1`` the device's own
        curve (one rank driving every core).
        """
        try:
            base = self.efficiency[precision]
        except KeyError:
            raise SpecError(self.source_file, f"efficiency.{precision}", None,
                            f"device '{self.id}' has no efficiency curve for {precision} "
                            f"(available: {', '.join(self.efficiency)})") from None
        shared = self.shared_efficiency.get(precision)
        k = int(round(float(ranks_sharing)))
        if not shared or k <= 1:
            return base
        below = [j for j in shared if j <= k]
        return shared[max(below)] if below else base

    def workload_factor(self, model: str, ranks_sharing: float = 1, batch: Any = None) -> Any:
        """Calibrated factor on the compute time of workload ``model`` with ``ranks_sharing`` ranks on the
        device (1 when not calibrated); an unmeasured sharing takes the largest measured one below it. With
        ``batch`` (per-rank images, a number or an array) and factors measured at two or more batches at
        that sharing (``workload_scale_batch``), the factor is interpolated linearly in log(batch) between
        them and held at the nearest measured batch's beyond them (a measured correction, not a trend to
        extrapolate); same shape as ``batch``."""
        k = self._workload_sharing(model, ranks_sharing)
        scalar = float(self.workload_scale[k][model]) if k is not None else 1.0
        if batch is None:
            return scalar
        pts = self.workload_factor_points(model, ranks_sharing)
        if len(pts) < 2:
            return np.full_like(np.asarray(batch, dtype=float), scalar)
        return np.interp(np.log(np.asarray(batch, dtype=float)), np.log([b for b, _ in pts]), [f for _, f in pts])

    def workload_factor_points(self, model: str, ranks_sharing: float = 1) -> tuple[tuple[float, float], ...]:
        """The ``(per-rank batch, factor)`` points that :meth:`workload_factor` interpolates for ``model`` with
        ``ranks_sharing`` ranks on the device (empty when none were measured)."""
        k = self._workload_sharing(model, ranks_sharing)
        return tuple((self.workload_scale_batch.get(k) or {}).get(model) or ()) if k is not None else ()

    def _workload_sharing(self, model: str, ranks_sharing: float) -> int | None:
        """The calibrated sharing whose factors apply: the largest measured one not above ``ranks_sharing``."""
        k = max(1, int(round(float(ranks_sharing))))
        below = [j for j, by_model in self.workload_scale.items() if j <= k and model in by_model]
        return max(below) if below else None

    def achieved_flops(self, precision: str, batch):
        """Achieved FLOP/s at ``precision`` and per-device batch ``batch``: peak * eff(batch)."""
        return self.peak_flops_for(precision) * self.efficiency_for(precision).at(batch)

    def to_dict(self) -> dict:
        """JSON-ready dict (SI units, sources included); see :func:`hardware.catalog.spec_to_dict`."""
        from hardware.catalog import spec_to_dict
        return spec_to_dict(self)


@dataclass(frozen=True)
class IntraNodeSpec:
    """Interconnect between the devices of one node.

    Attributes
    ----------
    kind : str
        One of :data:`INTRA_KINDS`.
    link_bw_Bps : float
        Bandwidth per link per direction, bytes per second (for shared memory: per device).
    latency_s : float
        Latency of one intra-node message, seconds.
    links_per_device : int or None
        Links per device (NVLink: 4 on P100, 6 on V100); None where not meaningful.
    """

    kind: str
    link_bw_Bps: float
    latency_s: float
    links_per_device: int | None = None


@dataclass(frozen=True)
class NodeSpec:
    """One node of a system.

    Attributes
    ----------
    device : DeviceSpec
        The (resolved) device, with the node's memory-mode override applied.
    devices_per_node : int
        Devices (ranks' processors) per node.
    nics_per_node : int
        Network adapters per node, each ``network.link_bw_Bps``.
    host_memory_bytes : float
        Host DRAM per node, bytes.
    intra : IntraNodeSpec
        Intra-node interconnect.
    device_ref : str
        The device reference as written in the system file (catalog id or relative path).
    """

    device: DeviceSpec
    devices_per_node: int
    nics_per_node: int
    host_memory_bytes: float
    intra: IntraNodeSpec
    device_ref: str = ""


@dataclass(frozen=True)
class NetworkSpec:
    """Inter-node network.

    Attributes
    ----------
    fabric : str
        Fabric name (``"omni-path-100"``, ``"infiniband-edr"``, ``"ethernet-50g"``, ``"loopback"``).
    link_bw_Bps : float
        Bandwidth per NIC per direction, bytes per second.
    latency_s : float
        End-to-end point-to-point (MPI) latency, seconds.
    topology_kind : str
        One of :data:`TOPOLOGY_KINDS`.
    topology_params : Mapping[str, Any]
        Kind-specific unitless parameters, ready for ``hardware.topology.build(kind, **params)``.
        fat-tree: ``levels``, ``nodes_per_leaf``, ``uplinks_per_leaf`` (optional), ``oversubscription``
        (always present: given, or derived as nodes_per_leaf * nics_per_node / uplinks_per_leaf),
        optional ``spine_switches``, ``switch_radix``; single-switch: optional ``ports``;
        torus: ``dims`` (tuple of ints); dragonfly: ``nodes_per_router``, ``routers_per_group``,
        ``groups``, optional ``global_links_per_router``.
    exchange_profile : tuple of (bytes, seconds)
        EMPIRICAL, optional (empty: none): the measured time of one exchange step between two nodes, by
        message size (both directions at once, every node exchanging; the emulated cluster's link
        calibration). ``link_bw_Bps`` and ``latency_s`` are then the straight line fitted through it; the
        collective models add, per inter-node step, what the measurement at that step's message size
        differs from the line (:func:`perfmodel.network.exchange_residual_s`).
    ring_profile : tuple of (bytes, seconds)
        EMPIRICAL, optional (empty: none): the measured time of one ring step by message size: every node
        sends to the next and receives from the previous at once, one rank per node, on all the network's
        nodes (the emulated cluster's link calibration). Steps of that pattern (a shift, not an exchange)
        are priced at this measurement (:func:`perfmodel.network.ring_residual_s`).
    """

    fabric: str
    link_bw_Bps: float
    latency_s: float
    topology_kind: str
    topology_params: Mapping[str, Any]
    exchange_profile: tuple[tuple[float, float], ...] = ()
    ring_profile: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class CalibratedCollective:
    """Measured allreduce cost of one algorithm on a calibrated system (SI units).

    Attributes
    ----------
    algorithm : str
        One of :data:`CALIBRATED_ALGORITHMS`.
    alpha_s, beta_s_per_B, gamma_s_per_B : float or None
        Parameters of the algorithm's alpha-beta-gamma closed form (``perfmodel.collectives``) fitted by
        least squares over every measured rank count; None when only profiles were measured (``mpi``).
    profiles : Mapping[int, tuple[float, float]]
        Rank count ``p`` -> ``(alpha_s, beta_s_per_B)``: the measured time at ``p`` ranks fitted as
        ``alpha_s + beta_s_per_B * n`` (n in bytes).
    """

    algorithm: str
    alpha_s: float | None = None
    beta_s_per_B: float | None = None
    gamma_s_per_B: float | None = None
    profiles: Mapping[int, tuple[float, float]] = FrozenMap()

    @property
    def has_closed_form(self) -> bool:
        """Whether a closed-form fit (alpha, beta, gamma) is present."""
        return self.alpha_s is not None


@dataclass(frozen=True)
class ExecutorOverheads:
    """Per-iteration costs of the executor's training loop that the layer, collective and optimizer models
    do not contain (EMPIRICAL terms, measured by ``perfmodel calibrate``; seconds).

    Attributes
    ----------
    step_s : float
        Fixed cost per iteration whatever the rank count: fetching the batch and the training loop's own
        bookkeeping outside forward, backward and the optimizer.
    bucketer_s : float
        Fixed cost per iteration when gradients are bucketed (more than one rank): handing buckets to the
        communication thread and waiting for it, ``finish()``'s bookkeeping.
    grad_hook_s : float
        Per parameterised layer and iteration when gradients are bucketed: the gradient hooks and their
        bookkeeping (the copies into and out of the buckets and the averaging are priced from the memory
        bandwidth, not here).
    kernel_launch_s : float
        Per optimizer kernel: the default ``launch_overhead_s`` of the optimizer cost models on this system
        (an explicit ``optimizer_options.launch_overhead_s`` wins). Fitted to the executor's optimizer
        phase (``step()`` and ``zero_grad()``).
    optimizer_traffic_scale : float
        The optimizer phase's memory traffic over what the cost models count (>= 1): the executor's update
        runs several passes per tensor (weight decay, momentum, update, zeroing), so a memory-bound step
        (AlexNet's 244 MB of parameters) moves more bytes than the models' minimum. The predictor divides the
        optimizer's memory bandwidth by it. Fitted jointly with ``kernel_launch_s``; 1 when the calibration
        measured no memory-bound optimizer step.
    """

    step_s: float = 0.0
    bucketer_s: float = 0.0
    grad_hook_s: float = 0.0
    kernel_launch_s: float = 0.0
    optimizer_traffic_scale: float = 1.0


@dataclass(frozen=True)
class KfacMeasured:
    """The executor's K-FAC per refresh, measured by ``perfmodel calibrate`` on a reference configuration
    (``model`` at ``per_rank_batch`` with all ranks of one rank count; seconds, slowest rank): the factor
    computation in the hooks, the factor exchange (packing, reduce-scatter, running averages) and the
    inversion. The predictor prices the same reference with its cost model and scales its K-FAC terms by
    measured / modelled (EMPIRICAL; :func:`perfmodel.predict.kfac_scales`). ``nodes``: how many nodes the
    reference's ranks spanned (its table key counts ranks per node); more than one in an emulated cluster's
    spec, whose reference is the base machine's run of all its hosts' ranks (:mod:`executor.cluster.spec`)."""

    model: str
    per_rank_batch: int
    factor_s: float
    exchange_s: float
    inversion_s: float
    nodes: int = 1


@dataclass(frozen=True)
class Calibration:
    """What ``perfmodel calibrate`` measured on a system (the ``[calibration]`` table of its file).

    Attributes
    ----------
    date, host : str
        When and where it was measured.
    allreduce : Mapping[str, CalibratedCollective]
        Algorithm name -> measured allreduce cost.
    overheads : ExecutorOverheads or None
        The executor's per-iteration overheads (None when not measured).
    jitter_cv : Mapping[int, float]
        Ranks sharing the device -> coefficient of variation of one rank's compute time per iteration
        (dimensionless). Synchronous data parallelism waits for the slowest rank, so the predictor adds the
        expected maximum of that many draws (see :func:`perfmodel.predict.iteration_model`).
    loop_compute_scale : Mapping[int, float]
        Ranks sharing the device -> EMPIRICAL factor on the benchmarked compute time inside the executor's
        training loop (dimensionless; measured / benchmarked forward + backward of a real run of a reference
        workload, :func:`executor.calibrate.fit_loop_compute`). The predictor multiplies every compute time
        at that sharing by it (:meth:`loop_compute_for`).
    optimizer_traffic : Mapping[int, float]
        Ranks sharing the device -> EMPIRICAL memory-traffic scale of the optimizer step when that many ranks
        step at once, each at its share of the device's bandwidth (a calibration measures 2 or more; an
        emulated cluster's spec carries the base's at ``k * H`` as its ``k``)
        (:func:`executor.calibrate.fit_optimizer_sharing`); where not measured the one-rank
        :attr:`ExecutorOverheads.optimizer_traffic_scale` applies (:meth:`optimizer_traffic_for`).
    step_tail : Mapping[int, float]
        Ranks sharing the device -> EMPIRICAL ratio (>= 1) of a step's mean time to its typical time (the
        median of the fastest half of repetitions, what every calibrated time is). A run's iteration time is
        a mean, so the predictor multiplies the calibrated compute and optimizer times by it
        (:meth:`step_tail_for`).
    speed_probe_s : Mapping[int, float]
        Ranks sharing the device -> seconds of the host speed probe (:mod:`executor.speed_probe`) per rank
        while the compute calibration ran: the reference of the speed factor of a later run.
    speed_probe_model_s : Mapping[int, Mapping[str, float]]
        The same per workload: the probe sampled after that model's steps (its time depends on what ran
        just before it); :meth:`speed_probe_for` prefers it.
    kfac : Mapping[int, KfacMeasured]
        Ranks -> the executor's K-FAC measured at that rank count.
    nodes_per_machine : int
        Nodes of this system that ran on the one calibrated machine at once (>= 1): 1 for a real cluster;
        all ``H`` hosts of an emulated cluster, whose ``k`` ranks per host are the ``k * H`` ranks that the
        base calibration measured sharing this machine's CPU, so its compute times are already the slowest
        of ``k * H`` ranks (:func:`perfmodel.predict.measured_together`).
    notes : str
        Free text.
    """

    date: str
    host: str
    allreduce: Mapping[str, CalibratedCollective] = FrozenMap()
    overheads: ExecutorOverheads | None = None
    jitter_cv: Mapping[int, float] = FrozenMap()
    loop_compute_scale: Mapping[int, float] = FrozenMap()
    optimizer_traffic: Mapping[int, float] = FrozenMap()
    step_tail: Mapping[int, float] = FrozenMap()
    speed_probe_s: Mapping[int, float] = FrozenMap()
    speed_probe_model_s: Mapping[int, Mapping[str, float]] = FrozenMap()
    kfac: Mapping[int, KfacMeasured] = FrozenMap()
    nodes_per_machine: int = 1
    notes: str = ""

    def speed_probe_for(self, ranks: int, model: str | None = None) -> float | None:
        """Reference probe seconds at ``ranks`` ranks sharing the device, after ``model`` when measured
        (None when the calibration has no probe at that rank count)."""
        by_model = self.speed_probe_model_s.get(ranks) or {}
        if model is not None and model in by_model:
            return float(by_model[model])
        ref = self.speed_probe_s.get(ranks)
        return None if ref is None else float(ref)

    def jitter_for(self, ranks_sharing: float) -> float:
        """Calibrated compute jitter (CV) with ``ranks_sharing`` ranks per device: the measured value of the
        largest measured sharing count not above it (0 when none was measured)."""
        keys = sorted(k for k in self.jitter_cv if k <= ranks_sharing)
        return float(self.jitter_cv[keys[-1]]) if keys else 0.0

    def loop_compute_for(self, ranks_sharing: float) -> float:
        """Calibrated in-loop compute factor with ``ranks_sharing`` ranks per device: the measured value at
        exactly that sharing (1 where none was measured: the factor is a measured correction, not a curve
        to extrapolate)."""
        return _exact(self.loop_compute_scale, ranks_sharing)

    def optimizer_traffic_for(self, ranks_sharing: float) -> float | None:
        """Calibrated optimizer traffic scale with ``ranks_sharing`` ranks stepping at once on one device: the
        measured value at exactly that sharing, None where none was measured (the caller falls back to the
        one-rank scale)."""
        return _exact(self.optimizer_traffic, ranks_sharing, None)

    def step_tail_for(self, ranks_sharing: float) -> float:
        """Calibrated mean over typical step time with ``ranks_sharing`` ranks per device: the measured value at
        exactly that sharing, 1 elsewhere."""
        return _exact(self.step_tail, ranks_sharing)


def _exact(values: Mapping[int, float], ranks_sharing: float, default: float | None = 1.0) -> float | None:
    """``values[ranks_sharing]`` for a whole number of ranks measured, else ``default`` (a measured correction
    per sharing, not a curve to interpolate)."""
    v = values.get(int(ranks_sharing)) if float(ranks_sharing).is_integer() else None
    return default if v is None else float(v)


@dataclass(frozen=True)
class SystemSpec:
    """A machine: ``max_nodes`` identical nodes on one network.

    Attributes
    ----------
    id : str
        Catalog id (file stem for catalog entries).
    name : str
        Human-readable name.
    node : NodeSpec
        The node configuration.
    max_nodes : int
        Nodes the system has (a run asking for more is infeasible).
    network : NetworkSpec
        The inter-node network.
    sources : Mapping[str, str]
        Dotted data-file key -> citation.
    source_file : str
        Path of the data file.
    notes : str
        Free text from the data file.
    calibration : Calibration or None
        Measurements of ``perfmodel calibrate`` (None for catalog systems).
    """

    id: str
    name: str
    node: NodeSpec
    max_nodes: int
    network: NetworkSpec
    sources: Mapping[str, str]
    source_file: str
    notes: str = ""
    calibration: Calibration | None = None

    @property
    def collective_calibration(self) -> Mapping[str, CalibratedCollective]:
        """Algorithm -> measured allreduce cost (empty without a calibration)."""
        return self.calibration.allreduce if self.calibration is not None else FrozenMap()

    @property
    def overheads(self) -> ExecutorOverheads | None:
        """The executor's calibrated per-iteration overheads, or None."""
        return self.calibration.overheads if self.calibration is not None else None

    @property
    def device(self) -> DeviceSpec:
        """Shortcut for ``node.device``."""
        return self.node.device

    @property
    def devices_per_node(self) -> int:
        """Shortcut for ``node.devices_per_node``."""
        return self.node.devices_per_node

    def ranks_sharing_device(self, ranks_per_node: float) -> float:
        """Ranks that share one device when ``ranks_per_node`` ranks run on a node (at least 1): the sharing
        every per-sharing calibration (efficiency, jitter, loop factor, ...) is keyed by."""
        return max(1.0, ranks_per_node / self.node.devices_per_node)

    @property
    def max_devices(self) -> int:
        """Devices in the whole system."""
        return self.max_nodes * self.node.devices_per_node

    @property
    def node_injection_bw_Bps(self) -> float:
        """Network bandwidth into/out of one node per direction: nics_per_node * link bandwidth."""
        return self.node.nics_per_node * self.network.link_bw_Bps

    @property
    def memory_per_device_bytes(self) -> float:
        """Memory a rank can use for its working set, bytes.

        GPUs: the device's compute memory. CPUs and many-core devices: the smaller of the device's compute
        memory and the node's host memory divided by devices_per_node (their DRAM *is* the host memory).
        """
        dev = self.node.device
        if dev.kind == "gpu":
            return dev.memory_capacity_bytes
        return min(dev.memory_capacity_bytes, self.node.host_memory_bytes / self.node.devices_per_node)

    def to_dict(self) -> dict:
        """JSON-ready dict (SI units, sources included); see :func:`hardware.catalog.spec_to_dict`."""
        from hardware.catalog import spec_to_dict
        return spec_to_dict(self)
