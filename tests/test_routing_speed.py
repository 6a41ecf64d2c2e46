"""Equivalence of the fast routing engine with the original per-flow implementation.

:mod:`hardware.topology.routing` prices a step of simultaneous flows with numpy over cached per-graph route
tables (closed-form fat-tree spreads, NIC-level reuse on clusters, one pass for latency and slope), and
:func:`perfmodel.network._compute_profile` prices each distinct pair pattern once. These tests hold the
results to the original implementation, kept below verbatim (``_ref_*``: routing.py's functions as they
were before the fast engine, with their cache keys renamed so that the two never share a cache; the
cluster family's two route functions, bound to the reference; and the original ``_compute_profile``):

- ``link_loads`` (same links, loads to 1e-12 relative), ``max_flow_time`` (0 bytes, 1 MB, 1e12 bytes) and
  ``route_fractions`` / ``path`` on fat trees (2 and 3 levels, oversubscribed, partial leaves), tori (with
  ties), dragonflies, DGX-1 / NVSwitch / PCIe / single-switch / single-device clusters and the node graphs
  themselves, for ring, halving-doubling (all distances), random permutations, random pairs with
  repeats and self-pairs, both routings;
- collective profiles of every auto candidate (and the parameter server) on catalog systems and variants;
- the errors (unknown node, non-endpoint node, unreachable destination, bad routing, bad nbytes) and the
  cache rules (``clear_routes`` after an in-place edit; a ``G.copy()`` gets its own cache; bandwidths are
  read fresh on every call).

Timings are not asserted here; see ``benchmarks/bench_routing.py``.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import random
from collections import deque
from types import SimpleNamespace
from typing import Any, Hashable, Iterable

import networkx as nx
import pytest

import hardware.topology as T
from hardware.catalog import load_system
from hardware.errors import ConfigError, SpecError
from hardware.specs import FrozenMap, SystemSpec
from hardware.topology import routing as R
from perfmodel import network as N
from perfmodel.collectives import AUTO_CANDIDATES, get_algorithm
from perfmodel.network import (_PROBE_BYTES, CollectiveProfile, cluster_graph, rank_endpoints,
                               reduce_gamma_s_per_B)

# ====================================================================================================
# REFERENCE: hardware/topology/routing.py before the fast engine, verbatim from "Edge = ..." to the end.
# Edits: the cache keys "_routes" / "_bfs" are "_ref_routes" / "_ref_bfs", and _family returns the
# reference copy of the cluster family (below) instead of hardware.topology.cluster.
# ====================================================================================================
Edge = tuple[Hashable, Hashable]
ROUTINGS = ("spread", "static")

# routing family -> module holding route_static(G, s, d) and route_spread(G, s, d)
_FAMILY_MODULES = {
    "fat-tree": "hardware.topology.fat_tree",
    "torus": "hardware.topology.torus",
    "dragonfly": "hardware.topology.dragonfly",
    "cluster": "hardware.topology.cluster",
}


def _source(G: nx.Graph) -> str:
    return f"topology:{G.graph.get('kind', 'routing')}"


def clear_routes(G: nx.Graph) -> None:
    """Drop the cached routes (and breadth-first trees) of ``G``."""
    G.graph.pop("_ref_routes", None)
    G.graph.pop("_ref_bfs", None)


def _cache(G: nx.Graph) -> dict[str, dict]:
    # G.copy() copies G.graph shallowly, so a copy would share the dict: the owner check gives the copy
    # (whose attributes may be edited) a cache of its own
    cache = G.graph.get("_ref_routes")
    if cache is None or cache.get("owner") != id(G):
        cache = {"owner": id(G), "static": {}, "spread": {}}
        G.graph["_ref_routes"] = cache
        G.graph["_ref_bfs"] = {}
    return cache


def _check_nodes(G: nx.Graph, src: Hashable, dst: Hashable) -> None:
    for field, node in (("src", src), ("dst", dst)):
        try:
            ok = node in G
        except TypeError:  # unhashable
            ok = False
        if not ok:
            raise SpecError(_source(G), field, node, "not a node of the topology graph")


def _check_routing(G: nx.Graph, routing: str) -> str:
    if routing not in ROUTINGS:
        raise SpecError(_source(G), "routing", routing, f"must be one of {list(ROUTINGS)}")
    return routing


# ----------------------------------------------------------------------------------------------------
# generic shortest-path routing

def _bfs_dist(G: nx.Graph, root: Hashable) -> dict[Hashable, int]:
    _cache(G)
    cache = G.graph["_ref_bfs"]
    dist = cache.get(root)
    if dist is None:
        dist = {root: 0}
        queue = deque([root])
        adj = G.adj
        while queue:
            u = queue.popleft()
            du = dist[u] + 1
            for v in adj[u]:
                if v not in dist:
                    dist[v] = du
                    queue.append(v)
        cache[root] = dist
    return dist


def _no_path(G: nx.Graph, src: Hashable, dst: Hashable) -> SpecError:
    return SpecError(_source(G), "dst", dst, f"not reachable from {src!r}")


def _shortest_static(G: nx.Graph, src: Hashable, dst: Hashable) -> list[Edge]:
    dist = _bfs_dist(G, dst)
    if src not in dist:
        raise _no_path(G, src, dst)
    out: list[Edge] = []
    u = src
    adj = G.adj
    while u != dst:
        du = dist[u]
        nxt = next(v for v in adj[u] if dist.get(v, -1) == du - 1)
        out.append((u, nxt))
        u = nxt
    return out


def _shortest_spread(G: nx.Graph, src: Hashable, dst: Hashable) -> list[tuple[Edge, float]]:
    dist = _bfs_dist(G, dst)
    if src not in dist:
        raise _no_path(G, src, dst)
    adj = G.adj
    frac: dict[Hashable, float] = {src: 1.0}
    level = [src]
    out: list[tuple[Edge, float]] = []
    while level and dist[level[0]] > 0:
        nxt_level: list[Hashable] = []
        for u in level:
            du = dist[u]
            hops = [v for v in adj[u] if dist.get(v, -1) == du - 1]
            share = frac[u] / len(hops)
            for v in hops:
                out.append(((u, v), share))
                if v not in frac:
                    frac[v] = 0.0
                    nxt_level.append(v)
                frac[v] += share
        level = nxt_level
    return out


# ----------------------------------------------------------------------------------------------------
# dispatch and caching

def _check_endpoints(G: nx.Graph, src: Hashable, dst: Hashable) -> None:
    for field, node in (("src", src), ("dst", dst)):
        if G.nodes[node].get("kind") != "endpoint":
            raise SpecError(_source(G), field, node,
                            f"{G.graph.get('routing')} routing runs between endpoints, not {G.nodes[node].get('kind')} nodes")


def _family(G: nx.Graph):
    name = G.graph.get("routing", "shortest")
    if name == "shortest":
        return None
    module = _FAMILY_MODULES.get(name)
    if module is None:
        raise SpecError(_source(G), "routing", name, f"unknown routing family; known: {['shortest', *_FAMILY_MODULES]}")
    if name == "cluster":  # REFERENCE EDIT: the cluster family's routes, bound to this reference copy
        return _REF_CLUSTER
    return importlib.import_module(module)


def _static(G: nx.Graph, src: Hashable, dst: Hashable) -> tuple[list[Edge], float]:
    """Static route and its latency (cached)."""
    cache = _cache(G)["static"]
    key = (src, dst)
    try:
        hit = cache.get(key)
    except TypeError:  # unhashable node
        _check_nodes(G, src, dst)
        raise
    if hit is None:
        _check_nodes(G, src, dst)
        if src == dst:
            edges: list[Edge] = []
        else:
            fam = _family(G)
            if fam is None:
                edges = _shortest_static(G, src, dst)
            else:
                _check_endpoints(G, src, dst)
                edges = fam.route_static(G, src, dst)
        adj = G.adj
        hit = (edges, float(sum(adj[u][v]["latency_s"] for u, v in edges)))
        cache[key] = hit
    return hit


def _spread_latency(G: nx.Graph, src: Hashable, items: list[tuple[Edge, float]]) -> float:
    """Largest latency over the sub-paths of a spread route (longest path in its DAG from ``src``)."""
    succ: dict[Hashable, list[Hashable]] = {}
    for (u, v), _ in items:
        succ.setdefault(u, []).append(v)
    adj = G.adj
    memo: dict[Hashable, float] = {}
    # iterative post-order DFS (routes are DAGs)
    stack: list[tuple[Hashable, bool]] = [(src, False)]
    while stack:
        u, done = stack.pop()
        if u in memo:
            continue
        if done:
            memo[u] = max((adj[u][v]["latency_s"] + memo[v] for v in succ.get(u, ())), default=0.0)
            continue
        stack.append((u, True))
        for v in succ.get(u, ()):
            if v not in memo:
                stack.append((v, False))
    return float(memo.get(src, 0.0))


def _spread(G: nx.Graph, src: Hashable, dst: Hashable) -> tuple[list[tuple[Edge, float]], float]:
    """Spread route (edge fractions) and its latency (cached)."""
    cache = _cache(G)["spread"]
    key = (src, dst)
    try:
        hit = cache.get(key)
    except TypeError:  # unhashable node
        _check_nodes(G, src, dst)
        raise
    if hit is None:
        _check_nodes(G, src, dst)
        if src == dst:
            hit = ([], 0.0)
        else:
            fam = _family(G)
            if fam is None:
                items = _shortest_spread(G, src, dst)
            else:
                _check_endpoints(G, src, dst)
                items = fam.route_spread(G, src, dst)
            hit = (items, _spread_latency(G, src, items))
        cache[key] = hit
    return hit


def route_fractions(G: nx.Graph, src: Hashable, dst: Hashable, routing: str = "spread") -> list[tuple[Edge, float]]:
    """Directed edges used by the flow ``src -> dst`` with the fraction of the flow on each."""
    _check_routing(G, routing)
    if routing == "static":
        return [(e, 1.0) for e in _static(G, src, dst)[0]]
    return list(_spread(G, src, dst)[0])


# ----------------------------------------------------------------------------------------------------
# public queries

def path(G: nx.Graph, src: Hashable, dst: Hashable) -> list[Edge]:
    """Directed edges ``(u, v)`` crossed from ``src`` to ``dst`` by the static route (empty if equal)."""
    return list(_static(G, src, dst)[0])


def bottleneck_bw(G: nx.Graph, src: Hashable, dst: Hashable) -> float:
    """Smallest ``bw_Bps`` along the static route (``inf`` when ``src == dst``)."""
    edges = _static(G, src, dst)[0]
    adj = G.adj
    return float(min((adj[u][v]["bw_Bps"] for u, v in edges), default=float("inf")))


def path_latency(G: nx.Graph, src: Hashable, dst: Hashable) -> float:
    """Sum of ``latency_s`` along the static route, seconds."""
    return _static(G, src, dst)[1]


def link_loads(G: nx.Graph, pairs: Iterable[tuple[Hashable, Hashable]], routing: str = "spread") -> dict[Edge, float]:
    """Flows crossing each directed link when all ``(src, dst)`` pairs send at once.

    Returns ``{(u, v): load}``; loads are flow counts, fractional with ``routing="spread"`` when a flow
    is split over several paths. Links that carry nothing are absent.
    """
    _check_routing(G, routing)
    loads: dict[Edge, float] = {}
    get = loads.get
    if routing == "static":
        for s, d in pairs:
            for e in _static(G, s, d)[0]:
                loads[e] = get(e, 0.0) + 1.0
    else:
        for s, d in pairs:
            for e, f in _spread(G, s, d)[0]:
                loads[e] = get(e, 0.0) + f
    return loads


def max_flow_time(
    G: nx.Graph,
    pairs: Iterable[tuple[Hashable, Hashable]],
    nbytes: float,
    routing: str = "spread",
) -> float:
    """Seconds until the last of the simultaneous flows of ``nbytes`` each completes.

    ``time = max_f [latency(f) + nbytes * max_{e in f} load_e / bw_e]`` (see the module docstring for
    the model and its approximation). Returns 0.0 for no flows.
    """
    _check_routing(G, routing)
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, float)) or not nbytes >= 0 or nbytes == float("inf"):
        raise SpecError(_source(G), "nbytes", nbytes, "must be a finite number >= 0")
    pairs = list(pairs)
    loads = link_loads(G, pairs, routing)
    adj = G.adj
    ratio = {e: load / adj[e[0]][e[1]]["bw_Bps"] for e, load in loads.items()}
    worst = 0.0
    for s, d in pairs:
        if routing == "static":
            edges, lat = _static(G, s, d)
            r = max((ratio[e] for e in edges), default=0.0)
        else:
            items, lat = _spread(G, s, d)
            r = max((ratio[e] for e, _ in items), default=0.0)
        t = lat + nbytes * r
        if t > worst:
            worst = t
    return float(worst)


# REFERENCE: hardware/topology/cluster.py's routing functions, verbatim but renamed (_split ->
# _cluster_split, route_* -> _cluster_route_*) and calling the reference path / route_fractions above.
def _cluster_split(G: nx.Graph, src: Hashable, dst: Hashable) -> tuple[Any, ...]:
    nics = G.graph["nics_per_node"]
    net_eps = G.graph["_net_endpoints"]
    nic_s = (src[0], ("nic", G.nodes[src]["nic"]))
    nic_d = (dst[0], ("nic", G.nodes[dst]["nic"]))
    m_s = src[0] * nics + G.nodes[src]["nic"]
    m_d = dst[0] * nics + G.nodes[dst]["nic"]
    return nic_s, nic_d, net_eps[m_s], net_eps[m_d]


def _cluster_route_static(G: nx.Graph, src: Hashable, dst: Hashable) -> list[Edge]:
    """Static route: the node graph's route inside a node, NIC - network - NIC between nodes."""
    if src[0] == dst[0]:
        n = src[0]
        return [((n, u), (n, v)) for u, v in path(G.graph["_node_graph"], src[1], dst[1])]
    nic_s, nic_d, a, b = _cluster_split(G, src, dst)
    mp = G.graph["_net_map"]
    mid = [(mp.get(u, u), mp.get(v, v)) for u, v in path(G.graph["_network"], a, b)]
    return [(src, nic_s), *mid, (nic_d, dst)]


