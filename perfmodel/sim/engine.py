"""The discrete-event engine: simpy processes for the iterations of a data-parallel training run.

Events of one iteration (per micro-batch of gradient accumulation, the overlap on the last one, as the
analytic model has it)::

    data: take the prefetched batch (a loader process prepares batches ``io_s`` each, two ahead)
    forward                      one compute interval
    backward                     layer by layer; when the last gradient of a bucket is ready the bucket
                                 is handed to the communication process
    bucket collectives           a bucket's allreduce starts when it is full and fewer than
                                 ``max_inflight_buckets`` collectives are in flight (1: the analytic rule,
                                 "the previous bucket's allreduce has ended"); each collective runs its
                                 phases on the flow network (:mod:`perfmodel.sim.flows`)
    optimizer step               after the last allreduce; K-FAC: at refresh iterations the factor
                                 computation, the factor reduce-scatter (a collective on the network) and the
                                 inversion, then every iteration the preconditioning and update (and the
                                 preconditioned-gradient all-gather when the optimizer model counts one)
    evaluation                   after the iterations that end an evaluation epoch

Start-up (the parameter broadcast) is simulated once before the first iteration.

Representative ranks (symmetry)
-------------------------------
All ranks are identical up to their compute factor (:mod:`perfmodel.sim.variability`): the ready time of
every bucket on rank ``r`` is ``factor_r`` times the same compute, so a synchronous collective waits for
the rank with the largest factor, ``M = max_r factor_r``, and only that *critical rank* needs to be
simulated. ``M`` is drawn directly for large ``N``; with at most ``EXPLICIT_MAX_RANKS`` ranks every rank's
factor is drawn (and every rank gets a trace track). Collectives are simulated once for all ranks
(aggregated flows); the network sees every flow through the step's link loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import simpy

from hardware.specs import SystemSpec
from perfmodel.network import collective_profile
from perfmodel.sim.flows import CollectivePlan, FlowNetwork, collective_plan, link_table
from perfmodel.sim.trace import TraceWriter
from perfmodel.sim.variability import Variability

__all__ = ["EXPLICIT_MAX_RANKS", "TRACE_LAYER_ITERATIONS", "Collective", "OptimizerPlan", "EngineModel",
           "EngineResult", "run_engine"]

#: up to this many ranks every rank's factor is drawn (and traced); above it the maximum is drawn directly
EXPLICIT_MAX_RANKS = 8
#: iterations whose compute is traced layer by layer (later ones as one interval per pass)
TRACE_LAYER_ITERATIONS = 3
#: batches the input pipeline prepares ahead
PREFETCH_BATCHES = 2


@dataclass(frozen=True, eq=False)
class Collective:
    """One collective to run: ``op`` with ``algorithm`` over all ranks of the cluster, ``nbytes`` bytes."""

    system: SystemSpec
    nodes: int
    ranks_per_node: int
    algorithm: str
    op: str
    nbytes: float
    label: str

    @property
    def p(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def active(self) -> bool:
        return self.p > 1 and self.nbytes > 0

    def profile_time_s(self) -> float:
        """Analytic time (:func:`perfmodel.network.collective_profile`): the time alone on an idle network."""
        return float(collective_profile(self.system, self.nodes, self.ranks_per_node, self.algorithm,
                                        self.op).time_s(self.nbytes))

    def plan(self) -> CollectivePlan:
        """The collective's phases on the flow network (built on first use, cached)."""
        return collective_plan(self.system, self.nodes, self.ranks_per_node, self.algorithm, self.op)


@dataclass(frozen=True)
class OptimizerPlan:
    """The optimizer step as events: ``step_compute_s`` every iteration (plus ``allgather``), and at refresh
    iterations ``refresh_compute_s`` then ``refresh_collective`` then ``refresh_inversion_s``."""

    step_compute_s: float
    allgather: Collective | None = None
    refresh_compute_s: float = 0.0
    refresh_collective: Collective | None = None
    refresh_inversion_s: float = 0.0
    is_refresh: Callable[[int], bool] = field(default=lambda i: False, compare=False)


@dataclass(frozen=True, eq=False)
class EngineModel:
    """Everything the engine needs, in seconds and bytes (built by :mod:`perfmodel.simulate`)."""

    ranks: int
    accumulation_steps: int
    fwd_layer_s: np.ndarray          # (L,) forward order, one micro-batch
    bwd_layer_s: np.ndarray          # (L,) backward execution order (reverse forward), one micro-batch
    layer_names: tuple[str, ...]     # forward order
    bucket_end: np.ndarray           # (K,) index in backward order of each bucket's last gradient
    buckets: tuple[Collective, ...]  # (K,)
    overlap: bool
    optimizer: OptimizerPlan
    io_s: float
    eval_s: float                    # nominal evaluation time (factor 1)
    eval_after: frozenset[int]       # iterations after which an evaluation runs
    eval_at_end: bool                # evaluate after the window when no evaluation fell inside it
    startup: Collective | None
    system: SystemSpec
    nodes: int
    ranks_per_node: int


