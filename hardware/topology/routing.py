"""Paths, link loads and the time of simultaneous flows on a topology graph.

Routing families (``G.graph["routing"]``, set by the builder)
-------------------------------------------------------------
- ``"shortest"`` (single switch, NVLink, NVSwitch, PCIe): static = the breadth-first shortest path
  (ties: the neighbour inserted first by the builder); spread = per-hop ECMP, at every node the flow
  splits evenly over the neighbours one hop closer to the destination.
- ``"fat-tree"``: static = D-mod-k on the destination; spread = even split over all up ports.
- ``"torus"``: dimension-order routing; ties (offset d/2) static ``+``, spread half and half.
- ``"dragonfly"``: minimal routing (one global hop); static picks global link ``dst % m``, spread splits
  evenly over the ``m`` global links between the two groups.
- ``"cluster"`` (two-level graphs): inside a node the node graph's routing; between nodes device ->
  its NIC -> the network's routing -> NIC -> device.
See each builder module for the details.

Static routes (one path per pair) are what :func:`path`, :func:`bottleneck_bw` and
:func:`path_latency` use. The load functions default to the spread routes: they model adaptive routing
or ECMP hashing over many packets as a fluid, so a fat tree's oversubscription shows up as exactly its
ratio; pass ``routing="static"`` for the single-path (D-mod-k) picture with its hot spots.

Flow-time model (:func:`max_flow_time`)
---------------------------------------
All flows start together and carry ``nbytes`` each. A directed link carrying load ``L`` (flows, possibly
fractional) shares its bandwidth equally, so the flows finish by ``nbytes * L / bw``. A flow takes its
path latency plus the time of its most loaded link::

    time = max over flows f of [ latency(f) + nbytes * max over links e of f (L_e / bw_e) ]

APPROXIMATION: bottleneck fair sharing; a flow slowed elsewhere does not hand its share of a link to the
others (max-min fairness would), so the time is exact for the most loaded link's flows and conservative
for the rest -- the makespan is exact whenever the most loaded link is every flow's bottleneck (the
collective patterns this is used for). A flow from an endpoint to itself crosses no link and costs 0.

Caching: routes and their latencies are computed once per (graph, src, dst) and kept in
``G.graph["_routes"]`` (a copy made with ``G.copy()`` starts its own cache). Bandwidths are read fresh on
every call; after editing the structure or ``latency_s`` of a graph in place, call :func:`clear_routes`.
"""
from __future__ import annotations

import importlib
from collections import deque
from typing import Hashable, Iterable

import networkx as nx

from hardware.errors import SpecError

__all__ = [
    "path",
    "bottleneck_bw",
    "path_latency",
    "link_loads",
    "max_flow_time",
    "route_fractions",
    "clear_routes",
    "ROUTINGS",
]

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
    G.graph.pop("_routes", None)
    G.graph.pop("_bfs", None)


def _cache(G: nx.Graph) -> dict[str, dict]:
    # G.copy() copies G.graph shallowly, so a copy would share the dict: the owner check gives the copy
    # (whose attributes may be edited) a cache of its own
    cache = G.graph.get("_routes")
    if cache is None or cache.get("owner") != id(G):
        cache = {"owner": id(G), "static": {}, "spread": {}}
        G.graph["_routes"] = cache
        G.graph["_bfs"] = {}
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
    cache = G.graph["_bfs"]
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