def _cluster_route_spread(G: nx.Graph, src: Hashable, dst: Hashable) -> list[tuple[Edge, float]]:
    """Spread route: the node graph's / the network's spread routes, joined through the NICs."""
    if src[0] == dst[0]:
        n = src[0]
        return [(((n, u), (n, v)), f)
                for (u, v), f in route_fractions(G.graph["_node_graph"], src[1], dst[1], "spread")]
    nic_s, nic_d, a, b = _cluster_split(G, src, dst)
    mp = G.graph["_net_map"]
    mid = [((mp.get(u, u), mp.get(v, v)), f) for (u, v), f in route_fractions(G.graph["_network"], a, b, "spread")]
    return [((src, nic_s), 1.0), *mid, ((nic_d, dst), 1.0)]


_REF_CLUSTER = SimpleNamespace(route_static=_cluster_route_static, route_spread=_cluster_route_spread)


# REFERENCE: perfmodel/network.py's _compute_profile before the fast engine, verbatim (renamed
# ref_compute_profile; max_flow_time is the reference one above).
def ref_compute_profile(system: SystemSpec, nodes: int, ranks_per_node: int, algorithm: str,
                     op: str) -> CollectiveProfile:
    """Price ``algorithm``'s step patterns on the cluster graph (see the module docstring)."""
    p = nodes * ranks_per_node
    alg = get_algorithm(algorithm)
    if algorithm == "auto":
        raise ConfigError("collective_profile", "algorithm", algorithm, "resolve 'auto' with best_profiles")
    if p <= 1:
        return CollectiveProfile(algorithm, op, p, 0.0, 0.0)
    G = cluster_graph(system, nodes)
    eps = rank_endpoints(system, nodes, ranks_per_node)
    intra = system.node.intra
    gamma = reduce_gamma_s_per_B(system)
    alpha = beta = 0.0
    for st in alg.steps(p, ranks_per_node=ranks_per_node, op=op):
        if len(st.pairs) == 0:
            beta += st.repeat * st.reduce_frac * gamma
            continue
        # indices >= p are extra endpoints of the algorithm (parameter servers): co-located with ranks
        src = [eps[i % p] for i in st.pairs[:, 0]]
        dst = [eps[i % p] for i in st.pairs[:, 1]]
        flows = [(s, d) for s, d in zip(src, dst) if s != d]
        lat = slope = 0.0
        if flows:
            lat = max_flow_time(G, flows, 0.0)
            slope = (max_flow_time(G, flows, _PROBE_BYTES) - lat) / _PROBE_BYTES
        if len(flows) < len(src):  # ranks sharing a device: shared-memory copy
            lat = max(lat, intra.latency_s)
            slope = max(slope, 1.0 / intra.link_bw_Bps)
        alpha += st.repeat * lat
        beta += st.repeat * (st.send_frac * slope + st.reduce_frac * gamma)
    return CollectiveProfile(algorithm, op, p, alpha, beta)


