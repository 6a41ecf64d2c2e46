"""Flow-level network for the simulator: collectives as flows over the topology graph's directed links, with
max-min fair sharing of every link among the flows that cross it.

From an algorithm to flows
--------------------------
A collective is its algorithm's step patterns (:meth:`perfmodel.collectives.base.Algorithm.steps`), placed on
the cluster graph exactly as :func:`perfmodel.network.collective_profile` places them (block placement,
:func:`perfmodel.network.rank_endpoints`; indices ``>= p`` co-located with ranks; flows between ranks sharing
a device priced at the node's shared-memory link). Each step becomes an **aggregated flow group**
(:class:`StepLoad`): the per-directed-link load of its flows (:func:`hardware.topology.routing.link_loads`,
spread routing, fractional loads) and its latency (:func:`hardware.topology.routing.max_flow_time` at 0
bytes, the slowest path). ``repeat`` identical steps are one *phase* of ``repeat`` times the bytes and the
latency (APPROXIMATION under contention only: the repeats' latencies are paid up front instead of
interleaved with their transfers; alone on the network the time is identical).

Sharing (:class:`FlowNetwork`)
------------------------------
The groups in flight (several buckets' collectives, optimizer collectives, background traffic) share the
links max-min fairly, computed by progressive filling (:func:`max_min_rates`) each time a group starts or
finishes; every flow of a group moves at the group's rate. Background traffic is one elastic flow per
inter-node directed link (a link between different nodes or to a switch), demanding ``background_Bps``:
it takes its fair share of a link, never more than it demands.

APPROXIMATION (aggregated flows): all flows of a step progress at the rate of the step's bottleneck link,
so a flow that could go faster elsewhere does not hand bandwidth to other groups (the step finishes when its
slowest flow does, which is what a synchronous step waits for). Alone on an idle network a step then takes
``latency + bytes * max_e(load_e / bw_e)`` -- the per-step cost of :func:`perfmodel.network.collective_profile`,
so a collective alone reproduces the analytic profile (the simulator's equivalence with the predictor).
That per-step cost is an upper bound of the slowest single flow's ``max_f(latency_f + bytes * ratio_f)``
when the flow with the largest latency is not the most loaded one; :func:`slowest_flow_gap` measures the
difference. Measured (tests/test_simulate.py): zero for ring, halving-doubling, recursive doubling,
hierarchical and double binary tree on big-basin-p100, stampede2-knl, marenostrum4 and tsubame3, and for
halving-doubling / recursive doubling on dgx1-v100; on dgx1-v100 the ring is over-charged by up to ~4 % at
25 MB (64 ranks: two-hop NVLink paths have the largest latency, the NIC flows the largest load), the
hierarchical and 2D-torus allreduces by ~0.5 %. The simulator keeps the bound so that it reproduces the
analytic model exactly; a latency-class split of each step would remove the gap.

Cost: a :class:`CollectivePlan` is built once per (system, nodes, ranks per node, algorithm, operation) and
cached; the rates of a set of groups are memoised, so an iteration costs a few Python operations per phase.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Hashable

import numpy as np
import simpy

from hardware.specs import SystemSpec
from hardware.topology import link_loads, max_flow_time, route_fractions
from perfmodel.collectives import get_algorithm
from perfmodel.network import cluster_graph, rank_endpoints, reduce_gamma_s_per_B

__all__ = ["LinkTable", "StepLoad", "Phase", "CollectivePlan", "link_table", "collective_plan", "max_min_rates",
           "FlowNetwork", "slowest_flow_gap"]

_SHM = "<shared-memory>"


@dataclass(frozen=True, eq=False)
class LinkTable:
    """Directed links of a cluster graph as arrays: index of each ``(u, v)``, bandwidth, inter-node flag.

    The last entry is a virtual link for copies between ranks that share one device (the node's
    shared-memory bandwidth), as :func:`perfmodel.network.collective_profile` prices them.
    """

    index: dict
    bw_Bps: np.ndarray
    inter_node: np.ndarray
    shm_index: int
    #: memoised max-min rates: (step keys, background) -> per-group rates
    rate_cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_links(self) -> int:
        return int(self.bw_Bps.shape[0])


@functools.lru_cache(maxsize=32)
def link_table(system: SystemSpec, nodes: int) -> LinkTable:
    """The :class:`LinkTable` of ``nodes`` nodes of ``system`` (cached)."""
    G = cluster_graph(system, nodes)
    index: dict = {}
    bw: list[float] = []
    inter: list[bool] = []
    node_of = {n: d.get("node") for n, d in G.nodes(data=True)}
    for u, v, d in G.edges(data=True):
        nu, nv = node_of[u], node_of[v]
        crosses = nu is None or nv is None or nu != nv
        for e in ((u, v), (v, u)):
            index[e] = len(bw)
            bw.append(float(d["bw_Bps"]))
            inter.append(crosses)
    shm = len(bw)
    index[_SHM] = shm
    bw.append(float(system.node.intra.link_bw_Bps))
    inter.append(False)
    bw_a, inter_a = np.array(bw), np.array(inter, dtype=bool)
    bw_a.setflags(write=False)
    inter_a.setflags(write=False)
    return LinkTable(index=index, bw_Bps=bw_a, inter_node=inter_a, shm_index=shm)


@dataclass(frozen=True, eq=False)
class StepLoad:
    """One step of a collective as an aggregated flow group.

    Attributes
    ----------
    key : tuple
        Identity (system id, nodes, ranks per node, algorithm, operation, step number) used for memoising.
    links : np.ndarray
        Indices (into the :class:`LinkTable`) of the directed links the step's flows cross, sorted.
    load : np.ndarray
        Flows on each of those links (fractional with spread routing).
    latency_s : float
        Latency of the step's slowest path, seconds.
    slope_s_per_B : float
        Seconds per byte per flow alone on the idle network: ``max(load / bw)``.
    n_flows : int
        Number of flows between distinct endpoints.
    """

    key: tuple
    links: np.ndarray
    load: np.ndarray
    latency_s: float
    slope_s_per_B: float
    n_flows: int


@dataclass(frozen=True)
class Phase:
    """``repeat`` consecutive identical steps: a transfer of ``send_frac * n`` bytes per flow per step (``step``
    is None when the step only reduces) and a reduction of ``reduce_frac * n`` bytes per step."""

    step: StepLoad | None
    send_frac: float
    reduce_frac: float
    repeat: int


@dataclass(frozen=True, eq=False)
class CollectivePlan:
    """A collective (algorithm, operation, ranks) as phases on one cluster, with its reduction rate."""

    algorithm: str
    op: str
    p: int
    phases: tuple[Phase, ...]
    gamma_s_per_B: float
    links: LinkTable | None = field(default=None, repr=False)

    def alone_time_s(self, nbytes: float) -> float:
        """Seconds alone on an idle network: ``sum(repeat * (latency + send * n * slope + reduce * n * gamma))``
        -- the analytic profile's ``alpha + beta * n``."""
        if self.p <= 1:
            return 0.0
        t = 0.0
        for ph in self.phases:
            if ph.step is not None:
                t += ph.repeat * (ph.step.latency_s + ph.send_frac * nbytes * ph.step.slope_s_per_B)
            t += ph.repeat * ph.reduce_frac * nbytes * self.gamma_s_per_B
        return t