@dataclass(frozen=True, eq=False)
class EngineResult:
    """Per-iteration records (arrays of shape (K,) unless noted), seconds."""

    iteration_s: np.ndarray
    data_wait_s: np.ndarray
    forward_s: np.ndarray
    backward_s: np.ndarray
    comm_total_s: np.ndarray
    comm_exposed_s: np.ndarray
    optimizer_s: np.ndarray
    sync_wait_s: np.ndarray
    max_factor: np.ndarray
    eval_s: np.ndarray               # (E,) duration of each simulated evaluation
    startup_s: float
    refreshes: int
    representation: str
    network: dict
    end_s: float


class _Recorder:
    def __init__(self, K: int, n_buckets: int):
        self.start = np.zeros(K)
        self.c0 = np.zeros(K)
        self.b0 = np.zeros(K)
        self.bwd_end = np.zeros(K)
        self.comm_end = np.zeros(K)
        self.end = np.zeros(K)
        self.opt = [[] for _ in range(K)]          # (name, start, end)
        self.coll: list[tuple[str, int, float, float, dict]] = []  # (label, tid, start, end, args)
        self.bucket_dur = np.zeros((K, n_buckets))
        self.evals: list[tuple[int, float, float]] = []  # (eval index, start, end)
        self.startup = (0.0, 0.0)


def _draw_factors(var: Variability, rng: np.random.Generator, ranks: int, K: int, E: int):
    """Factors of the critical rank (K,), of the traced ranks (K, R), the same for evaluations, and the
    mean rank factor per iteration (K,)."""
    if ranks <= EXPLICIT_MAX_RANKS:
        X = var.sample(rng, (K, ranks))
        Xe = var.sample(rng, (E, ranks))
        return X.max(axis=1), X, Xe.max(axis=1), Xe, X.mean(axis=1), "explicit"
    M = var.sample_max(rng, ranks, K)
    Me = var.sample_max(rng, ranks, E)
    med = var.j_median()
    X = np.stack([M, np.minimum(med, M)], axis=1)
    Xe = np.stack([Me, np.minimum(med, Me)], axis=1)
    return M, X, Me, Xe, np.full(K, var.mean_factor), "representative"


def _collective(env: simpy.Environment, net: FlowNetwork | None, c: Collective):
    """Run collective ``c``: on the flow network its phases (latency, transfer, reduction); without one (no
    contention possible) one interval of its analytic time, which is what its phases take alone."""
    if net is None:
        t = c.profile_time_s()
        if t > 0:
            yield env.timeout(t)
        return
    plan, n = c.plan(), c.nbytes
    for ph in plan.phases:
        if ph.step is not None:
            lat = ph.repeat * ph.step.latency_s
            if lat > 0:
                yield env.timeout(lat)
            b = ph.repeat * ph.send_frac * n
            if b > 0:
                yield net.transfer(ph.step, b)
        red = ph.repeat * ph.reduce_frac * n * plan.gamma_s_per_B
        if red > 0:
            yield env.timeout(red)