REF = SimpleNamespace(link_loads=link_loads, max_flow_time=max_flow_time, route_fractions=route_fractions,
                      path=path, clear_routes=clear_routes, compute_profile=ref_compute_profile)

# ====================================================================================================
# the tests
# ====================================================================================================

REL = 1e-12
SIZES = (0.0, 1e6, _PROBE_BYTES)
OPA = 12.5e9


def _jitter(G: nx.Graph, seed: int) -> nx.Graph:
    """``G`` with every edge's latency and bandwidth scaled by random factors (in place; returns G)."""
    rng = random.Random(seed)
    for _, _, d in G.edges(data=True):
        d["latency_s"] = d["latency_s"] * rng.uniform(0.5, 2.0) + rng.uniform(0.0, 1e-6)
        d["bw_Bps"] = d["bw_Bps"] * rng.choice([0.5, 1.0, 1.0, 2.0, 3.0])
    return G


def _graphs() -> dict[str, nx.Graph]:
    ft = {"kind": "fat-tree", "endpoints_per_leaf": 8, "uplinks_per_leaf": 4, "link_bw_Bps": OPA, "latency_s": 1e-6}
    jittered_net = _jitter(T.fat_tree(16, 4, 3, OPA, 1e-6, levels=3, leaves_per_pod=2, uplinks_per_agg=2), 7)
    return {
        "fat-tree-2l": T.fat_tree(64, 8, 4, 1e9, 1e-6),
        "fat-tree-oversub-28-20": T.fat_tree(28 * 4, 28, 20, OPA, 1e-6),
        "fat-tree-partial-leaf": T.fat_tree(50, 8, 3, OPA, 2e-7, uplink_bw_Bps=2 * OPA),
        "fat-tree-one-leaf": T.fat_tree(6, 8, 2, OPA, 1e-6),
        "fat-tree-3l": T.fat_tree(72, 4, 3, OPA, 1e-6, levels=3, leaves_per_pod=4, uplinks_per_agg=2,
                                  uplink_bw_Bps=OPA / 2, core_bw_Bps=OPA / 3),
        "fat-tree-2l-jittered": _jitter(T.fat_tree(48, 6, 4, OPA, 1e-6), 1),
        "fat-tree-3l-jittered": _jitter(T.fat_tree(40, 4, 3, OPA, 1e-6, levels=3, leaves_per_pod=3), 2),
        "torus-8x8": T.torus((8, 8), 1e9, 1e-6),
        "torus-4x4x4": _jitter(T.torus((4, 4, 4), 1e9, 1e-6), 3),
        "torus-2x3x6": T.torus((2, 3, 6), 1e9, 1e-6),
        "ring-7": T.torus((7,), 1e9, 1e-6),
        "dragonfly": T.dragonfly(5, 4, 2, 2, 1e9, 2e9, 1e-6),
        "dragonfly-doubled": T.dragonfly(2, 2, 1, 2, 1e9, 1e9, 1e-6),
        "dragonfly-one-group": T.dragonfly(1, 4, 3, 0, 1e9, 1e9, 1e-6),
        "dgx1-v100": T.dgx1_hybrid_cube_mesh("v100", latency_s=1e-6),
        "dgx1-p100": _jitter(T.dgx1_hybrid_cube_mesh("p100", latency_s=1e-6), 4),
        "nvswitch": T.nvswitch(16, 6, 25e9, 5e-7),
        "pcie": T.pcie_tree(8, 2, 15.75e9, 1e-6, socket_link_bw_Bps=9.6e9),
        "single-switch": T.single_switch(16, 1e9, 1e-6),
        "cluster-dgx1-fat-tree": T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100", latency_s=1e-6), 8, ft, 4, OPA,
                                                      nic_latency_s=4e-7),
        "cluster-dgx1-3l-jittered": T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("p100"), 4, jittered_net, 4, OPA,
                                                         nic_latency_s=4e-7),
        "cluster-nvswitch-fat-tree": T.cluster_with_nodes(
            {"kind": "nvswitch", "n_gpus": 16, "links_per_gpu": 6, "nvlink_bw_Bps": 25e9, "latency_s": 1e-7}, 3,
            {"kind": "fat-tree", "endpoints_per_leaf": 10, "uplinks_per_leaf": 10, "link_bw_Bps": OPA,
             "latency_s": 0.0}, 10, OPA, nic_latency_s=5e-7),
        "cluster-pcie-switch": T.cluster_with_nodes(
            {"kind": "pcie-tree", "n_gpus": 4, "gpus_per_switch": 2, "pcie_bw_Bps": 15.75e9, "latency_s": 1e-6}, 6,
            {"kind": "single-switch", "link_bw_Bps": 6.25e9, "latency_s": 1e-6}, 1, 6.25e9, nic_latency_s=1e-6),
        "cluster-knl-torus": T.cluster_with_nodes(None, 27, {"kind": "torus", "dims": (3, 3, 3), "link_bw_Bps": OPA,
                                                              "latency_s": 1e-6}, 1, OPA, nic_latency_s=1e-6),
        "cluster-dragonfly": T.cluster_with_nodes(
            {"kind": "single-switch", "n_endpoints": 2, "link_bw_Bps": 20e9, "latency_s": 1e-7}, 24,
            {"kind": "dragonfly", "groups": 4, "routers_per_group": 3, "endpoints_per_router": 4,
             "global_links_per_router": 1, "link_bw_Bps": OPA, "global_bw_Bps": OPA, "latency_s": 1e-6}, 2, OPA),
    }