@functools.lru_cache(maxsize=256)
def collective_plan(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str,
                    op: str = "allreduce") -> CollectivePlan:
    """Phases of ``op`` with ``algorithm`` on ``nodes`` nodes of ``system`` (cached; mirrors
    :func:`perfmodel.network.collective_profile` step by step, keeping each step's link loads)."""
    p = nodes * ranks_per_node
    gamma = reduce_gamma_s_per_B(system)
    if p <= 1:
        return CollectivePlan(algorithm, op, p, (), gamma, None)
    alg = get_algorithm(algorithm)
    G = cluster_graph(system, nodes)
    table = link_table(system, nodes)
    eps = rank_endpoints(system, nodes, ranks_per_node)
    intra = system.node.intra
    phases: list[Phase] = []
    for k, st in enumerate(alg.steps(p, ranks_per_node=ranks_per_node, op=op)):
        if len(st.pairs) == 0:
            phases.append(Phase(None, st.send_frac, st.reduce_frac, st.repeat))
            continue
        src = [eps[i % p] for i in st.pairs[:, 0]]
        dst = [eps[i % p] for i in st.pairs[:, 1]]
        flows = [(s, d) for s, d in zip(src, dst) if s != d]
        loads: dict[Hashable, float] = {}
        lat = 0.0
        if flows:
            loads = dict(link_loads(G, flows))
            lat = max_flow_time(G, flows, 0.0)
        if len(flows) < len(src):  # ranks sharing a device: shared-memory copy
            lat = max(lat, intra.latency_s)
            loads[_SHM] = max(loads.get(_SHM, 0.0), 1.0)
        idx = np.fromiter((table.index[e] for e in loads), dtype=np.int64, count=len(loads))
        val = np.fromiter(loads.values(), dtype=float, count=len(loads))
        order = np.argsort(idx)
        idx, val = idx[order], val[order]
        slope = float(np.max(val / table.bw_Bps[idx])) if idx.size else 0.0
        key = (system.id, nodes, ranks_per_node, algorithm, op, k)
        phases.append(Phase(StepLoad(key, idx, val, float(lat), slope, len(flows)), st.send_frac, st.reduce_frac,
                            st.repeat))
    return CollectivePlan(algorithm, op, p, tuple(phases), gamma, table)