def run_engine(model: EngineModel, iterations: int, variability: Variability, rng: np.random.Generator, *,
               background_Bps: float = 0.0, max_inflight_buckets: int = 1, network: str = "auto",
               trace: TraceWriter | None = None, rank_labels: Sequence[str] | None = None) -> EngineResult:
    """Simulate ``iterations`` iterations of ``model``; fill ``trace`` when given.

    ``network``: ``"flows"`` runs every collective on the flow network; ``"auto"`` does so only when
    collectives can contend (background traffic, or more than one bucket collective in flight) and otherwise
    gives each collective its analytic time -- what its flows take alone on an idle network.
    """
    K = int(iterations)
    nb = len(model.buckets)
    env = simpy.Environment()
    flow_level = network == "flows" or background_Bps > 0 or max_inflight_buckets > 1
    net = None
    if flow_level and model.nodes * model.ranks_per_node > 1:
        net = FlowNetwork(env, link_table(model.system, model.nodes), background_Bps)
    slots = simpy.Resource(env, capacity=max(1, int(max_inflight_buckets)))
    E = len(model.eval_after) + 1
    M, X, Me, Xe, mean_x, representation = _draw_factors(variability, rng, model.ranks, K, E)
    rec = _Recorder(K, nb)
    steps = model.accumulation_steps
    F = float(model.fwd_layer_s.sum())
    B = float(model.bwd_layer_s.sum())
    bwd_layers = [float(x) for x in model.bwd_layer_s]
    # layer (backward order) -> bucket it fills (none without collectives: one rank)
    bucket_at = {int(j): k for k, j in enumerate(model.bucket_end)} if nb else {}
    opt = model.optimizer
    refreshes = 0

    store = None
    if model.io_s > 0:
        store = simpy.Store(env, capacity=PREFETCH_BATCHES)

        def loader():
            for _ in range(K):
                yield env.timeout(model.io_s)
                yield store.put(1)
        env.process(loader())

    def bucket_proc(i: int, k: int, req):
        c = model.buckets[k]
        t0 = env.now
        yield from _collective(env, net, c)
        slots.release(req)
        rec.bucket_dur[i, k] = env.now - t0
        rec.coll.append((c.label, 1 + k, t0, env.now, {"iteration": i, "bytes": c.nbytes,
                                                        "algorithm": c.algorithm}))

    def comm_iteration(i: int, ready: list):
        procs = []
        for k in range(nb):
            yield ready[k]
            req = slots.request()
            yield req
            procs.append(env.process(bucket_proc(i, k, req)))
        yield env.all_of(procs)

    def run_collective(c: Collective | None, tid: int, args: dict):
        if c is None or not c.active:
            return
        t0 = env.now
        yield from _collective(env, net, c)
        rec.coll.append((c.label, tid, t0, env.now, {**args, "bytes": c.nbytes, "algorithm": c.algorithm}))

    def evaluation(j: int):
        t0 = env.now
        d = model.eval_s * float(Me[j])
        if d > 0:
            yield env.timeout(d)
        rec.evals.append((j, t0, env.now))

    def trainer():
        nonlocal refreshes
        if model.startup is not None and model.startup.active:
            t0 = env.now
            yield from run_collective(model.startup, 0, {"phase": "start-up"})
            rec.startup = (t0, env.now)
        n_eval = 0
        for i in range(K):
            m = float(M[i])
            rec.start[i] = env.now
            if store is not None:
                yield store.get()
            rec.c0[i] = env.now
            if steps > 1:
                yield env.timeout(m * (steps - 1) * (F + B))
            if F > 0:
                yield env.timeout(m * F)
            rec.b0[i] = env.now
            ready = [env.event() for _ in range(nb)]
            done = env.process(comm_iteration(i, ready)) if nb else None
            for j, d in enumerate(bwd_layers):     # backward, layer by layer
                if d > 0:
                    yield env.timeout(m * d)
                k = bucket_at.get(j)
                if k is not None and model.overlap:
                    ready[k].succeed()             # the bucket's last gradient is ready
            rec.bwd_end[i] = env.now
            if not model.overlap:
                for ev in ready:
                    ev.succeed()
            if done is not None:
                yield done
            rec.comm_end[i] = env.now
            # ---- optimizer ----
            if opt.is_refresh(i):
                refreshes += 1
                t = env.now
                if opt.refresh_compute_s > 0:
                    yield env.timeout(opt.refresh_compute_s)
                    rec.opt[i].append(("K-FAC factors", t, env.now))
                t = env.now
                yield from run_collective(opt.refresh_collective, 0, {"iteration": i})
                if env.now > t:
                    rec.opt[i].append(("reduce-scatter factors", t, env.now))
                t = env.now
                if opt.refresh_inversion_s > 0:
                    yield env.timeout(opt.refresh_inversion_s)
                    rec.opt[i].append(("K-FAC inversion", t, env.now))
            t = env.now
            if opt.step_compute_s > 0:
                yield env.timeout(opt.step_compute_s)
                rec.opt[i].append(("optimizer update", t, env.now))
            t = env.now
            yield from run_collective(opt.allgather, 0, {"iteration": i})
            if env.now > t:
                rec.opt[i].append(("all-gather", t, env.now))
            rec.end[i] = env.now
            if i in model.eval_after:
                yield from evaluation(n_eval)
                n_eval += 1
        if model.eval_at_end and n_eval == 0:
            yield from evaluation(n_eval)

    env.process(trainer())
    env.run()

    iteration = rec.end - rec.start
    data_wait = rec.c0 - rec.start
    forward = M * steps * F
    backward = M * steps * B
    comm_total = rec.bucket_dur.sum(axis=1)
    exposed = np.maximum(rec.comm_end - rec.bwd_end, 0.0)
    optimizer = rec.end - rec.comm_end
    sync_wait = (M - mean_x) * steps * (F + B)
    eval_s = np.array([e - s for _, s, e in rec.evals])
    if trace is not None:
        _fill_trace(trace, model, rec, X, Xe, M, K, rank_labels, representation)
    return EngineResult(iteration_s=iteration, data_wait_s=data_wait, forward_s=forward, backward_s=backward,
                        comm_total_s=comm_total, comm_exposed_s=exposed, optimizer_s=optimizer,
                        sync_wait_s=sync_wait, max_factor=M, eval_s=eval_s,
                        startup_s=rec.startup[1] - rec.startup[0], refreshes=refreshes,
                        representation=representation,
                        network={"model": "flows" if net is not None else "analytic profile (no contention)",
                                 "rate_solves": net.rate_solves if net is not None else 0,
                                 "max_concurrent_groups": net.max_concurrent if net is not None else 0},
                        end_s=float(env.now))