GRAPHS = _graphs()


def _flow_sets(eps: list, seed: int = 0) -> dict[str, list]:
    n = len(eps)
    rng = random.Random(seed)
    perm = list(range(n))
    rng.shuffle(perm)
    sets = {
        "ring": [(eps[i], eps[(i + 1) % n]) for i in range(n)],
        "ring-back": [(eps[(i + 1) % n], eps[i]) for i in range(n)],
        "permutation": [(eps[i], eps[perm[i]]) for i in range(n)],
        "random-pairs": [(eps[rng.randrange(n)], eps[rng.randrange(n)]) for _ in range(3 * n)],
        "incast": [(eps[i], eps[0]) for i in range(n)],
        "self-only": [(eps[1 % n], eps[1 % n])],
        "empty": [],
    }
    k = 1
    while k < n:  # halving-doubling / recursive-doubling partners (beyond n: wrap as the algorithms do)
        sets[f"xor-{k}"] = [(eps[i], eps[(i ^ k) % n]) for i in range(n)]
        k *= 2
    return sets


def _assert_loads_equal(new: dict, ref: dict, what: str) -> None:
    assert set(new) == set(ref), what
    for e, x in ref.items():
        assert new[e] == pytest.approx(x, rel=REL, abs=0), (what, e)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_link_loads_and_flow_times_equal_the_per_flow_code(name):
    G = GRAPHS[name]
    eps = T.endpoints(G)
    for fname, flows in _flow_sets(eps, seed=len(name)).items():
        for routing in R.ROUTINGS:
            what = (name, fname, routing)
            _assert_loads_equal(T.link_loads(G, flows, routing), REF.link_loads(G, flows, routing), what)
            for nb in SIZES:
                assert T.max_flow_time(G, iter(flows), nb, routing) == \
                    pytest.approx(REF.max_flow_time(G, flows, nb, routing), rel=REL, abs=0), (*what, nb)
        # the internal one-pass entry (latency and probe together) used by perfmodel.network
        src = R.node_ids(G, [s for s, _ in flows])
        dst = R.node_ids(G, [d for _, d in flows])
        got = R.flow_times(G, src, dst, SIZES, bw=R.bandwidths(G))
        assert got == pytest.approx([REF.max_flow_time(G, flows, nb) for nb in SIZES], rel=REL, abs=0), name