# ------------------------------------------------------------------------------------------------------------
# max-min fair sharing
# ------------------------------------------------------------------------------------------------------------
def max_min_rates(groups: list[tuple[np.ndarray, np.ndarray]], bw_Bps: np.ndarray,
                  background_links: np.ndarray | None = None, background_Bps: float = 0.0) -> np.ndarray:
    """Per-flow rate (bytes/s) of each flow group under max-min fair sharing (progressive filling).

    Parameters
    ----------
    groups : list of (links, load)
        For each group, the link indices it crosses and its flow count on each (every flow of a group moves
        at the group's rate).
    bw_Bps : array
        Capacity of every link (indexed by the link indices), bytes/s per direction.
    background_links : bool array, optional
        Links that carry one elastic background flow demanding at most ``background_Bps``.
    background_Bps : float
        Demand of each background flow (0: no background).

    Returns
    -------
    np.ndarray
        Rate of one flow of each group. A group alone gets ``min_e bw_e / load_e`` (no background).
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0)
    union = np.unique(np.concatenate([g[0] for g in groups]))
    A = np.zeros((n, union.size))
    for i, (links, load) in enumerate(groups):
        np.add.at(A[i], np.searchsorted(union, links), load)
    rem = bw_Bps[union].astype(float)
    bg = np.zeros(union.size, dtype=bool)
    if background_Bps > 0 and background_links is not None:
        bg = background_links[union].copy()
    rate = np.zeros(n)
    unfrozen = np.ones(n, dtype=bool)
    level = 0.0
    tol = 1e-12
    while unfrozen.any():
        demand = A[unfrozen].sum(axis=0) + bg
        used = demand > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            room = np.where(used, rem / np.where(used, demand, 1.0), np.inf)
        step_link = float(room.min())
        step_bg = background_Bps - level if bg.any() else np.inf
        step = max(min(step_link, step_bg), 0.0)
        level += step
        rem = rem - step * demand
        if step_bg <= step_link:
            bg[:] = False                    # background flows reach their demand: frozen there
            continue
        sat = used & (rem <= tol * bw_Bps[union])
        if not sat.any():                    # numerical safety: saturate the tightest link
            sat = used & (room <= step_link)
        hit = unfrozen & (A[:, sat] > 0).any(axis=1)
        rate[hit] = level
        unfrozen &= ~hit
        bg &= ~sat
        if not hit.any():                    # only background crossed the saturated link
            continue
    return rate


class _Transfer:
    __slots__ = ("step", "remaining", "rate", "event", "finish_at")

    def __init__(self, step: StepLoad, nbytes: float, event: simpy.Event):
        self.step = step
        self.remaining = nbytes
        self.rate = 0.0
        self.event = event
        self.finish_at = 0.0


class FlowNetwork:
    """Flow groups sharing the links of one cluster inside a simpy environment.

    ``transfer(step, nbytes_per_flow)`` returns an event that fires when every flow of the step has moved
    its bytes; rates are recomputed (max-min fair, :func:`max_min_rates`) at every start and finish.
    """

    def __init__(self, env: simpy.Environment, table: LinkTable, background_Bps: float = 0.0):
        self.env = env
        self.table = table
        self.background_Bps = float(background_Bps)
        self._active: dict[int, _Transfer] = {}
        self._next = 0
        self._last = 0.0
        self._version = 0
        self.rate_solves = 0
        self.max_concurrent = 0

    # ---- public ---------------------------------------------------------------------------------------
    def transfer(self, step: StepLoad, nbytes_per_flow: float) -> simpy.Event:
        """Start the flows of ``step`` with ``nbytes_per_flow`` bytes each; the event fires when all are done."""
        ev = self.env.event()
        if nbytes_per_flow <= 0 or step.links.size == 0:
            ev.succeed()
            return ev
        self._advance()
        self._active[self._next] = _Transfer(step, float(nbytes_per_flow), ev)
        self._next += 1
        self.max_concurrent = max(self.max_concurrent, len(self._active))
        self._reschedule()
        return ev

    def rates_for(self, steps: list[StepLoad]) -> tuple[float, ...]:
        """Per-flow rates of ``steps`` sharing the network (with the background), memoised."""
        if len(steps) == 1 and self.background_Bps <= 0:
            return (1.0 / steps[0].slope_s_per_B,)       # alone: the bottleneck link's share
        key = (tuple(s.key for s in steps), self.background_Bps)
        cache = self.table.rate_cache
        hit = cache.get(key)
        if hit is None:
            self.rate_solves += 1
            r = max_min_rates([(s.links, s.load) for s in steps], self.table.bw_Bps, self.table.inter_node,
                              self.background_Bps)
            hit = tuple(float(x) for x in r)
            cache[key] = hit
        return hit

    # ---- internals -----------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0:
            for tr in self._active.values():
                tr.remaining -= tr.rate * dt
        self._last = now

    def _reschedule(self) -> None:
        now = self.env.now
        items = sorted(self._active.items(), key=lambda kv: kv[1].step.key)
        rates = self.rates_for([tr.step for _, tr in items])
        first = np.inf
        for (_, tr), r in zip(items, rates):
            tr.rate = r
            tr.finish_at = now + max(tr.remaining, 0.0) / r
            first = min(first, tr.finish_at)
        self._version += 1
        version = self._version
        ev = self.env.timeout(max(first - now, 0.0))
        ev.callbacks.append(lambda _e, v=version: self._wake(v))

    def _wake(self, version: int) -> None:
        if version != self._version:
            return
        self._advance()
        now = self.env.now
        done = [k for k, tr in self._active.items() if tr.finish_at <= now * (1.0 + 1e-12) + 1e-15]
        for k in done:
            self._active.pop(k).event.succeed()
        if self._active:
            self._reschedule()


# ------------------------------------------------------------------------------------------------------------
# diagnostics: the profile's per-step bound against the slowest single flow
# ------------------------------------------------------------------------------------------------------------
def slowest_flow_gap(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str, nbytes: float,
                     op: str = "allreduce") -> float:
    """Relative excess of the per-step bound ``max latency + n * max(load / bw)`` (what the profile and the
    simulator charge) over the slowest single flow ``max_f(latency_f + n * max_{e in f} load_e / bw_e)``,
    summed over the collective's steps. 0 when, in every step, one flow is slowest on both counts.

    Prices every flow separately: for small configurations (diagnostics and tests).
    """
    plan = collective_plan(system, nodes, ranks_per_node, algorithm, op)
    if plan.p <= 1:
        return 0.0
    G = cluster_graph(system, nodes)
    eps = rank_endpoints(system, nodes, ranks_per_node)
    table = plan.links
    alg = get_algorithm(algorithm)
    bound = exact = 0.0
    for ph, st in zip(plan.phases, alg.steps(plan.p, ranks_per_node=ranks_per_node, op=op)):
        red = ph.repeat * ph.reduce_frac * nbytes * plan.gamma_s_per_B
        bound += red
        exact += red
        if ph.step is None:
            continue
        m = ph.send_frac * nbytes
        bound += ph.repeat * (ph.step.latency_s + m * ph.step.slope_s_per_B)
        ratio = np.zeros(table.n_links)
        ratio[ph.step.links] = ph.step.load / table.bw_Bps[ph.step.links]
        worst = 0.0
        p = plan.p
        for a, b in st.pairs:
            s, d = eps[a % p], eps[b % p]
            if s == d:
                t = system.node.intra.latency_s + m / system.node.intra.link_bw_Bps
            else:
                r = max(ratio[table.index[e]] for e, _ in route_fractions(G, s, d))
                t = max_flow_time(G, [(s, d)], 0.0) + m * r
            worst = max(worst, t)
        exact += ph.repeat * worst
    return (bound - exact) / exact if exact > 0 else 0.0
