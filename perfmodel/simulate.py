"""The discrete-event simulation of a run configuration: the analytic model's costs, replayed as events with
variance, contention and tails.

``simulate(cfg)`` builds the events of one iteration from the *same* cost functions the analytic predictor
uses -- per-layer compute (:func:`perfmodel.compute.layer_times`, at the micro-batch and device share that
:func:`perfmodel.predict.iteration_model` chooses), gradient buckets (:func:`perfmodel.overlap.assign_buckets`),
the collective algorithm of every bucket (:func:`perfmodel.network.best_profiles`), the optimizer cost
(:func:`perfmodel.optimizers.optimizer_cost` through ``iteration_model``), epochs, iterations, evaluation
and start-up from :func:`perfmodel.predict.predict` -- and runs them through the engine
(:mod:`perfmodel.sim.engine`): collectives as flows over the topology's links with max-min fair sharing
(:mod:`perfmodel.sim.flows`), per-rank compute jitter and stragglers (:mod:`perfmodel.sim.variability`).

Equivalence with the analytic model: without variability, without background traffic and with one bucket
collective in flight, every collective runs alone on the network and takes its analytic profile time, and
the schedule is the analytic overlap rule, so the simulated iteration equals the predicted one (tested over
a grid; K-FAC: when the simulated iterations are a multiple of the refresh interval, since the analytic
model amortises refreshes at ``1 / T`` and the simulation places them at iterations ``0, T, 2T, ...``).

Reported numbers: ``iteration_s`` is the mean over the simulated iterations; ``iteration_p50_s`` and
``iteration_p99_s`` are percentiles of the same samples (linear interpolation); the whole run is
``iterations * iteration_s + evaluations + start-up`` with the analytic iteration count. The breakdown holds
per-iteration means on the critical path (``compute_s`` is the slowest rank's forward + backward;
``sync_wait_s`` how much longer that is than the average rank's). Scaling efficiency is relative to the
analytic one-node iteration (weak scaling), like the predictor's.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from hardware.errors import ConfigError
from perfmodel.config import RunConfig
from perfmodel.network import best_profiles
from perfmodel.optimizers import get_optimizer
from perfmodel.optimizers.kfac import count_refreshes
from perfmodel.predict import Prediction, iteration_model, measured_together, overlap_stretch_s, predict, resolve
from perfmodel.provenance import machine_description, software_versions
from perfmodel.sim.engine import Collective, EngineModel, EngineResult, OptimizerPlan, run_engine
from perfmodel.sim.trace import TraceWriter
from perfmodel.sim.variability import NO_VARIABILITY, Variability

__all__ = ["DEFAULT_ITERATIONS", "NETWORK_MODELS", "SimulationResult", "simulate", "build_engine_model",
           "tail_vs_ranks"]

#: simulated iterations when not given
DEFAULT_ITERATIONS = 50
_SOURCE = "simulation"


@dataclass(frozen=True)
class SimulationResult:
    """A simulated prediction for one configuration (SI units). ``to_dict`` gives the JSON contract of
    ``predict --json`` plus ``iteration_p50_s`` and ``iteration_p99_s``."""

    prediction: Prediction
    iteration_samples_s: tuple[float, ...]
    iteration_s: float
    iteration_p50_s: float
    iteration_p99_s: float
    images_per_s: float
    scaling_efficiency: float
    breakdown: Mapping[str, float]
    run_breakdown: Mapping[str, float]
    time_to_train_s: float
    simulation: Mapping[str, Any]
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> RunConfig:
        return self.prediction.config

    def to_dict(self) -> dict[str, Any]:
        p = self.prediction
        s = np.asarray(self.iteration_samples_s)
        return {
            "kind": "prediction", "method": "simulation",
            "time_to_train_s": self.time_to_train_s, "epochs": p.epochs, "epochs_source": p.epochs_source,
            "target_top1": p.target_top1, "iterations": p.iterations, "iterations_per_epoch": p.iterations_per_epoch,
            "iteration_s": self.iteration_s, "iteration_p50_s": self.iteration_p50_s,
            "iteration_p99_s": self.iteration_p99_s, "iteration_std_s": float(s.std()),
            "iteration_min_s": float(s.min()), "iteration_max_s": float(s.max()),
            "images_per_s": self.images_per_s, "scaling_efficiency": self.scaling_efficiency,
            "breakdown": dict(self.breakdown), "run_breakdown": dict(self.run_breakdown),
            "system": p.system, "nodes": p.config.nodes, "ranks": p.ranks, "ranks_per_node": p.ranks_per_node,
            "global_batch": p.config.batch, "per_device_batch": p.per_device_batch,
            "simulation": dict(self.simulation),
            "analytic": {"iteration_s": p.iteration_s, "time_to_train_s": p.time_to_train_s,
                         "breakdown": dict(p.breakdown)},
            "details": dict(self.details),
            "config": p.config.to_dict(), "config_hash": p.config.config_hash,
            "software": software_versions(), "machine": machine_description(),
        }


# ------------------------------------------------------------------------------------------------------------
# from a configuration to the engine's events
# ------------------------------------------------------------------------------------------------------------
def _collective(system, nodes: int, rpn: int, algorithm: str, op: str, nbytes: float, label: str) -> Collective:
    return Collective(system, nodes, rpn, algorithm, op, float(nbytes), label)


def _auto_collective(system, nodes: int, rpn: int, op: str, nbytes: float, label: str) -> Collective | None:
    """The collective the analytic model prices for ``op`` (``auto``: the fastest algorithm at this size)."""
    if nodes * rpn <= 1 or nbytes <= 0:
        return None
    alg = best_profiles(system, nodes, rpn, "auto", [nbytes], op=op)[1][0]
    return _collective(system, nodes, rpn, alg, op, nbytes, label)


def _optimizer_plan(cfg: RunConfig, system, nodes: int, rpn: int, total_s: float,
                    details: Mapping[str, float], overhead_s: float = 0.0) -> OptimizerPlan:
    """The optimizer's events; ``overhead_s`` (serial per-step executor work) is added to every step."""
    if cfg.optimizer != "kfac":
        return OptimizerPlan(step_compute_s=float(total_s) + overhead_s)
    opts = get_optimizer("kfac").resolve_options(cfg.optimizer_options, cfg.source)
    T, sched = int(opts["refresh_interval"]), tuple(opts["refresh_schedule"])
    ag_bytes = float(details["allgather_bytes"])
    step_compute = float(details["per_step_s"]) - float(details["allgather_s"]) + overhead_s
    rs_bytes = float(details["factor_comm_bytes_per_refresh"])
    refresh_compute = float(details["factor_compute_s_per_refresh"]) + float(details["bn_fisher_s_per_refresh"])
    inversion = float(details["inversion_s_per_refresh"])
    # anything of the analytic per-refresh cost not itemised above is charged as compute (robustness)
    rest = float(details["per_refresh_s"]) - refresh_compute - inversion \
        - float(details["reduce_scatter_s_per_refresh"])
    refresh_compute += max(rest, 0.0)

    def is_refresh(i: int) -> bool:
        return count_refreshes(T, sched, i + 1) > count_refreshes(T, sched, i)

    return OptimizerPlan(step_compute_s=step_compute,
                         allgather=(_collective(system, nodes, rpn, "ring", "allgather", ag_bytes,
                                                "all-gather preconditioned gradients")   # the executor's ring
                                    if nodes * rpn > 1 and ag_bytes > 0 else None),
                         refresh_compute_s=refresh_compute,
                         refresh_collective=_auto_collective(system, nodes, rpn, "reduce_scatter", rs_bytes,
                                                             "reduce-scatter K-FAC factors"),
                         refresh_inversion_s=inversion, is_refresh=is_refresh)