@pytest.mark.parametrize("name", ["fat-tree-3l-jittered", "torus-2x3x6", "dragonfly", "cluster-dgx1-fat-tree",
                                  "cluster-pcie-switch"])
def test_per_pair_queries_are_unchanged(name):
    G = GRAPHS[name]
    eps = T.endpoints(G)
    for s, d in itertools.islice(itertools.product(eps, eps), 0, None, 7):
        assert T.route_fractions(G, s, d) == REF.route_fractions(G, s, d)
        assert T.route_fractions(G, s, d, "static") == REF.route_fractions(G, s, d, "static")
        assert T.path(G, s, d) == REF.path(G, s, d)


def test_multi_device_placements_and_repeats_on_a_larger_cluster():
    """256 DGX-1 GPUs on a 3-level tree: every halving-doubling distance, with pairs repeated."""
    net = _jitter(T.fat_tree(128, 8, 4, OPA, 1e-6, levels=3, leaves_per_pod=4, uplinks_per_agg=2), 11)
    G = T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100", latency_s=1e-6), 32, net, 4, OPA, nic_latency_s=3e-7)
    eps = T.endpoints(G)
    n = len(eps)
    for k in (1, 4, 8, 32, 128):
        flows = [(eps[i], eps[i ^ k]) for i in range(n)] * 2 + [(eps[i], eps[i]) for i in range(0, n, 9)]
        _assert_loads_equal(T.link_loads(G, flows), REF.link_loads(G, flows), k)
        for nb in SIZES:
            assert T.max_flow_time(G, flows, nb) == pytest.approx(REF.max_flow_time(G, flows, nb), rel=REL, abs=0)


