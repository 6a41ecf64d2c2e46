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

Fast engine (what :func:`link_loads` and :func:`max_flow_time` run)
-------------------------------------------------------------------
A step of thousands of flows is priced with numpy, not flow by flow. Each graph gets an index
(``G.graph["_fast"]``: integer ids of its nodes and directed edges, the edges' latencies, route tables;
dropped by :func:`clear_routes`, rebuilt for a copy). The flows are split into *classes*; the routes of
a class are a series of *parts* (the route of a flow is the concatenation of its parts, each joined to
the next at one node, so its latency is the sum of the parts' and its bottleneck the max of theirs):

- a direct part: one edge per flow with fraction 1 (device -> NIC, endpoint -> leaf);
- a segment part: a table of sub-routes (CSR: edge ids, fractions, longest-path latency) shared by the
  flows that use them (a fat tree's leaf -> spines -> leaf spread for each leaf pair; a network route
  for each NIC pair; a node-graph route for each device pair).

Loads are one ``np.bincount`` over the parts (a shared segment weighted by the number of its flows);
then ``time(n) = max_f [latency_f + n * max_{e in f} load_e / bw_e]`` per flow, as above. Families
provide ``spread_flow_classes(G, index, src, dst)`` for the closed form of their spread routes (fat tree:
per leaf pair; cluster: the node graph's and the network's classes, mapped onto the cluster's edges, so a
route between two NICs is computed once for all the devices behind them); every other case (static
routing, the other families) uses the cached per-pair routes above as one segment part over the step's
distinct pairs. The results equal the per-flow computation up to the order of floating-point sums
(checked to 1e-12 relative in tests/test_routing_speed.py against a verbatim copy of it). Any error falls
back to the per-flow code, so the first bad pair (in order) raises the same SpecError as before.

Internal entry points for the collective pricing (not exported): :func:`node_ids` (endpoints to index
ids), :func:`bandwidths` (every edge's ``bw_Bps``, read now), :func:`flow_times` (one pricing of a step
for several message sizes, optionally memoised per flow pattern and bandwidths: collective algorithms
share patterns) and :func:`graph_memo` (callers' per-graph scratch, dropped with the routes).
"""
from __future__ import annotations

import hashlib
import importlib
import itertools
import weakref
from operator import itemgetter
from collections import deque
from typing import Hashable, Iterable, Sequence

import networkx as nx
import numpy as np

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
    """Drop the cached routes (and breadth-first trees, and the fast engine's index) of ``G``."""
    G.graph.pop("_routes", None)
    G.graph.pop("_bfs", None)
    G.graph.pop("_fast", None)


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
    priced = _price_pairs(G, list(pairs), routing)
    if priced is None:
        return {}
    edges = priced.index.edges
    return dict(zip(map(edges.__getitem__, priced.used.tolist()), priced.loads[priced.used].tolist()))


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
    priced = _price_pairs(G, list(pairs), routing)
    return 0.0 if priced is None else priced.time(nbytes)


# ----------------------------------------------------------------------------------------------------
# fast engine (see the module docstring): integer index, flow classes, numpy pricing

_BW = itemgetter("bw_Bps")


class _Index:
    """Integer ids of the nodes and directed edges of one graph, the edges' latencies (read when the
    index is built) and the engine's route tables."""

    __slots__ = ("owner", "nodes", "node_id", "edges", "edge_id", "edge_data", "lat", "is_endpoint",
                 "pair_routes", "tables", "memo", "memo_bw", "__weakref__")

    def __init__(self, G: nx.Graph):
        self.owner = weakref.ref(G)
        self.nodes = list(G.nodes)
        self.node_id = dict(zip(self.nodes, range(len(self.nodes))))
        self.is_endpoint = np.array([k == "endpoint" for _, k in G.nodes(data="kind")], dtype=bool)
        edges: list[Edge] = []
        data: list[dict] = []
        for u, nbrs in G.adj.items():
            edges.extend(zip(itertools.repeat(u), nbrs))
            data.extend(nbrs.values())
        self.edges = edges
        self.edge_id = dict(zip(edges, range(len(edges))))
        self.edge_data = data
        self.lat = np.array([d.get("latency_s", np.nan) for d in data], dtype=float)
        self.pair_routes: dict[str, dict[int, tuple[np.ndarray, np.ndarray, float]]] = {"spread": {}, "static": {}}
        self.tables: dict = {}  # family tables (spread_flow_classes; None = not applicable), graph_memo
        self.memo: dict[tuple, tuple[float, ...]] = {}  # flow_times(..., memo=True) results, valid for memo_bw
        self.memo_bw: np.ndarray | None = None

    def __reduce__(self):
        # a pickled or deep-copied graph drops its index (G.graph["_fast"] becomes None): rebuilt on use
        return (_no_index, ())


def _no_index() -> None:
    return None


def _index(G: nx.Graph) -> _Index:
    """The fast engine's index of ``G`` (built on first use; a copy of ``G`` builds its own)."""
    ix = G.graph.get("_fast")
    if ix is None or ix.owner() is not G:
        ix = _Index(G)
        G.graph["_fast"] = ix
    return ix


class _Direct:
    """A part of one edge per flow (fraction 1): ``edge[f]`` is the edge id of flow ``f`` of the class."""

    __slots__ = ("edge",)

    def __init__(self, edge: np.ndarray):
        self.edge = edge


class _Seg:
    """A part made of shared sub-routes: segment ``k`` crosses ``edge[indptr[k]:indptr[k+1]]`` with
    fractions ``frac[...]`` and has longest-path latency ``lat[k]``; flow ``f`` of the class uses segment
    ``which[f]`` (``which`` None: segment ``f``). Segments are never empty."""

    __slots__ = ("indptr", "edge", "frac", "lat", "which")

    def __init__(self, indptr: np.ndarray, edge: np.ndarray, frac: np.ndarray, lat: np.ndarray,
                 which: np.ndarray | None):
        self.indptr, self.edge, self.frac, self.lat, self.which = indptr, edge, frac, lat, which


class _FlowClass:
    """Flows ``flows`` (indices into the arrays given to the class builder) and the parts of their
    routes, in order from source to destination."""

    __slots__ = ("flows", "parts")

    def __init__(self, flows: np.ndarray, parts: list):
        self.flows, self.parts = flows, parts


def _csr_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the entries of CSR ``rows`` (in that order): ``(new indptr, positions, lengths)``."""
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    new = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lens, out=new[1:])
    pos = np.arange(new[-1], dtype=np.int64) - np.repeat(new[:-1] - starts, lens)
    return new, pos, lens


def _map_part(part, edge_map: np.ndarray, per_flow: np.ndarray | None = None):
    """``part`` with its edge ids translated: ``edge_map[e]`` (a sub-graph shared by all flows) or, with
    ``per_flow``, ``edge_map[per_flow[f], e]`` (a sub-graph copied per node: segments become per flow)."""
    if isinstance(part, _Direct):
        return _Direct(edge_map[part.edge] if per_flow is None else edge_map[per_flow, part.edge])
    if per_flow is None:
        return _Seg(part.indptr, edge_map[part.edge], part.frac, part.lat, part.which)
    rows = np.arange(per_flow.size, dtype=np.int64) if part.which is None else part.which
    indptr, pos, lens = _csr_rows(part.indptr, rows)
    return _Seg(indptr, edge_map[np.repeat(per_flow, lens), part.edge[pos]], part.frac[pos], part.lat[rows], None)


def _pair_arrays(G: nx.Graph, ix: _Index, src: Hashable, dst: Hashable,
                 routing: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The cached per-pair route of ``src -> dst`` as (edge ids, fractions, latency)."""
    eid = ix.edge_id
    if routing == "static":
        edges, lat = _static(G, src, dst)
        return (np.fromiter((eid[e] for e in edges), dtype=np.int64, count=len(edges)),
                np.ones(len(edges)), lat)
    items, lat = _spread(G, src, dst)
    return (np.fromiter((eid[e] for e, _ in items), dtype=np.int64, count=len(items)),
            np.fromiter((f for _, f in items), dtype=float, count=len(items)), lat)


def _pair_classes(G: nx.Graph, ix: _Index, src: np.ndarray, dst: np.ndarray, routing: str) -> list[_FlowClass]:
    """One class: a segment part over the distinct (src, dst) pairs, from the per-pair routes."""
    n = len(ix.nodes)
    uk, inv = np.unique(src * n + dst, return_inverse=True)
    routes = ix.pair_routes[routing]
    nodes = ix.nodes
    edges, fracs = [], []
    lat = np.empty(uk.size)
    lens = np.empty(uk.size, dtype=np.int64)
    for i, k in enumerate(uk.tolist()):
        r = routes.get(k)
        if r is None:
            a, b = divmod(k, n)
            r = routes[k] = _pair_arrays(G, ix, nodes[a], nodes[b], routing)
        edges.append(r[0])
        fracs.append(r[1])
        lat[i] = r[2]
        lens[i] = r[0].size
    indptr = np.zeros(uk.size + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    seg = _Seg(indptr, np.concatenate(edges), np.concatenate(fracs), lat, inv.reshape(-1))
    return [_FlowClass(np.arange(src.size, dtype=np.int64), [seg])]


def _flow_classes(G: nx.Graph, ix: _Index, src: np.ndarray, dst: np.ndarray, routing: str) -> list[_FlowClass]:
    """Classes of the flows ``src[f] -> dst[f]`` (node ids of ``ix``, ``src != dst``, endpoints where the
    family requires them)."""
    if routing == "spread":
        fam = _family(G)
        build = getattr(fam, "spread_flow_classes", None) if fam is not None else None
        if build is not None:
            out = build(G, ix, src, dst)
            if out is not None:
                return out
    return _pair_classes(G, ix, src, dst, routing)


class _Priced:
    """A priced step: link loads (by edge id) and, per flow, latency and bottleneck ``load / bw``."""

    __slots__ = ("index", "loads", "used", "lat", "ratio")

    def __init__(self, index: _Index, loads: np.ndarray, used: np.ndarray, lat: list, ratio: list):
        self.index, self.loads, self.used, self.lat, self.ratio = index, loads, used, lat, ratio

    def time(self, nbytes: float) -> float:
        """``max_f [latency_f + nbytes * ratio_f]`` (0.0 for no flows), seconds."""
        nb = float(nbytes)
        worst = 0.0
        for lat, r in zip(self.lat, self.ratio):
            if lat.size:
                t = float(np.max(lat + nb * r))
                if t > worst:
                    worst = t
        return worst


def _price(ix: _Index, classes: list[_FlowClass], bw: np.ndarray | None = None) -> _Priced:
    """Loads and per-flow latency / bottleneck of ``classes``. ``bw``: bandwidth of every edge id (read
    fresh from the graph for the loaded edges when None)."""
    n_edges = len(ix.edges)
    idx, wts = [], []
    for c in classes:
        for part in c.parts:
            if isinstance(part, _Direct):
                idx.append(part.edge)
                wts.append(np.ones(part.edge.size))
            else:
                idx.append(part.edge)
                if part.which is None:
                    wts.append(part.frac)
                else:
                    count = np.bincount(part.which, minlength=part.lat.size).astype(float)
                    wts.append(part.frac * np.repeat(count, np.diff(part.indptr)))
    if idx:
        loads = np.bincount(np.concatenate(idx), weights=np.concatenate(wts), minlength=n_edges)
    else:
        loads = np.zeros(n_edges)
    used = np.flatnonzero(loads)
    if bw is None:
        data = ix.edge_data
        bw_used = np.fromiter(map(_BW, map(data.__getitem__, used.tolist())), dtype=float, count=used.size)
    else:
        bw_used = bw[used]
    if np.any(bw_used == 0):
        raise ZeroDivisionError("float division by zero")  # what the per-flow code raised
    ratio = np.zeros(n_edges)
    ratio[used] = loads[used] / bw_used
    lats, ratios = [], []
    for c in classes:
        lat = r = None
        for part in reversed(c.parts):  # right to left, as the longest-path recursion adds them
            if isinstance(part, _Direct):
                pl, pr = ix.lat[part.edge], ratio[part.edge]
            else:
                seg_r = np.maximum.reduceat(ratio[part.edge], part.indptr[:-1]) if part.edge.size else \
                    np.zeros(part.lat.size)
                if part.which is None:
                    pl, pr = part.lat, seg_r
                else:
                    pl, pr = part.lat[part.which], seg_r[part.which]
            lat = pl if lat is None else pl + lat
            r = pr if r is None else np.maximum(pr, r)
        if lat is not None:
            lats.append(lat)
            ratios.append(r)
    return _Priced(ix, loads, used, lats, ratios)


class _Fallback(Exception):
    """The fast path cannot take these pairs: run the per-flow code (it raises the right error)."""


def _slow_check(G: nx.Graph, pairs: Sequence[tuple[Hashable, Hashable]], routing: str) -> None:
    """Route every pair in order with the per-flow code, raising the error the first bad pair raises."""
    route = _static if routing == "static" else _spread
    for s, d in pairs:
        route(G, s, d)


def _price_pairs(G: nx.Graph, pairs: list, routing: str, bw: np.ndarray | None = None) -> _Priced | None:
    """Price the flows ``pairs`` (node pairs) with the fast engine; None when no pair has two distinct
    ends. Errors are those of the per-flow code, raised for the first bad pair."""
    if not pairs:
        return None
    ix = _index(G)
    nid = ix.node_id
    try:
        src_nodes, dst_nodes = zip(*pairs)  # a ValueError for pairs that are not pairs, as before
        get = nid.__getitem__
        try:
            src = np.fromiter(map(get, src_nodes), dtype=np.int64, count=len(pairs))
            dst = np.fromiter(map(get, dst_nodes), dtype=np.int64, count=len(pairs))
        except (KeyError, TypeError):
            raise _Fallback from None
        return _price_ids(G, ix, src, dst, routing, bw)
    except (_Fallback, SpecError) as exc:
        _slow_check(G, pairs, routing)
        if isinstance(exc, SpecError):
            raise
        raise AssertionError("fast routing refused pairs that the per-flow code accepts") from exc


def _price_ids(G: nx.Graph, ix: _Index, src: np.ndarray, dst: np.ndarray, routing: str,
               bw: np.ndarray | None = None) -> _Priced | None:
    keep = src != dst
    if not keep.all():
        src, dst = src[keep], dst[keep]
    if src.size == 0:
        return None
    if G.graph.get("routing", "shortest") != "shortest":
        ep = ix.is_endpoint
        if not (ep[src].all() and ep[dst].all()):
            raise _Fallback
    return _price(ix, _flow_classes(G, ix, src, dst, routing), bw)


# internal API for the collective pricing (perfmodel.network, perfmodel.sim.flows)

def node_ids(G: nx.Graph, nodes: Iterable[Hashable]) -> np.ndarray:
    """Integer ids of ``nodes`` in ``G``'s fast-engine index (for :func:`flow_times`). Not exported."""
    nid = _index(G).node_id
    try:
        return np.fromiter((nid[n] for n in nodes), dtype=np.int64)
    except (KeyError, TypeError):
        for n in nodes:
            _check_nodes(G, n, n)
        raise


def bandwidths(G: nx.Graph) -> np.ndarray:
    """``bw_Bps`` of every directed edge of ``G``, by fast-engine edge id, read now. Not exported."""
    data = _index(G).edge_data
    return np.fromiter(map(_BW, data), dtype=float, count=len(data))


def graph_memo(G: nx.Graph) -> dict:
    """A scratch dict for callers' per-graph derived data (node-id arrays); it lives as long as the
    routes do (:func:`clear_routes` drops it; a copy of ``G`` gets its own). Not exported."""
    return _index(G).tables.setdefault("graph_memo", {})


def flow_times(G: nx.Graph, src: np.ndarray, dst: np.ndarray, nbytes: Sequence[float], routing: str = "spread",
               bw: np.ndarray | None = None, memo: bool = False) -> list[float]:
    """``[max_flow_time(G, flows, n) for n in nbytes]`` for the flows ``src[f] -> dst[f]`` given as node ids
    (:func:`node_ids`), priced once. ``bw`` as returned by :func:`bandwidths` (None: read now).

    ``memo=True`` (with ``bw``) remembers the answer for this exact flow list, routing, sizes and
    bandwidths (collective algorithms share step patterns); :func:`clear_routes` forgets it. Not exported.
    """
    _check_routing(G, routing)
    ix = _index(G)
    src = np.ascontiguousarray(src, dtype=np.int64)
    dst = np.ascontiguousarray(dst, dtype=np.int64)
    key = None
    if memo and bw is not None:
        if ix.memo_bw is None or not np.array_equal(ix.memo_bw, bw):
            ix.memo.clear()
            ix.memo_bw = np.array(bw, dtype=float)
        digest = hashlib.blake2b(src.tobytes(), digest_size=16)
        digest.update(dst.tobytes())
        key = (routing, src.size, digest.digest(), tuple(float(n) for n in nbytes))
        hit = ix.memo.get(key)
        if hit is not None:
            return list(hit)
    try:
        priced = _price_ids(G, ix, src, dst, routing, bw)
    except (_Fallback, SpecError):
        pairs = [(ix.nodes[a], ix.nodes[b]) for a, b in zip(src.tolist(), dst.tolist())]
        return [max_flow_time(G, pairs, n, routing) for n in nbytes]
    out = [0.0 if priced is None else priced.time(n) for n in nbytes]
    if key is not None:
        ix.memo[key] = tuple(out)
    return out