def build_engine_model(cfg: RunConfig, iterations: int, prediction: Prediction | None = None
                       ) -> tuple[EngineModel, Prediction]:
    """The engine's events for ``cfg`` (and the analytic prediction they come from)."""
    pred = prediction or predict(cfg)
    r = resolve(cfg)
    cfg, system, table = r.cfg, r.system, r.table
    nodes, rpn, ranks = cfg.nodes, r.ranks_per_node, r.ranks
    it = iteration_model(table, system, nodes, rpn, [r.per_device_batch], precision=cfg.precision,
                         algorithm=cfg.allreduce, bucket_bytes=cfg.bucket_bytes, overlap=cfg.overlap,
                         optimizer=cfg.optimizer, optimizer_options=cfg.optimizer_options, source=cfg.source)
    steps = int(it.accumulation_steps[0])
    # per-layer compute at the micro-batch on this rank's device share, and the buckets: iteration_model's
    fwd = np.asarray(it.fwd_layer_s[0], dtype=float)
    bwd_rev = np.asarray(it.bwd_layer_s[0][::-1], dtype=float)
    bucket_bytes, layer_bucket = it.bucket_nbytes, it.layer_bucket
    n_buckets = len(bucket_bytes)
    lb_rev = layer_bucket[::-1]
    bucket_end = np.array([int(np.nonzero(lb_rev == k)[0][-1]) for k in range(n_buckets)], dtype=np.int64)
    buckets: tuple[Collective, ...] = ()
    if ranks > 1 and n_buckets:
        buckets = tuple(_collective(system, nodes, rpn, alg, "allreduce", nb, f"allreduce bucket {k}")
                        for k, (alg, nb) in enumerate(zip(it.algorithms, bucket_bytes)))
    # the calibrated executor overheads (per-step bookkeeping, bucket copies) are serial work of each step:
    # the engine spends them in the optimizer phase; the breakdown reports them apart
    overhead = float(it.overhead_s[0]) if it.overhead_s is not None else 0.0
    optimizer = _optimizer_plan(cfg, system, nodes, rpn, float(it.optimizer_s[0]),
                                it.optimizer_details[0] if it.optimizer_details else {}, overhead)
    # evaluation and start-up, as predict() counts them
    n_evals = int(pred.details.get("evaluations", 0))
    fwd_per_image = pred.breakdown["forward_s"] / (pred.details["micro_batch"] * pred.details["accumulation_steps"])
    eval_s = math.ceil(cfg.val_images / ranks) * fwd_per_image
    ipe, every = pred.iterations_per_epoch, cfg.eval_every_epochs
    eval_after = set()
    for i in range(iterations):
        before = math.floor(i / ipe / every + 1e-9)
        after = math.floor((i + 1) / ipe / every + 1e-9)
        if after > before and after <= n_evals:
            eval_after.add(i)
    startup = _auto_collective(system, nodes, rpn, "broadcast", table.gradient_bytes, "broadcast parameters")
    model = EngineModel(ranks=ranks, accumulation_steps=steps, fwd_layer_s=fwd, bwd_layer_s=bwd_rev,
                        layer_names=tuple(l.name for l in table.layers), bucket_end=bucket_end, buckets=buckets,
                        overlap=cfg.overlap, optimizer=optimizer, io_s=float(it.io_s[0]), eval_s=eval_s,
                        eval_after=frozenset(eval_after), eval_at_end=n_evals > 0, startup=startup,
                        system=system, nodes=nodes, ranks_per_node=rpn)
    return model, pred