# ----------------------------------------------------------------------------------------------------
# collective profiles

def with_topology(system: SystemSpec, kind: str, **params: Any) -> SystemSpec:
    net = dataclasses.replace(system.network, topology_kind=kind, topology_params=FrozenMap(params))
    tag = "-".join(f"{k}{v}" for k, v in params.items())
    return dataclasses.replace(system, id=f"{system.id}~speed~{kind}~{tag}", network=net)


def _profile_cases():
    knl, dgx = load_system("stampede2-knl"), load_system("dgx1-v100")
    return [
        (knl, 64, 1), (knl, 45, 1), (knl, 37, 2),
        (dgx, 4, 8), (dgx, 9, 8), (dgx, 6, 4), (dgx, 3, 16),
        (load_system("dgx2-v100"), 3, 16),
        (load_system("big-basin-p100"), 5, 8),
        (load_system("tsubame3"), 7, 4),
        (load_system("marenostrum4"), 30, 2),
        (load_system("intel-8180-10gbe"), 4, 2),
        (with_topology(knl, "torus", dims=(4, 4, 2)), 32, 1),
        (with_topology(knl, "torus", dims=(4, 4)), 12, 1),  # a partial torus: single switch
        (with_topology(knl, "dragonfly", groups=3, routers_per_group=2, nodes_per_router=2,
                       global_links_per_router=1), 12, 1),
        (with_topology(dgx, "fat-tree", levels=2, nodes_per_leaf=3, uplinks_per_leaf=5), 7, 8),
    ]