# ------------------------------------------------------------------------------------------------------------
# trace
# ------------------------------------------------------------------------------------------------------------
_T_COMPUTE, _T_WAIT, _T_OPT, _T_DATA, _T_EVAL = 1, 2, 3, 4, 5


def _fill_trace(tw: TraceWriter, model: EngineModel, rec: _Recorder, X: np.ndarray, Xe: np.ndarray,
                M: np.ndarray, K: int, labels: Sequence[str] | None, representation: str) -> None:
    nb = len(model.buckets)
    tw.name_process(0, "network (collectives)", 0)
    tw.name_thread(0, 0, "start-up / optimizer collectives")
    for k in range(nb):
        tw.name_thread(0, 1 + k, f"bucket {k} ({model.buckets[k].nbytes / 1e6:.1f} MB)")
    for label, tid, s, e, args in rec.coll:
        tw.complete(label, "comm", 0, tid, s, e - s, args)
    R = X.shape[1]
    if labels is None:
        labels = [f"rank {r}" for r in range(R)] if representation == "explicit" else \
            ["slowest rank (max of N factors)", "median rank"]
    steps = model.accumulation_steps
    fwd, bwd = model.fwd_layer_s, model.bwd_layer_s
    F, B = float(fwd.sum()), float(bwd.sum())
    names_f = model.layer_names
    names_b = names_f[::-1]
    for r in range(R):
        pid = 1 + r
        tw.name_process(pid, labels[r], pid)
        for tid, name in ((_T_COMPUTE, "compute"), (_T_WAIT, "waiting"), (_T_OPT, "optimizer"),
                          (_T_DATA, "input pipeline"), (_T_EVAL, "evaluation")):
            tw.name_thread(pid, tid, name)
        if rec.startup[1] > rec.startup[0]:
            tw.complete("start-up broadcast", "wait", pid, _T_WAIT, rec.startup[0], rec.startup[1] - rec.startup[0])
        for i in range(K):
            x = float(X[i, r])
            args = {"iteration": i, "factor": round(x, 6)}
            tw.complete("wait for batch", "data", pid, _T_DATA, rec.start[i], rec.c0[i] - rec.start[i], args)
            t = rec.c0[i]
            for s in range(steps):
                last = s == steps - 1
                if i < TRACE_LAYER_ITERATIONS:
                    for name, d in zip(names_f, fwd):
                        tw.complete(f"fwd {name}", "compute", pid, _T_COMPUTE, t, x * d, args)
                        t += x * d
                    for name, d in zip(names_b, bwd):
                        tw.complete(f"bwd {name}", "compute", pid, _T_COMPUTE, t, x * d, args)
                        t += x * d
                else:
                    tw.complete("forward", "compute", pid, _T_COMPUTE, t, x * F, args)
                    t += x * F
                    tw.complete("backward" + ("" if last else f" (micro-batch {s})"), "compute", pid, _T_COMPUTE,
                                t, x * B, args)
                    t += x * B
            slowest_end = rec.bwd_end[i]
            t_end = min(t, slowest_end)
            tw.complete("wait for slowest rank", "wait", pid, _T_WAIT, t_end, slowest_end - t_end, args)
            tw.complete("wait for gradients (exposed allreduce)", "wait", pid, _T_WAIT, slowest_end,
                        rec.comm_end[i] - slowest_end, args)
            for name, s0, e0 in rec.opt[i]:
                tw.complete(name, "optimizer", pid, _T_OPT, s0, e0 - s0, {"iteration": i})
        for j, s0, e0 in rec.evals:
            x = float(Xe[j, r])
            own = model.eval_s * x
            tw.complete("evaluation", "eval", pid, _T_EVAL, s0, own, {"evaluation": j, "factor": round(x, 6)})
            tw.complete("wait for slowest rank", "wait", pid, _T_WAIT, s0 + own, e0 - s0 - own, {"evaluation": j})
