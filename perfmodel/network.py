"""From a system spec to collective costs: the cluster topology graph, rank placement, and the linear
cost profile ``time(n) = A + B * n`` of each collective algorithm on that topology.

How a collective is priced on a topology
----------------------------------------
Each algorithm (:mod:`perfmodel.collectives`) describes itself as steps: sets of simultaneous flows between
ranks. Ranks are placed on the devices of the cluster graph in blocks (rank ``r`` on node
``r // ranks_per_node``). A step's flows are routed over the graph (:mod:`hardware.topology.routing`,
equal-cost paths spread evenly); each directed link is shared fairly among the flows that cross it. A
step of ``m`` bytes per flow then takes ``max_f latency_f + m * max_f (load_e / bw_e)`` (upper bound of the
slowest flow: APPROXIMATION — the latency and the bandwidth maxima may come from different flows). Summed
over the steps, with the reduction arithmetic at ``gamma`` seconds per byte, this gives a cost that is
exactly linear in the message size::

    time(n) = A + B * n,  A = sum(repeat * latency_step),
                          B = sum(repeat * (send_frac * slope_step + reduce_frac * gamma))

so a profile is computed once per (system, nodes, ranks per node, algorithm, operation) and then prices
every bucket of every batch size at numpy speed (sweeps evaluate >10,000 configurations a second).

Measured exchange profile (EMPIRICAL, the emulated cluster)
-----------------------------------------------------------
A system whose ``[network.exchange_profile]`` holds the measured time of one exchange step between two
nodes by message size (:attr:`hardware.specs.NetworkSpec.exchange_profile`) has a link latency and rate
that are the straight line through those times. Over TCP the measured times are not a straight line (a
round trip per rendezvous, the congestion window, stack costs per message), so every step with inter-node
flows adds the *residual* of the measurement at that step's message size ``send_frac * n``: measured time
minus ``latency + m / rate``, interpolated in ``log m`` between the measured sizes and held at the end
values outside them (:func:`exchange_residual_s`). Contention and extra hops stay priced by the graph. The
profile is then ``A + B * n + sum(repeat * residual(send_frac * n))``: no longer exactly linear.

A system whose ``[network.ring_profile]`` also holds the measured time of one *ring* step (every node sends
to the next and receives from the previous, all at once; :attr:`hardware.specs.NetworkSpec.ring_profile`)
prices the steps that are a shift rather than an exchange (some flow ``a -> b`` without ``b -> a``: the
ring's steps on 3 or more nodes) at that measurement: such a step adds ``measured ring step(m) - (its own
graph price at m)`` (:func:`ring_residual_s`), so that on the measured nodes a ring step costs what was
measured. Why: over TCP a shift and an exchange of the same size cost differently. Measured on the emulated
cluster (the file of 2026-12-07 14:36, the same measurements priced both ways): the 4-host ring allreduce
of 1 MiB at 50 us per link went from -17 / -14 / -9 % (priced from the exchange) to -4 / -2 / +2 %. At 5 ms
it first went from +8 / +17 / +21 % to +21 / +30 / +31 %: a calibrated ring step (29.7 ms at 256 KiB) cost
more than a step inside the benchmark's allreduce (22.7 ms), because the hosts ran bbr, whose pacing made
a step's cost depend on what the connection had carried before; with reno in the hosts
(:data:`executor.cluster.plan.CONGESTION_CONTROL`) the four 4-host ring rows at 1 MiB and 5 ms are +3.4 /
+2.7 / +0.8 / +0.6 % (the file of 2026-12-07 19:53), and with the link calibration timing its steps in step
(:mod:`executor.cluster.measure`) -0.2 to +0.6 % (the 22:03 file, docs/validation/emulated.json).
APPROXIMATION: every shift step (also a tree's or a parameter server's, or a ring on fewer nodes than were
measured) takes the residual of the full ring measured on all nodes.

Other assumptions
-----------------
- Inter-node latency: the fabric's end-to-end MPI latency, put on the device-NIC hops (half each side).
- Reduction throughput: ``gamma = 3 / memory_bw`` of the device (read two operands, write one result).
- Several ranks on one device (``ranks_per_node > devices_per_node``): flows between them are priced at the
  node's intra-node (shared-memory) link.
- ``auto`` picks, per message size, the algorithm with the lowest profile cost, as MPI libraries select
  algorithms by message size.

Calibrated systems
------------------
A system written by ``perfmodel calibrate`` carries measured allreduce costs
(:attr:`hardware.specs.SystemSpec.collective_calibration`). For ``op == "allreduce"`` and an algorithm
it holds, the profile is taken from the measurement instead of the topology pricing, in this order:

1. the linear profile measured at exactly ``p = nodes * ranks_per_node`` ranks (``alpha + beta * n``);
2. the algorithm's closed form (:mod:`perfmodel.collectives`) with the fitted ``NetParams(alpha, beta,
   gamma)`` on a flat fabric, evaluated at ``p`` (exactly linear in ``n`` for a given ``p``);
3. otherwise the topology pricing above.

``mpi`` (MPI's own ``Allreduce``, an algorithm the library chooses; the executor runs it for
``allreduce = "auto"``) has no closed form and is priced only from its measured profiles. On a calibrated
system with a measured ``mpi`` profile at ``p`` ranks, ``auto`` for allreduce means ``mpi`` (so that the
prediction describes the run that the executor performs); elsewhere ``auto`` keeps its meaning (fastest
model algorithm per size). ``mpi`` on a system without such a profile is a ConfigError.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from hardware.errors import ConfigError, InfeasibleError
from hardware.specs import SystemSpec
from hardware.topology import cluster_with_nodes, endpoints
from hardware.topology import routing as _routing
from perfmodel.collectives import AUTO_CANDIDATES, Fabric, NetParams, get_algorithm

__all__ = ["CollectiveProfile", "node_graph_spec", "network_spec", "cluster_graph", "rank_endpoints",
           "fabric_for", "collective_profile", "calibrated_profile", "best_profiles", "reduce_gamma_s_per_B",
           "exchange_residual_s", "ring_residual_s", "MPI_NATIVE"]

#: name of MPI's own allreduce (the executor's ``mpi``; priced only from calibration)
MPI_NATIVE = "mpi"

_PROBE_BYTES = 1e12  # message size used to read the bandwidth slope off max_flow_time


@dataclass(frozen=True)
class CollectiveProfile:
    """Cost of one collective: ``time_s(n) = alpha_s + beta_s_per_B * n`` (n in bytes), plus, on a network
    with a measured exchange profile, ``sum(count * residual(frac * n))`` over ``exchange_steps``
    (``(count, frac)`` of the inter-node exchange steps) with ``residual`` interpolated in
    ``exchange_residual`` (``(bytes, seconds)`` pairs), and, on a network with a measured ring profile,
    ``sum(count * table(frac * n))`` over ``ring_steps`` (``(count, frac, table)`` of the shift steps, each
    with its own residual table; module docstring)."""

    algorithm: str
    op: str
    p: int
    alpha_s: float
    beta_s_per_B: float
    exchange_steps: tuple[tuple[float, float], ...] = ()
    exchange_residual: tuple[tuple[float, float], ...] = ()
    ring_steps: tuple[tuple[float, float, tuple[tuple[float, float], ...]], ...] = ()

    def time_s(self, nbytes):
        """Seconds for a message of ``nbytes`` (scalar or array); 0 for a single rank."""
        n = np.asarray(nbytes, dtype=float)
        if self.p <= 1:
            return np.zeros_like(n) if n.ndim else 0.0
        t = self.alpha_s + self.beta_s_per_B * n
        if self.exchange_steps and self.exchange_residual:
            for count, frac in self.exchange_steps:
                t = t + count * _residual_at(self.exchange_residual, frac * n)
        for count, frac, table in self.ring_steps:
            t = t + count * _residual_at(table, frac * n)
        return t if n.ndim else float(t)


def ring_residual_s(network, latency_s: float, slope_s_per_B: float) -> tuple[tuple[float, float], ...]:
    """Per measured size of ``network.ring_profile``: ``(bytes, measured ring step - (latency_s + bytes *
    slope_s_per_B))`` in seconds, the residual of a shift step whose graph price is that line (module
    docstring); empty without a ring profile."""
    return tuple((float(b), float(t) - (latency_s + float(b) * slope_s_per_B)) for b, t in network.ring_profile)


def _is_shift(src: np.ndarray, dst: np.ndarray) -> bool:
    """Whether the flows ``src[i] -> dst[i]`` (graph node ids) include one whose reverse is not a flow."""
    flows = set(zip(src.tolist(), dst.tolist()))
    return any((d, s) not in flows for s, d in flows)


def _residual_at(table, m):
    """``table`` (``(bytes, seconds)`` pairs) interpolated in log size at ``m`` bytes (array), held at the end
    values outside; 0 where ``m <= 0``."""
    sizes = np.log([b for b, _ in table])
    resid = np.array([r for _, r in table])
    return np.where(m > 0, np.interp(np.log(np.maximum(m, 1.0)), sizes, resid), 0.0)


def exchange_residual_s(network) -> tuple[tuple[float, float], ...]:
    """Per measured size of ``network.exchange_profile``: ``(bytes, measured time - (latency_s + bytes /
    link_bw_Bps))`` in seconds (module docstring); empty without a profile."""
    return tuple((float(b), float(t) - (network.latency_s + float(b) / network.link_bw_Bps))
                 for b, t in network.exchange_profile)


def reduce_gamma_s_per_B(system: SystemSpec) -> float:
    """Reduction arithmetic cost in seconds per byte: 3 bytes of memory traffic per byte reduced."""
    return 3.0 / system.device.memory_bw_Bps


def node_graph_spec(system: SystemSpec) -> dict | None:
    """Registry spec of one node's internal graph (None for one device per node)."""
    node = system.node
    dpn, intra = node.devices_per_node, node.intra
    if dpn == 1:
        return None
    if intra.kind == "nvlink-hybrid-cube-mesh":
        if dpn == 8:
            gpu = "p100" if "p100" in node.device.id else "v100"
            return {"kind": "dgx1-hybrid-cube-mesh", "gpu": gpu, "nvlink_bw_Bps": intra.link_bw_Bps,
                    "latency_s": intra.latency_s}
        # fewer GPUs (e.g. TSUBAME3's 4 P100): every pair linked; the device's links shared among peers
        links = max(1, (intra.links_per_device or 1) // (dpn - 1))
        return {"kind": "fully-connected", "n_endpoints": dpn, "link_bw_Bps": links * intra.link_bw_Bps,
                "latency_s": intra.latency_s}
    if intra.kind == "nvswitch":
        return {"kind": "nvswitch", "n_gpus": dpn, "links_per_gpu": intra.links_per_device or 6,
                "nvlink_bw_Bps": intra.link_bw_Bps, "latency_s": intra.latency_s}
    if intra.kind == "pcie":
        return {"kind": "pcie-tree", "n_gpus": dpn, "gpus_per_switch": max(1, dpn // 2),
                "pcie_bw_Bps": intra.link_bw_Bps, "latency_s": intra.latency_s}
    # shared memory: every device reaches every other through the memory system
    return {"kind": "single-switch", "n_endpoints": dpn, "link_bw_Bps": intra.link_bw_Bps,
            "latency_s": intra.latency_s / 2}


def network_spec(system: SystemSpec, nodes: int) -> dict:
    """Registry spec of the inter-node network for ``nodes`` nodes (NICs are its endpoints)."""
    net, nics = system.network, system.node.nics_per_node
    tp = dict(net.topology_params)
    bw = net.link_bw_Bps
    if net.topology_kind == "fat-tree":
        per_leaf = int(tp["nodes_per_leaf"]) * nics
        uplinks = int(tp.get("uplinks_per_leaf") or round(per_leaf / float(tp.get("oversubscription", 1.0))))
        return {"kind": "fat-tree", "endpoints_per_leaf": per_leaf, "uplinks_per_leaf": max(1, uplinks),
                "link_bw_Bps": bw, "latency_s": 0.0, "levels": 2}
    if net.topology_kind == "torus":
        return {"kind": "torus", "dims": tuple(tp["dims"]), "link_bw_Bps": bw, "latency_s": 0.0}
    if net.topology_kind == "dragonfly":
        return {"kind": "dragonfly", "groups": int(tp["groups"]), "routers_per_group": int(tp["routers_per_group"]),
                "endpoints_per_router": int(tp["nodes_per_router"]) * nics,
                "global_links_per_router": int(tp.get("global_links_per_router", 1)),
                "link_bw_Bps": bw, "global_bw_Bps": bw, "latency_s": 0.0}
    return {"kind": "single-switch", "link_bw_Bps": bw, "latency_s": 0.0}


@functools.lru_cache(maxsize=64)
def cluster_graph(system: SystemSpec, nodes: int) -> nx.Graph:
    """The topology graph of ``nodes`` nodes of ``system`` (cached; do not modify the result)."""
    if nodes > system.max_nodes:
        raise InfeasibleError(f"{system.id}: {nodes} nodes requested but the system has {system.max_nodes}")
    spec = node_graph_spec(system)
    node_graph = _fully_connected(**{k: v for k, v in spec.items() if k != "kind"}) \
        if spec and spec["kind"] == "fully-connected" else spec
    net = network_spec(system, nodes)
    if net["kind"] == "torus" and int(np.prod(net["dims"])) != nodes * system.node.nics_per_node:
        net = {"kind": "single-switch", "link_bw_Bps": net["link_bw_Bps"], "latency_s": 0.0}  # partial torus
    return cluster_with_nodes(node_graph, nodes, net, system.node.nics_per_node,
                              nic_bw_Bps=system.network.link_bw_Bps,
                              nic_latency_s=system.network.latency_s / 2)


def _fully_connected(n_endpoints: int, link_bw_Bps: float, latency_s: float) -> nx.Graph:
    """A node whose devices are pairwise linked (4-GPU NVLink nodes)."""
    G = nx.complete_graph(n_endpoints)
    for n in G.nodes:
        G.nodes[n]["kind"] = "endpoint"
    for u, v in G.edges:
        G.edges[u, v].update(bw_Bps=float(link_bw_Bps), latency_s=float(latency_s), kind="nvlink", links=1)
    G.graph.update(name=f"nvlink-full-{n_endpoints}", kind="fully-connected", endpoints=list(range(n_endpoints)),
                   num_endpoints=n_endpoints, routing="shortest")
    return G


def rank_endpoints(system: SystemSpec, nodes: int, ranks_per_node: int) -> list:
    """Endpoint of each rank (block placement: rank r on node r // ranks_per_node)."""
    G = cluster_graph(system, nodes)
    eps = endpoints(G)
    dpn = system.devices_per_node
    by_node: dict = {}
    for ep in eps:
        by_node.setdefault(ep[0] if isinstance(ep, tuple) else ep, []).append(ep)
    node_ids = sorted(by_node)
    out = []
    for r in range(nodes * ranks_per_node):
        node_eps = by_node[node_ids[r // ranks_per_node]]
        out.append(node_eps[(r % ranks_per_node) % min(dpn, len(node_eps))])
    return out


def fabric_for(system: SystemSpec, ranks_per_node: int) -> Fabric:
    """Closed-form (alpha-beta-gamma) parameters of ``system``: intra-node and inter-node links."""
    intra = system.node.intra
    per_rank_intra_bw = intra.link_bw_Bps * (intra.links_per_device or 1)
    gamma = reduce_gamma_s_per_B(system)
    return Fabric(intra=NetParams(intra.latency_s, 1.0 / per_rank_intra_bw, gamma),
                  inter=NetParams(system.network.latency_s, 1.0 / system.network.link_bw_Bps, gamma),
                  ranks_per_node=ranks_per_node, nics_per_node=system.node.nics_per_node)


#: bump when the pricing of profiles changes: on-disk cache entries of other versions are ignored
PROFILE_MODEL_VERSION = 3


def _cache_dir() -> Path | None:
    """Folder of the on-disk profile cache (``$TTT_CACHE_DIR`` or ``~/.cache/ttt-perfmodel``); None when
    ``TTT_CACHE_DIR`` is set to an empty string (cache off)."""
    env = os.environ.get("TTT_CACHE_DIR")
    if env == "":
        return None
    return Path(env) if env else Path.home() / ".cache" / "ttt-perfmodel"


def _cache_key(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str, op: str) -> str:
    blob = json.dumps([PROFILE_MODEL_VERSION, repr(system), nodes, ranks_per_node, algorithm, op])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def calibrated_profile(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str,
                       op: str = "allreduce") -> CollectiveProfile | None:
    """The measured profile of ``algorithm`` on a calibrated ``system`` (see the module docstring), or None
    when the system has no calibration that applies."""
    if op != "allreduce":
        return None
    cal = system.collective_calibration.get(algorithm)
    if cal is None:
        return None
    p = nodes * ranks_per_node
    if p <= 1:
        return CollectiveProfile(algorithm, op, p, 0.0, 0.0)
    if p in cal.profiles:
        alpha, beta = cal.profiles[p]
        return CollectiveProfile(algorithm, op, p, float(alpha), float(beta))
    if cal.has_closed_form and algorithm != MPI_NATIVE:
        net = NetParams(cal.alpha_s, cal.beta_s_per_B, cal.gamma_s_per_B)
        fabric = Fabric(net, net, ranks_per_node=max(1, min(ranks_per_node, p)),
                        nics_per_node=system.node.nics_per_node)
        alg = get_algorithm(algorithm)
        t0 = float(alg.time(op, p, 0.0, fabric))
        t1 = float(alg.time(op, p, _PROBE_BYTES, fabric))
        return CollectiveProfile(algorithm, op, p, t0, (t1 - t0) / _PROBE_BYTES)
    return None


@functools.lru_cache(maxsize=4096)
def collective_profile(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str,
                       op: str = "allreduce") -> CollectiveProfile:
    """Linear cost profile of ``op`` with ``algorithm`` on ``nodes`` nodes of ``system``.

    On a calibrated system the measured profile is used where one applies (:func:`calibrated_profile`).
    Otherwise cached in memory and on disk (routing thousands of flows on a large fat tree takes seconds;
    the disk cache, keyed by the full system spec, makes the second prediction of a configuration
    instant)."""
    cal = calibrated_profile(system, nodes, ranks_per_node, algorithm, op)
    if cal is not None:
        return cal
    if algorithm == MPI_NATIVE:
        cal = system.collective_calibration.get(MPI_NATIVE)
        have = ", ".join(map(str, sorted(cal.profiles))) if cal is not None and cal.profiles else "none"
        raise ConfigError("--allreduce", "allreduce", algorithm,
                          f"MPI's own {op} is priced only from measured profiles of a calibrated system; "
                          f"'{system.id}' has them at p = {have}, not at p = {nodes * ranks_per_node} "
                          f"(run perfmodel calibrate, or choose a model algorithm)")
    folder = _cache_dir()
    key = _cache_key(system, nodes, ranks_per_node, algorithm, op)
    if folder is not None:
        try:
            alpha, beta, steps, ring = json.loads((folder / f"{key}.json").read_text())
            return CollectiveProfile(algorithm, op, nodes * ranks_per_node, float(alpha), float(beta),
                                     tuple((float(c), float(f)) for c, f in steps),
                                     exchange_residual_s(system.network) if steps else (),
                                     tuple((float(c), float(f), tuple((float(b), float(r)) for b, r in tab))
                                           for c, f, tab in ring))
        except (OSError, ValueError, TypeError):
            pass
    prof = _compute_profile(system, nodes, ranks_per_node, algorithm, op)
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump([prof.alpha_s, prof.beta_s_per_B, [list(x) for x in prof.exchange_steps],
                           [[c, f, [list(x) for x in tab]] for c, f, tab in prof.ring_steps]], fh)
            os.replace(tmp, folder / f"{key}.json")
        except OSError:
            pass  # a read-only home: the in-memory cache still works
    return prof


def _rank_node_ids(system: SystemSpec, nodes: int, ranks_per_node: int) -> np.ndarray:
    """:func:`rank_endpoints` as the routing engine's node ids of the cluster graph (kept with its routes)."""
    G = cluster_graph(system, nodes)
    memo = _routing.graph_memo(G)
    key = ("perfmodel.network.rank_node_ids", system.devices_per_node, ranks_per_node)
    ids = memo.get(key)
    if ids is None:
        ids = memo[key] = _routing.node_ids(G, rank_endpoints(system, nodes, ranks_per_node))
        ids.setflags(write=False)
    return ids


def _compute_profile(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str,
                     op: str) -> CollectiveProfile:
    """Price ``algorithm``'s step patterns on the cluster graph (see the module docstring).

    Each step's flows are priced once for both numbers (latency at 0 bytes and the slope off the
    ``_PROBE_BYTES`` probe) by the routing engine, as arrays of node ids, and a flow pattern already
    priced on this graph (another step or algorithm with the same pairs) is not priced again.
    """
    p = nodes * ranks_per_node
    alg = get_algorithm(algorithm)
    if algorithm == "auto":
        raise ConfigError("collective_profile", "algorithm", algorithm, "resolve 'auto' with best_profiles")
    if p <= 1:
        return CollectiveProfile(algorithm, op, p, 0.0, 0.0)
    G = cluster_graph(system, nodes)
    ids = _rank_node_ids(system, nodes, ranks_per_node)
    bw = _routing.bandwidths(G)
    intra = system.node.intra
    gamma = reduce_gamma_s_per_B(system)
    alpha = beta = 0.0
    measured = bool(system.network.exchange_profile)
    exchange: list[tuple[float, float]] = []
    ring: list[tuple[float, float, tuple[tuple[float, float], ...]]] = []
    ring_measured = bool(system.network.ring_profile)
    for st in alg.steps(p, ranks_per_node=ranks_per_node, op=op):
        if len(st.pairs) == 0:
            beta += st.repeat * st.reduce_frac * gamma
            continue
        # indices >= p are extra endpoints of the algorithm (parameter servers): co-located with ranks
        pairs = np.asarray(st.pairs, dtype=np.int64)
        src, dst = ids[pairs[:, 0] % p], ids[pairs[:, 1] % p]
        keep = src != dst
        n_flows = int(np.count_nonzero(keep))
        lat = slope = 0.0
        if n_flows:
            lat, t_probe = _routing.flow_times(G, src[keep], dst[keep], (0.0, _PROBE_BYTES), bw=bw, memo=True)
            slope = (t_probe - lat) / _PROBE_BYTES
        if n_flows < len(src):  # ranks sharing a device: shared-memory copy
            lat = max(lat, intra.latency_s)
            slope = max(slope, 1.0 / intra.link_bw_Bps)
        alpha += st.repeat * lat
        beta += st.repeat * (st.send_frac * slope + st.reduce_frac * gamma)
        if n_flows and st.send_frac > 0:
            if ring_measured and _is_shift(src[keep], dst[keep]):
                ring.append((float(st.repeat), float(st.send_frac), ring_residual_s(system.network, lat, slope)))
            elif measured:
                exchange.append((float(st.repeat), float(st.send_frac)))
    return CollectiveProfile(algorithm, op, p, alpha, beta, tuple(exchange),
                             exchange_residual_s(system.network) if exchange else (), tuple(ring))


def best_profiles(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str, nbytes,
                  op: str = "allreduce") -> tuple[np.ndarray, list[str]]:
    """Time of ``op`` for each message size in ``nbytes`` and the algorithm used for each.

    ``algorithm == "auto"`` picks the fastest of the auto candidates per size; any other name is used for
    every size (unknown names raise ConfigError naming ``allreduce``). On a calibrated system with a
    measured ``mpi`` profile at this rank count, ``auto`` allreduce means ``mpi`` (module docstring).
    """
    n = np.atleast_1d(np.asarray(nbytes, dtype=float))
    if op == "allreduce" and algorithm in ("auto", MPI_NATIVE) and calibrated_profile(
            system, nodes, ranks_per_node, MPI_NATIVE, op) is not None:
        algorithm = MPI_NATIVE   # a calibrated system: "auto" is what the executor runs, MPI's own
    names = list(AUTO_CANDIDATES) if algorithm == "auto" else [algorithm]
    if algorithm != MPI_NATIVE:
        get_algorithm(algorithm)  # validates the name
    usable = []
    for name in names:
        if name == MPI_NATIVE:
            if op == "allreduce":
                usable.append(name)
            continue
        alg = get_algorithm(name)
        if op in getattr(alg, "step_ops", ("allreduce",)):
            usable.append(name)
    if not usable:
        raise ConfigError("--allreduce", "allreduce", algorithm, f"does not implement {op}")
    times = np.stack([collective_profile(system, nodes, ranks_per_node, a, op).time_s(n) for a in usable])
    best = np.argmin(times, axis=0)
    return times[best, np.arange(n.size)], [usable[i] for i in best]
