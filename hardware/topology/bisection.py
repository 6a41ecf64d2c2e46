"""Bisection bandwidth: the builders' closed forms and the checkers that verify them.

Every builder marks its *natural partition* on the nodes: ``half`` is 0 or 1 on every endpoint and on
the switches that clearly belong to one side (a leaf whose endpoints are all on side 0, a torus node, a
dragonfly group's routers), and ``None`` on shared switches (spines, cores, a crossbar). The closed form
``G.graph["bisection_bw_Bps"]`` is the minimum cut between the half-0 and the half-1 endpoints, i.e. the
maximum flow between the two halves (bytes/s, each direction; full-duplex links count once).
"""
from __future__ import annotations

from typing import Hashable, Iterable

import networkx as nx

from hardware.errors import SpecError
from hardware.topology._common import endpoints

__all__ = [
    "bisection_bandwidth",
    "natural_halves",
    "natural_side",
    "cut_bandwidth",
    "max_flow_bandwidth",
    "tree_min_cut",
]


def _source(G: nx.Graph) -> str:
    return f"topology:{G.graph.get('kind', 'graph')}"


def bisection_bandwidth(G: nx.Graph) -> float:
    """The builder's closed-form bisection bandwidth (bytes/s per direction) of the natural partition."""
    value = G.graph.get("bisection_bw_Bps")
    if value is None:
        raise SpecError(_source(G), "bisection_bw_Bps", None, "graph was not made by a topology builder")
    return float(value)


def natural_halves(G: nx.Graph) -> tuple[list[Hashable], list[Hashable]]:
    """Endpoints of the natural partition: ``(half 0, half 1)``, each in endpoint order."""
    eps = endpoints(G)
    a = [e for e in eps if G.nodes[e].get("half") == 0]
    b = [e for e in eps if G.nodes[e].get("half") == 1]
    return a, b


def natural_side(G: nx.Graph) -> set[Hashable]:
    """All nodes (endpoints and switches) marked ``half == 0``; shared switches are left to side 1."""
    return {u for u, h in G.nodes(data="half") if h == 0}


def cut_bandwidth(G: nx.Graph, part_a: Iterable[Hashable]) -> float:
    """Sum of ``bw_Bps`` over the edges with exactly one end in ``part_a`` (bytes/s per direction)."""
    side = set(part_a)
    missing = [u for u in side if u not in G]
    if missing:
        raise SpecError(_source(G), "part_a", missing[0], "not a node of the graph")
    return float(sum(bw for u, v, bw in G.edges(data="bw_Bps") if (u in side) != (v in side)))


def max_flow_bandwidth(
    G: nx.Graph,
    part_a: Iterable[Hashable] | None = None,
    part_b: Iterable[Hashable] | None = None,
) -> float:
    """Maximum flow (bytes/s) from the endpoints ``part_a`` to the endpoints ``part_b``.

    Each undirected edge is two arcs of capacity ``bw_Bps``. Defaults to the natural halves. Uses
    networkx's max-flow: meant for checking closed forms on small graphs (it is slow on large ones).
    """
    if part_a is None or part_b is None:
        na, nb = natural_halves(G)
        part_a = na if part_a is None else part_a
        part_b = nb if part_b is None else part_b
    a, b = list(part_a), list(part_b)
    if not a or not b:
        return 0.0
    D = nx.DiGraph()
    for u, v, bw in G.edges(data="bw_Bps"):
        D.add_edge(u, v, capacity=bw)
        D.add_edge(v, u, capacity=bw)
    s, t = ("_source",), ("_sink",)
    for e in a:
        D.add_edge(s, e)  # no capacity attribute: infinite
    for e in b:
        D.add_edge(e, t)
    return float(nx.maximum_flow_value(D, s, t))


def tree_min_cut(G: nx.Graph, root: Hashable) -> float:
    """Minimum cut between the half-0 and the half-1 endpoints of a tree-shaped ``G``.

    Recursion over the tree rooted at ``root``: for each node, the cheapest cut of its subtree with the
    node on the source side and on the sink side; a child on the other side than its parent cuts the
    edge between them (``bw_Bps``, the same each direction).
    """
    inf = float("inf")
    order: list[Hashable] = []
    parent: dict[Hashable, Hashable | None] = {root: None}
    stack = [root]
    while stack:
        u = stack.pop()
        order.append(u)
        for v in G.neighbors(u):
            if v not in parent:
                parent[v] = u
                stack.append(v)
    cost: dict[Hashable, tuple[float, float]] = {}
    for u in reversed(order):
        data = G.nodes[u]
        on_s, on_t = 0.0, 0.0
        if data.get("kind") == "endpoint":
            if data.get("half") == 0:
                on_t = inf
            elif data.get("half") == 1:
                on_s = inf
        for v in G.neighbors(u):
            if parent.get(v) == u:
                cs, ct = cost.pop(v)
                cap = G.edges[u, v]["bw_Bps"]
                on_s += min(cs, ct + cap)
                on_t += min(ct, cs + cap)
        cost[u] = (on_s, on_t)
    return float(min(cost[root]))