@pytest.mark.parametrize("case", range(len(_profile_cases())))
def test_collective_profiles_equal_the_per_flow_code(case):
    system, nodes, rpn = _profile_cases()[case]
    for name in [*AUTO_CANDIDATES, "parameter_server"]:
        for op in ("allreduce", "reduce_scatter", "allgather", "broadcast"):
            if op not in getattr(get_algorithm(name), "step_ops", ("allreduce",)):
                continue
            new = N._compute_profile(system, nodes, rpn, name, op)
            ref = REF.compute_profile(system, nodes, rpn, name, op)
            assert (new.algorithm, new.op, new.p) == (ref.algorithm, ref.op, ref.p)
            assert new.alpha_s == pytest.approx(ref.alpha_s, rel=REL, abs=0), (system.id, name, op)
            assert new.beta_s_per_B == pytest.approx(ref.beta_s_per_B, rel=REL, abs=0), (system.id, name, op)


def test_profile_errors_are_unchanged():
    knl = load_system("stampede2-knl")
    with pytest.raises(ConfigError):
        N._compute_profile(knl, 4, 1, "auto", "allreduce")
    assert N._compute_profile(knl, 1, 1, "ring", "allreduce") == CollectiveProfile("ring", "allreduce", 1, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------------
# errors and caches

def _error(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc), str(exc), getattr(exc, "field", None)
    return None


def test_errors_are_those_of_the_per_flow_code():
    sw = T.single_switch(4, 1e9, 0.0)
    ft = T.fat_tree(8, 4, 2, 1e9, 0.0)
    cl = GRAPHS["cluster-dgx1-fat-tree"]
    broken = nx.Graph()
    broken.add_edge("a", "b", bw_Bps=1e9, latency_s=0.0)
    broken.add_node("c")
    cases = [
        (sw, [(0, 1), (0, 99)]), (sw, [(0, 99), (98, 1)]), (sw, [([0], 1)]), (sw, [(7, 7)]),
        (ft, [(0, 5), (("leaf", 0), 5)]), (ft, [(0, ("spine", 1))]), (ft, [(("leaf", 0), ("leaf", 0))]),
        (cl, [((0, 0), (1, 1)), ((0, 0), (0, ("nic", 0)))]), (cl, [((0, 0), (9, 0))]),
        (broken, [("a", "b"), ("a", "c")]), (broken, [("c", "a")]),
    ]
    for G, pairs in cases:
        for routing in R.ROUTINGS:
            ref = _error(lambda: REF.link_loads(G, pairs, routing))
            assert ref is not None or G is sw or G is ft, (pairs, routing)
            assert _error(lambda: T.link_loads(G, pairs, routing)) == ref, (pairs, routing)
            assert _error(lambda: T.max_flow_time(G, pairs, 1.0, routing)) == \
                _error(lambda: REF.max_flow_time(G, pairs, 1.0, routing)), (pairs, routing)
    for bad in (("adaptive", 1.0), ("spread", -1.0), ("spread", float("inf")), ("spread", True), ("spread", "1")):
        assert _error(lambda: T.max_flow_time(sw, [(0, 1)], bad[1], bad[0])) == \
            _error(lambda: REF.max_flow_time(sw, [(0, 1)], bad[1], bad[0]))


def test_cache_rules_are_unchanged():
    G = T.fat_tree(32, 8, 4, 1e9, 1e-6)
    flows = [(i, (i + 8) % 32) for i in range(32)]
    assert T.max_flow_time(G, flows, 1e6) == REF.max_flow_time(G, flows, 1e6)
    # bandwidths are read on every call, no cache to clear
    G.edges[("leaf", 0), ("spine", 1)]["bw_Bps"] = 1e8
    assert T.max_flow_time(G, flows, 1e6) == pytest.approx(REF.max_flow_time(G, flows, 1e6), rel=REL)
    assert T.max_flow_time(G, flows, 1e6) > 8 * 1e6 / 1e9
    # latencies are cached with the routes: an in-place edit shows after clear_routes, in both
    G.edges[("leaf", 1), ("spine", 2)]["latency_s"] = 1e-3
    assert T.max_flow_time(G, flows, 0.0) == REF.max_flow_time(G, flows, 0.0) == pytest.approx(4e-6)
    T.clear_routes(G)
    REF.clear_routes(G)
    assert T.max_flow_time(G, flows, 0.0) == pytest.approx(REF.max_flow_time(G, flows, 0.0), rel=REL)
    assert T.max_flow_time(G, flows, 0.0) == pytest.approx(3e-6 + 1e-3)
    # a copy has its own cache; editing it leaves the original alone
    H = G.copy()
    for _, _, d in H.edges(data=True):
        d["latency_s"] = 5e-6
    assert T.max_flow_time(H, flows, 0.0) == pytest.approx(4 * 5e-6)
    assert T.max_flow_time(G, flows, 0.0) == pytest.approx(3e-6 + 1e-3)
    # a cluster whose edges were edited in place (then clear_routes) no longer matches its sub-graphs'
    # latencies: the fast path must notice and still agree with the per-flow code
    C = T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100"), 4,
                             {"kind": "fat-tree", "endpoints_per_leaf": 8, "uplinks_per_leaf": 2,
                              "link_bw_Bps": OPA, "latency_s": 1e-6}, 4, OPA)
    eps = T.endpoints(C)
    ring = [(eps[i], eps[(i + 3) % len(eps)]) for i in range(len(eps))]
    _jitter(C, 5)
    T.clear_routes(C)
    REF.clear_routes(C)
    for nb in SIZES:
        assert T.max_flow_time(C, ring, nb) == pytest.approx(REF.max_flow_time(C, ring, nb), rel=REL, abs=0)
    _assert_loads_equal(T.link_loads(C, ring), REF.link_loads(C, ring), "edited cluster")


