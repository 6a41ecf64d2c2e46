"""Predicted against measured on the emulated cluster (``perfmodel cluster up``): allreduce microbenchmarks
per algorithm and message size, and whole training iterations.

Both sides describe the same run:

- measured: the executor's allreduce benchmark (:mod:`executor.bench_allreduce`, repeated ``repeats`` times
  in one MPI job; the typical time per algorithm and size = median of the fastest half of the repeats,
  robust against repetitions slowed by other work on this machine) or real training iterations
  (:func:`executor.launch.launch`; the typical iteration = median of the slowest rank's measured
  iterations, for K-FAC their mean over whole refresh periods), with the ranks placed across the emulated hosts by
  :func:`executor.cluster.hydra.placement` (one per host while there are enough);
- predicted: :func:`perfmodel.network.collective_profile` on the ``emulated`` system spec for the same
  nodes and ranks per node (the topology graph of the spec, its link rate and latency, the reduction at the
  device's memory bandwidth), and :func:`perfmodel.predict.predict` for the iteration.

``error_pct = 100 * (predicted - measured) / measured`` (positive: predicted slower).

Requires a running emulated cluster (and root) for the measurements; the prediction functions need neither.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
from typing import Any, Callable, Iterable, Mapping, Sequence

from hardware.errors import ConfigError

__all__ = ["DEFAULT_ALGORITHMS", "DEFAULT_SIZES", "cluster_placement", "predict_allreduce", "measure_allreduce",
           "measured_reduction_cost", "slowest_rank_probe_s",
           "bench_vs_predict", "iterations_vs_predict", "error_summary"]

#: the executor's explicit algorithms (MPI's own ``mpi`` has no model: it is priced only from calibration)
DEFAULT_ALGORITHMS: tuple[str, ...] = ("ring", "recursive_doubling", "halving_doubling")
#: message sizes in bytes (1, 4 and 16 MiB)
DEFAULT_SIZES: tuple[int, ...] = (1 << 20, 4 << 20, 16 << 20)

Progress = Callable[[str], None] | None


def _error_pct(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured if measured > 0 else math.nan


def cluster_placement(system: str, ranks: int, ranks_per_node: int | None = None) -> tuple[int, int]:
    """``(nodes, ranks_per_node)`` of ``ranks`` ranks on ``system`` as the emulated launcher places them."""
    from executor.cluster.hydra import placement
    from hardware.catalog import load_system

    return placement(ranks, load_system(system).max_nodes, ranks_per_node=ranks_per_node)


def _with_reduction_cost(spec, gamma_s_per_B: float):
    """``spec`` whose device memory bandwidth makes :func:`perfmodel.network.reduce_gamma_s_per_B` equal
    ``gamma_s_per_B`` (``3 / bw``): for the what-if column only."""
    import dataclasses

    from hardware.specs import FrozenMap

    dev = spec.device
    name = dev.compute_memory.name
    mems = FrozenMap({k: (dataclasses.replace(m, bw_Bps=3.0 / gamma_s_per_B) if k == name else m)
                      for k, m in dev.memories.items()})
    node = dataclasses.replace(spec.node, device=dataclasses.replace(dev, memories=mems))
    return dataclasses.replace(spec, node=node)


def predict_allreduce(system: str, ranks: int, algorithm: str, nbytes: float, ranks_per_node: int | None = None,
                      reduce_gamma_s_per_B: float | None = None) -> float:
    """Predicted seconds of one allreduce of ``nbytes`` with ``algorithm`` on ``ranks`` ranks of ``system``.

    ``reduce_gamma_s_per_B`` replaces the model's reduction cost (``3 / memory bandwidth`` of the device)
    by a measured one: a what-if, to show how much of an error the reduction term explains."""
    from hardware.catalog import load_system
    from perfmodel.network import collective_profile

    nodes, rpn = cluster_placement(system, ranks, ranks_per_node)
    spec = load_system(system)
    if reduce_gamma_s_per_B:
        spec = _with_reduction_cost(spec, reduce_gamma_s_per_B)
    return float(collective_profile(spec, nodes, rpn, algorithm).time_s(float(nbytes)))


def measured_reduction_cost() -> float | None:
    """The reduction cost per byte (``numpy.add`` on float32, seconds per byte) that ``perfmodel calibrate``
    measured on the base system of the running emulated cluster, or None (uncalibrated base, no cluster)."""
    from executor.cluster.state import load_state
    from hardware.catalog import load_system

    base = ((load_state() or {}).get("spec") or {}).get("base_system_file")
    if not base:
        return None
    gammas = [c.gamma_s_per_B for c in load_system(base).collective_calibration.values() if c.gamma_s_per_B]
    return min(gammas) if gammas else None


def _geometric(sizes: Sequence[int]) -> tuple[int, int, int] | None:
    """``(min, max, factor)`` when ``sizes`` is ``min * factor**k`` (k = 0, 1, ...), else None."""
    s = sorted(int(x) for x in sizes)
    if len(s) == 1:
        return s[0], s[0], 2
    f = s[1] // s[0]
    if f >= 2 and all(s[i + 1] == s[i] * f for i in range(len(s) - 1)):
        return s[0], s[-1], f
    return None


def measure_allreduce(system: str, ranks: int, algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
                      sizes: Sequence[int] = DEFAULT_SIZES, *, repeats: int = 3, max_iterations: int = 20,
                      timeout_s: float = 900.0, progress: Progress = None) -> list[dict[str, Any]]:
    """Typical measured allreduce time per (algorithm, size) on the emulated cluster (module docstring).

    Returns
    -------
    list of dict
        ``algorithm``, ``ranks``, ``nbytes``, ``time_s`` (typical), ``spread_s`` (min/median/max/n).
    """
    from executor.calibrate import run_benchmark, typical_rows

    groups: list[tuple[int, int, int]] = []
    geo = _geometric(sizes)
    groups = [geo] if geo else [(int(n), int(n), 2) for n in sorted(set(sizes))]
    rows: list[dict[str, Any]] = []
    for lo, hi, factor in groups:
        args = ["--allreduce-worker", "--algorithms", ",".join(algorithms), "--min-bytes", str(lo),
                "--max-bytes", str(hi), "--factor", str(factor), "--repeats", str(repeats),
                "--max-iterations", str(max_iterations)]
        doc = run_benchmark("executor.calibrate", args, ranks, timeout_s=timeout_s, threads=1,
                            what="bench allreduce (emulated)", progress=progress, system=system)
        rows += typical_rows(doc["results"])
    wanted = {int(n) for n in sizes}
    return [r for r in rows if r["nbytes"] in wanted]


def slowest_rank_probe_s(per_rank_typical_s: Sequence[float | None], fallback_s: float | None) -> float | None:
    """The largest of the ranks' own typical probes (``per_rank_typical_s``: each rank's median of the fastest
    half of its samples), ``fallback_s`` where a rank has none: kept beside the run's probe statistic
    (:func:`iterations_vs_predict`), not used for the speed factor.

    History: it was the emulated factor's statistic while the probe followed a bare barrier, whose skew over a
    link of milliseconds made the per-iteration maximum inflate (4 hosts at 5 ms: factors 1.73, 1.33 and 1.29
    against 1.07, 1.08 and 0.99 from this one). It has a failure of its own: with 4 ranks on 2 cores a rank's
    probes fall in two modes, about 14 ms (probing against the other three, as in the calibration) and about
    10 ms, and when every rank's fastest half lands in the fast mode the factor reads 0.64-0.70 while the
    per-iteration maximum stays at 11.8-14.4 ms (9 of the 32 4-host rows of the file of 2026-12-07 21:25;
    the iterations' speed-scaled errors down to -29 %). Since the ranks on several nodes start their probes at
    one instant (:func:`executor.speed_probe.start_together`), the run uses the calibration's statistic."""
    if per_rank_typical_s and all(x is not None and x > 0 for x in per_rank_typical_s):
        return float(max(per_rank_typical_s))
    return fallback_s


def bench_vs_predict(system: str = "emulated", ranks: int = 2, algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
                     sizes: Sequence[int] = DEFAULT_SIZES, *, repeats: int = 3, max_iterations: int = 20,
                     timeout_s: float = 900.0, progress: Progress = None) -> list[dict[str, Any]]:
    """Measured and predicted allreduce time per algorithm and message size on the emulated cluster.

    Parameters
    ----------
    system : str
        The emulated cluster's system id (or its spec path).
    ranks : int
        Ranks (spread one per host while there are enough hosts).
    algorithms : sequence of str
        Executor algorithms with a model (``ring``, ``recursive_doubling``, ``halving_doubling``,
        ``hierarchical``...).
    sizes : sequence of int
        Message sizes in bytes (multiples of 4).
    repeats, max_iterations : int
        Repetitions of the benchmark and timed calls per size and repetition.

    Returns
    -------
    list of dict
        One row per (algorithm, size): ``algorithm``, ``bytes``, ``measured_s``, ``predicted_s``,
        ``error_pct``, and ``ranks``, ``nodes``, ``ranks_per_node``, ``spread_s``; with a calibrated base
        system also ``predicted_measured_reduction_s`` / ``error_measured_reduction_pct``: the prediction
        with the measured reduction cost in place of the model's ``3 / memory bandwidth`` (a what-if).
    """
    nodes, rpn = cluster_placement(system, ranks)
    measured = measure_allreduce(system, ranks, algorithms, sizes, repeats=repeats, max_iterations=max_iterations,
                                 timeout_s=timeout_s, progress=progress)
    gamma = measured_reduction_cost()
    out = []
    for m in measured:
        t = float(m["time_s"])
        pred = predict_allreduce(system, ranks, m["algorithm"], m["nbytes"])
        row = {"algorithm": m["algorithm"], "bytes": int(m["nbytes"]), "measured_s": t, "predicted_s": pred,
               "error_pct": _error_pct(pred, t), "ranks": ranks, "nodes": nodes, "ranks_per_node": rpn,
               "spread_s": m.get("spread_s")}
        if gamma:
            alt = predict_allreduce(system, ranks, m["algorithm"], m["nbytes"], reduce_gamma_s_per_B=gamma)
            row.update(predicted_measured_reduction_s=alt, error_measured_reduction_pct=_error_pct(alt, t))
        out.append(row)
    order = {a: i for i, a in enumerate(algorithms)}
    out.sort(key=lambda r: (order.get(r["algorithm"], 99), r["bytes"]))
    return out


#: K-FAC's options in the emulated iteration runs: the local validation matrix's refresh interval
KFAC_OPTIONS: dict[str, Any] = {"refresh_interval": 5}


def iterations_vs_predict(system: str = "emulated", ranks: int = 2, model: str = "resnet20",
                          batches: Sequence[int] = (32, 128), *, algorithm: str = "ring", optimizer: str = "sgd",
                          optimizer_options: Mapping[str, Any] | None = None,
                          bucket_mb: float = 25.0, overlap: bool = True, iterations: int = 20,
                          warmup_iterations: int = 3, backend: str = "mpi", timeout_s: float = 900.0,
                          progress: Progress = None) -> list[dict[str, Any]]:
    """Measured and predicted training iteration on the emulated cluster, for each global batch.

    ``optimizer_options`` default to :data:`KFAC_OPTIONS` for K-FAC; its ``iterations`` must be whole refresh
    periods (20: four of 5), else a ConfigError.

    Returns
    -------
    list of dict
        One row per batch: ``model``, ``batch``, ``ranks``, ``nodes``, ``algorithm``, ``optimizer``,
        ``measured_s`` (typical iteration: median over measured iterations of the slowest rank; for K-FAC
        their mean, since its refresh iterations are part of what the model prices per iteration),
        ``measured_median_s``, ``measured_mean_s``, ``predicted_s``, ``error_pct``, the measured and
        predicted ``compute_s``, ``comm_exposed_s``, ``comm_total_s`` and ``optimizer_s``, and per rank the
        typical probe (``speed_probe_ranks_s``).
        With a host speed probe reference in the spec (copied from the calibrated base system), the runs
        time the probe and ``predicted_s`` has its CPU work (compute, optimizer, overheads, straggler wait,
        not the network) scaled by the speed factor, as in :mod:`validation.loop`: the run's probe
        (``speed_probe_s``: the typical of the per-iteration slowest rank's probe, the calibration's statistic,
        :func:`validation.loop.probe_statistic`; ``speed_probe_iteration_max_s`` is the same value under the
        name earlier files used for it, ``speed_probe_slowest_own_s`` (:func:`slowest_rank_probe_s`) and
        ``speed_probe_median_s`` are beside it) over the reference;
        ``predicted_raw_s`` and ``error_raw_pct`` are without it.
    """
    from executor.bench_compute import typical as typical_of
    from executor.launch import launch
    from perfmodel.config import load_config
    from perfmodel.optimizers import OPTIMIZERS
    from perfmodel.predict import predict
    from validation.loop import probe_statistic, speed_factor

    nodes, rpn = cluster_placement(system, ranks)
    opts = dict(optimizer_options if optimizer_options is not None
                else (KFAC_OPTIONS if optimizer == "kfac" else {}))
    period = int(opts.get("refresh_interval", OPTIMIZERS["kfac"].DEFAULT_OPTIONS["refresh_interval"])) \
        if optimizer == "kfac" else 1
    if iterations % period:
        raise ConfigError("iterations_vs_predict", "iterations", iterations,
                          f"K-FAC is measured over whole refresh periods: a multiple of {period}")
    rows = []
    for batch in batches:
        cfg = load_config(model=model, batch=int(batch), optimizer=optimizer, allreduce=algorithm,
                          bucket_bytes=bucket_mb * 1e6, overlap=overlap, system=system, nodes=nodes,
                          ranks_per_node=rpn, iterations=iterations, warmup_iterations=warmup_iterations,
                          epochs=1.0, optimizer_options=opts or None)
        pred = predict(cfg)
        with tempfile.TemporaryDirectory(prefix="ttt-emulated-run-") as tmp:   # launch removes its run folder
            m = launch(cfg, ranks, iterations=iterations, warmup_iterations=warmup_iterations, backend=backend,
                       timeout_s=timeout_s, out=os.path.join(tmp, "measurement.json"), extra={"speed_probe": True})
        recs = m["records"]
        per_rank_probe = [typical_of(p) if p else None for p in
                          ([x["probe_s"] for x in r if not x["warmup"] and "probe_s" in x] for r in recs)]
        probe_s = probe_statistic(m)   # typical of the per-iteration slowest rank's probe, as the calibration's
        factor = speed_factor(system, rpn, probe_s, model)
        predicted = speed_scaled_s(pred, factor)
        n = min(len(r) for r in recs)
        slowest = [max(r[i]["iteration_s"] for r in recs) for i in range(n) if not recs[0][i]["warmup"]]
        median = statistics.median(slowest)
        typical = statistics.fmean(slowest) if optimizer == "kfac" else median
        if progress:
            progress(f"{model} {optimizer} batch {batch} on {ranks} ranks: measured {typical * 1e3:.1f} ms, "
                     f"predicted {predicted * 1e3:.1f} ms")
        rows.append({"model": model, "batch": int(batch), "ranks": ranks, "nodes": nodes, "ranks_per_node": rpn,
                     "algorithm": algorithm, "optimizer": optimizer, "optimizer_options": opts,
                     "backend": backend, "measured_s": typical, "measured_median_s": median,
                     "measured_mean_s": float(m["iteration_s"]), "predicted_s": predicted,
                     "error_pct": _error_pct(predicted, typical), "speed_factor": factor,
                     "speed_probe_s": probe_s, "speed_probe_iteration_max_s": probe_s,
                     "speed_probe_slowest_own_s": slowest_rank_probe_s(per_rank_probe, None),
                     "speed_probe_median_s": (m.get("speed_probe") or {}).get("median_s"),
                     "speed_probe_ranks_s": per_rank_probe,
                     "predicted_raw_s": float(pred.iteration_s),
                     "error_raw_pct": _error_pct(float(pred.iteration_s), typical),
                     "measured_compute_s": float(m["breakdown"]["compute_s"]),
                     "predicted_compute_s": float(pred.breakdown["compute_s"]),
                     "measured_comm_exposed_s": float(m["breakdown"]["comm_exposed_s"]),
                     "predicted_comm_exposed_s": float(pred.breakdown["comm_exposed_s"]),
                     "measured_comm_total_s": float(m["breakdown"]["comm_total_s"]),
                     "predicted_comm_total_s": float(pred.breakdown["comm_total_s"]),
                     "measured_optimizer_s": float(m["breakdown"].get("optimizer_s") or 0.0),
                     "predicted_optimizer_s": float(pred.breakdown.get("optimizer_s") or 0.0)})
    return rows


def speed_scaled_s(pred: Any, factor: float | None) -> float:
    """Seconds of the iteration of prediction ``pred`` with its CPU work (compute, optimizer, overheads,
    straggler wait; not the network) scaled by the host speed factor ``factor`` (None: unscaled)."""
    bd = pred.breakdown
    cpu_s = sum(float(bd.get(k) or 0.0) for k in ("compute_s", "optimizer_s", "overhead_s", "sync_wait_s"))
    return float(pred.iteration_s) + ((factor - 1.0) * cpu_s if factor else 0.0)


def error_summary(rows: Iterable[Mapping[str, Any]], min_bytes: int = 0) -> dict[str, Any]:
    """``count``, ``mean_abs_pct``, ``median_abs_pct``, ``max_abs_pct``, ``within_10pct`` (and the row with
    the largest error) over ``rows`` (allreduce rows below ``min_bytes`` are left out)."""
    sel = [r for r in rows if r.get("bytes", min_bytes) >= min_bytes and math.isfinite(r["error_pct"])]
    if not sel:
        return {"count": 0, "mean_abs_pct": None, "median_abs_pct": None, "max_abs_pct": None, "within_10pct": 0,
                "worst": None}
    worst = max(sel, key=lambda r: abs(r["error_pct"]))
    ape = [abs(r["error_pct"]) for r in sel]
    return {"count": len(sel), "mean_abs_pct": statistics.fmean(ape), "median_abs_pct": statistics.median(ape),
            "max_abs_pct": abs(worst["error_pct"]), "within_10pct": sum(a <= 10.0 for a in ape),
            "worst": dict(worst)}