NETWORK_MODELS = ("auto", "flows")


def _check_options(seed: Any, iterations: Any, background_gbps: Any, max_inflight_buckets: Any,
                   network: Any = "auto") -> None:
    if network not in NETWORK_MODELS:
        raise ConfigError(_SOURCE, "network", network, f"must be one of {', '.join(NETWORK_MODELS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(_SOURCE, "seed", seed, "must be an integer >= 0")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise ConfigError(_SOURCE, "iterations", iterations, "must be an integer >= 1")
    if isinstance(background_gbps, bool) or not isinstance(background_gbps, (int, float)) \
            or not math.isfinite(background_gbps) or background_gbps < 0:
        raise ConfigError(_SOURCE, "background_gbps", background_gbps, "must be a finite number >= 0")
    if isinstance(max_inflight_buckets, bool) or not isinstance(max_inflight_buckets, (int, np.integer)) \
            or max_inflight_buckets < 1:
        raise ConfigError(_SOURCE, "max_inflight_buckets", max_inflight_buckets, "must be an integer >= 1")


def _calibrated_jitter(model: EngineModel) -> tuple[Variability, EngineModel] | None:
    """Normal jitter with the system's calibrated compute CV at this rank sharing, and ``model`` with its
    compute divided by the expected slowest of the :func:`~perfmodel.predict.measured_together` ranks: the
    calibrated compute is already that slowest rank's time, so each rank's nominal time is that much less and
    the sampled slowest of all ranks averages the calibrated time again on the calibrated node (None without
    a calibration or jitter)."""
    cal = model.system.calibration
    if cal is None:
        return None
    share = model.system.ranks_sharing_device(model.ranks_per_node)
    cv = cal.jitter_for(share)
    if cv <= 0:
        return None
    var = Variability("normal", cv)
    e = var.expected_max(measured_together(share, model.ranks, cal.nodes_per_machine))
    return var, dataclasses.replace(model, fwd_layer_s=model.fwd_layer_s / e, bwd_layer_s=model.bwd_layer_s / e)


def simulate(cfg: RunConfig, *, seed: int = 0, iterations: int | None = None, jitter: Variability | None = None,
             trace_path: str | Path | None = None, background_gbps: float = 0.0, max_inflight_buckets: int = 1,
             network: str = "auto", prediction: Prediction | None = None) -> SimulationResult:
    """Discrete-event simulation of ``cfg``.

    Parameters
    ----------
    cfg : RunConfig
        The run configuration (the same one ``predict`` takes).
    seed : int
        Seed of the random generator (same seed, same result).
    iterations : int, optional
        Iterations to simulate (default :data:`DEFAULT_ITERATIONS`).
    jitter : Variability, optional
        Compute jitter and stragglers (default: the system's calibrated compute jitter, normal, when it has
        one, else none).
    trace_path : path, optional
        Write a Chrome/Perfetto trace of the simulated iterations there.
    background_gbps : float
        Background traffic demanded on every inter-node link, Gbit/s per direction (elastic: it gets at most
        its max-min fair share).
    max_inflight_buckets : int
        Bucket allreduces that may run at once (1: the analytic model's rule).
    network : {"auto", "flows"}
        ``"flows"``: every collective runs as flows on the links (max-min fair sharing). ``"auto"``: the same
        when collectives can contend (background traffic or ``max_inflight_buckets > 1``); otherwise a
        collective is always alone on an idle network and takes its analytic profile time, which is exactly
        what its flows take alone (tested), without building the per-step link loads.
    prediction : Prediction, optional
        The analytic prediction of ``cfg`` when already computed.

    Returns
    -------
    SimulationResult
    """
    K = DEFAULT_ITERATIONS if iterations is None else iterations
    _check_options(seed, K, background_gbps, max_inflight_buckets, network)
    model, pred = build_engine_model(cfg, int(K), prediction)
    calibrated = _calibrated_jitter(model) if jitter is None else None
    if calibrated is not None:
        var, model = calibrated
    else:
        var = jitter or NO_VARIABILITY
    rng = np.random.default_rng(int(seed))
    tw = TraceWriter() if trace_path is not None else None
    res: EngineResult = run_engine(model, int(K), var, rng, background_Bps=float(background_gbps) * 1e9 / 8,
                                   max_inflight_buckets=int(max_inflight_buckets), network=network, trace=tw)
    samples = res.iteration_s
    it_mean = float(samples.mean())
    cfg = pred.config
    share = model.system.ranks_sharing_device(model.ranks_per_node)
    # the overlapped collectives' spans stretch on a CPU as in predict (the backward's layers already did)
    comm_total = res.comm_total_s + overlap_stretch_s(model.system, share, cfg.overlap, res.comm_total_s,
                                                      res.comm_exposed_s)
    breakdown = {
        "compute_s": float((res.forward_s + res.backward_s).mean()), "forward_s": float(res.forward_s.mean()),
        "backward_s": float(res.backward_s.mean()), "comm_total_s": float(comm_total.mean()),
        "comm_exposed_s": float(res.comm_exposed_s.mean()), "optimizer_s": float(res.optimizer_s.mean()),
        "io_s": float(res.data_wait_s.mean()), "sync_wait_s": float(res.sync_wait_s.mean()),
    }
    if "overhead_s" in pred.breakdown:   # split the serial step phase back into optimizer and overheads
        breakdown["overhead_s"] = pred.breakdown["overhead_s"]
        breakdown["optimizer_s"] = max(0.0, breakdown["optimizer_s"] - breakdown["overhead_s"])
    n_evals = int(pred.details.get("evaluations", 0))
    eval_s = n_evals * float(res.eval_s.mean()) if n_evals and res.eval_s.size else 0.0
    training_s = pred.iterations * it_mean
    run_breakdown = {"training_s": training_s, "eval_s": eval_s, "startup_s": res.startup_s}
    images_per_s = cfg.batch / it_mean
    scaling = pred.scaling_efficiency * pred.iteration_s / it_mean
    simulation = {
        "iterations_simulated": int(K), "seed": int(seed), "variability": var.to_dict(),
        "background_gbps": float(background_gbps), "max_inflight_buckets": int(max_inflight_buckets),
        "network_model": network,
        "representation": res.representation, "mean_max_factor": float(res.max_factor.mean()),
        "expected_max_factor": var.expected_max(pred.ranks), "kfac_refreshes": res.refreshes,
        "evaluations_simulated": int(res.eval_s.size), "simulated_span_s": res.end_s,
        "network": dict(res.network), "trace": str(trace_path) if trace_path is not None else None,
    }
    details = {"buckets": len(model.buckets), "bucket_bytes": [c.nbytes for c in model.buckets],
               "bucket_algorithms": [c.algorithm for c in model.buckets],
               "micro_batch": pred.details["micro_batch"], "accumulation_steps": model.accumulation_steps,
               "device": pred.details["device"], "evaluations": n_evals,
               "iteration_vs_analytic": it_mean / pred.iteration_s - 1.0}
    result = SimulationResult(prediction=pred, iteration_samples_s=tuple(float(x) for x in samples),
                              iteration_s=it_mean, iteration_p50_s=float(np.percentile(samples, 50)),
                              iteration_p99_s=float(np.percentile(samples, 99)), images_per_s=images_per_s,
                              scaling_efficiency=scaling, breakdown=breakdown, run_breakdown=run_breakdown,
                              time_to_train_s=training_s + eval_s + res.startup_s, simulation=simulation,
                              details=details)
    if tw is not None:
        tw.write(trace_path, other={"tool": "perfmodel simulate", "config_hash": cfg.config_hash,
                                    "system": pred.system, "ranks": pred.ranks, "seed": int(seed),
                                    "iterations_simulated": int(K)})
    return result


def tail_vs_ranks(cfg: RunConfig, ranks: Iterable[int], *, seed: int = 0, iterations: int | None = None,
                  jitter: Variability | None = None, background_gbps: float = 0.0,
                  max_inflight_buckets: int = 1, network: str = "auto") -> list[dict[str, Any]]:
    """Step-time distribution against the number of ranks (weak scaling: the per-device batch of ``cfg``).

    Each row: ``ranks``, ``nodes``, ``iteration_s`` (mean), ``iteration_p50_s``, ``iteration_p99_s``,
    ``analytic_iteration_s`` (no variability), ``p99_excess_s`` (p99 minus the analytic iteration),
    ``expected_max_factor`` (``E[max of N factors]``) and ``mean_max_factor`` (its simulated mean).
    """
    r = resolve(cfg)
    per_device = r.per_device_batch
    rows = []
    for n in ranks:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n % r.ranks_per_node:
            raise ConfigError(_SOURCE, "tail_ranks", n,
                              f"must be a positive multiple of the {r.ranks_per_node} ranks per node")
        c = r.cfg.replace(nodes=int(n) // r.ranks_per_node, batch=per_device * int(n))
        res = simulate(c, seed=seed, iterations=iterations, jitter=jitter, background_gbps=background_gbps,
                       max_inflight_buckets=max_inflight_buckets, network=network)
        a = res.prediction.iteration_s
        rows.append({"ranks": int(n), "nodes": c.nodes, "iteration_s": res.iteration_s,
                     "iteration_p50_s": res.iteration_p50_s, "iteration_p99_s": res.iteration_p99_s,
                     "analytic_iteration_s": a, "p99_excess_s": res.iteration_p99_s - a,
                     "p99_over_p50": res.iteration_p99_s / res.iteration_p50_s,
                     "expected_max_factor": res.simulation["expected_max_factor"],
                     "mean_max_factor": res.simulation["mean_max_factor"]})
    return rows