def test_pickled_and_deep_copied_graphs_rebuild_their_index():
    import copy
    import pickle

    G = GRAPHS["cluster-dgx1-fat-tree"]
    eps = T.endpoints(G)
    flows = [(eps[i], eps[(i + 9) % len(eps)]) for i in range(len(eps))]
    t = T.max_flow_time(G, flows, 1e6)
    for H in (pickle.loads(pickle.dumps(G)), copy.deepcopy(G)):
        assert H.graph.get("_fast") is None
        assert T.max_flow_time(H, flows, 1e6) == t
        assert T.link_loads(H, flows) == T.link_loads(G, flows)


def test_step_memo_follows_bandwidths_and_clear_routes():
    G = T.fat_tree(32, 8, 4, 1e9, 1e-6)
    flows = [(i, (i + 8) % 32) for i in range(32)]
    src, dst = R.node_ids(G, [s for s, _ in flows]), R.node_ids(G, [d for _, d in flows])
    first = R.flow_times(G, src, dst, (0.0, 1e6), bw=R.bandwidths(G), memo=True)
    assert first == [REF.max_flow_time(G, flows, 0.0), pytest.approx(REF.max_flow_time(G, flows, 1e6), rel=REL)]
    assert R.flow_times(G, src, dst, (0.0, 1e6), bw=R.bandwidths(G), memo=True) == first
    G.edges[("leaf", 0), ("spine", 1)]["bw_Bps"] = 1e8  # new bandwidths: the memo must not answer
    again = R.flow_times(G, src, dst, (0.0, 1e6), bw=R.bandwidths(G), memo=True)
    assert again[1] == pytest.approx(REF.max_flow_time(G, flows, 1e6), rel=REL) and again[1] > first[1]
    G.edges[("leaf", 1), ("spine", 2)]["latency_s"] = 1e-3
    T.clear_routes(G)
    assert R.flow_times(G, src, dst, (0.0,), bw=R.bandwidths(G), memo=True)[0] == pytest.approx(3e-6 + 1e-3)
