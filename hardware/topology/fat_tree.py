"""Folded-Clos fat trees with two or three switch levels and oversubscription.

Structure
---------
Endpoints ``0..N-1`` fill leaf switches in order, ``endpoints_per_leaf`` (E) per leaf; the last leaf may
be partly filled. Every leaf has ``uplinks_per_leaf`` (U) uplinks.

- ``levels=2``: U spine switches ``("spine", j)``; leaf ``("leaf", i)`` has one link to every spine.
- ``levels=3``: leaves are grouped into pods of ``leaves_per_pod`` leaves. Each pod has U aggregation
  switches ``("agg", p, j)``; every leaf of the pod links to every aggregation switch of the pod. Each
  aggregation switch has ``uplinks_per_agg`` (U2) uplinks to the core switches ``("core", j, c)``,
  ``c < U2``: core group ``j`` connects aggregation switch ``j`` of every pod (the k-ary fat-tree wiring).

The spine (or core) count is derived: U spines; U * U2 cores. A large director switch is modelled as its
logical spine planes (e.g. Stampede2's 20 uplinks per leaf are 20 spines although the hardware has six
director chassis) -- an approximation that keeps every switch non-blocking.

Oversubscription
----------------
``oversubscription`` = (E * link_bw) / (U * uplink_bw), the leaf-level ratio (Stampede2: 28 / 20 = 1.4).
Three-level trees also record the aggregation ratio (leaves_per_pod * uplink_bw) / (U2 * core_bw) in
``oversubscription_by_level``.

Bisection (natural partition: endpoints ``< N // 2`` against the rest)
---------------------------------------------------------------------
For full leaves and an even number of leaves (two levels)::

    bisection = (L / 2) * min(E * link_bw, U * uplink_bw)

and for full, even pods (three levels)::

    bisection = (P / 2) * min(leaves_per_pod * min(E * link_bw, U * uplink_bw), U * U2 * core_bw)

In general (partial leaves, odd counts) the builder computes the exact minimum cut of the natural
partition by a recursion over the switch tree (:func:`_tree_cut`); the wiring is symmetric in the spine
index, so the spines (cores) of a level act as one node and the fat tree reduces to a tree.

Routing
-------
- static (:func:`route_static`, what :func:`hardware.topology.routing.path` returns): D-mod-k -- the up
  port is chosen by the destination, aggregation/spine ``j = dst % U`` and core ``c = (dst // U) % U2``;
  the down path is then unique.
- spread (:func:`route_spread`, the default of the load functions): each flow splits evenly over all
  up ports (ECMP / adaptive routing as a fluid model), so all U spine paths carry ``1 / U`` of it.
  :func:`spread_flow_classes` is the same route in closed form for a whole step of flows (the routing
  engine's fast path): endpoint -> leaf and leaf -> endpoint links one per flow, and the leaf -> spine(s)
  -> leaf spread once per distinct pair of leaves.
"""
from __future__ import annotations

from typing import Any, Hashable

import networkx as nx
import numpy as np

from hardware.errors import SpecError
from hardware.topology._common import (
    add_link,
    check_bw,
    check_int,
    check_latency,
    finish_graph,
    new_graph,
    source_of,
)

__all__ = ["fat_tree", "route_static", "route_spread", "spread_flow_classes", "KIND"]

KIND = "fat-tree"

Edge = tuple[Hashable, Hashable]


def _tree_cut(children_costs: list[tuple[float, float]], edge_cap: float) -> tuple[float, float]:
    """Min-cut recursion over a tree.

    Each child gives ``(cost_if_child_on_source_side, cost_if_child_on_sink_side)``; the child hangs off
    its parent by ``edge_cap`` (each direction). Returns the same pair for the parent.
    """
    on_s = sum(min(cs, ct + edge_cap) for cs, ct in children_costs)
    on_t = sum(min(ct, cs + edge_cap) for cs, ct in children_costs)
    return on_s, on_t


def fat_tree(
    n_endpoints: int,
    endpoints_per_leaf: int,
    uplinks_per_leaf: int,
    link_bw_Bps: float,
    latency_s: float,
    levels: int = 2,
    uplink_bw_Bps: float | None = None,
    leaves_per_pod: int | None = None,
    uplinks_per_agg: int | None = None,
    core_bw_Bps: float | None = None,
) -> nx.Graph:
    """Build a two- or three-level fat tree.

    Parameters
    ----------
    n_endpoints : int
        Number of endpoints (hosts or NIC ports), >= 1.
    endpoints_per_leaf : int
        Down ports used per leaf switch (E), >= 1.
    uplinks_per_leaf : int
        Up links per leaf switch (U), >= 1; also the number of spines (or aggregation switches per pod).
    link_bw_Bps : float
        Endpoint-to-leaf link bandwidth, bytes/s per direction.
    latency_s : float
        Latency of every link, seconds (a path pays it once per hop).
    levels : {2, 3}
        Switch levels.
    uplink_bw_Bps : float, optional
        Leaf-to-spine (leaf-to-aggregation) link bandwidth; defaults to ``link_bw_Bps``.
    leaves_per_pod : int, optional
        Three levels only (required there): leaves per pod.
    uplinks_per_agg : int, optional
        Three levels only: up links per aggregation switch (U2); defaults to ``leaves_per_pod``
        (non-blocking aggregation level).
    core_bw_Bps : float, optional
        Three levels only: aggregation-to-core link bandwidth; defaults to ``uplink_bw_Bps``.
    """
    n = check_int(KIND, "n_endpoints", n_endpoints)
    E = check_int(KIND, "endpoints_per_leaf", endpoints_per_leaf)
    U = check_int(KIND, "uplinks_per_leaf", uplinks_per_leaf)
    bw = check_bw(KIND, "link_bw_Bps", link_bw_Bps)
    lat = check_latency(KIND, "latency_s", latency_s)
    levels = check_int(KIND, "levels", levels, minimum=2, maximum=3)
    ub = bw if uplink_bw_Bps is None else check_bw(KIND, "uplink_bw_Bps", uplink_bw_Bps)
    if levels == 2:
        for field, value in (("leaves_per_pod", leaves_per_pod), ("uplinks_per_agg", uplinks_per_agg),
                             ("core_bw_Bps", core_bw_Bps)):
            if value is not None:
                raise SpecError(source_of(KIND), field, value, "only used with levels=3")
        lpp, U2, cb = 1, 1, ub  # unused with two levels
    else:
        if leaves_per_pod is None:
            raise SpecError(source_of(KIND), "leaves_per_pod", None, "required with levels=3")
        lpp = check_int(KIND, "leaves_per_pod", leaves_per_pod)
        U2 = lpp if uplinks_per_agg is None else check_int(KIND, "uplinks_per_agg", uplinks_per_agg)
        cb = ub if core_bw_Bps is None else check_bw(KIND, "core_bw_Bps", core_bw_Bps)

    n_leaves = -(-n // E)
    params: dict[str, Any] = {
        "n_endpoints": n, "endpoints_per_leaf": E, "uplinks_per_leaf": U, "link_bw_Bps": bw,
        "latency_s": lat, "levels": levels, "uplink_bw_Bps": ub,
    }
    if levels == 3:
        params.update(leaves_per_pod=lpp, uplinks_per_agg=U2, core_bw_Bps=cb)
    G = new_graph(KIND, f"fat-tree-{levels}l-{n}x{E}d{U}u", params, "fat-tree")

    half_n = n // 2
    leaf_counts: list[tuple[int, int]] = []  # (endpoints in half 0, in half 1) per leaf
    for i in range(n_leaves):
        members = range(i * E, min((i + 1) * E, n))
        a = sum(1 for e in members if e < half_n)
        b = len(members) - a
        leaf_counts.append((a, b))
        leaf = ("leaf", i)
        G.add_node(leaf, kind="switch", level=1, half=0 if b == 0 else (1 if a == 0 else None))
        for e in members:
            G.add_node(e, kind="endpoint", leaf=i, half=0 if e < half_n else 1)
            add_link(G, e, leaf, bw, lat, "network")

    over_leaf = (E * bw) / (U * ub)
    cl = U * ub
    if levels == 2:
        for j in range(U):
            G.add_node(("spine", j), kind="switch", level=2, half=None)
        for i in range(n_leaves):
            for j in range(U):
                add_link(G, ("leaf", i), ("spine", j), ub, lat, "uplink")
        leaf_costs = [(b * bw, a * bw) for a, b in leaf_counts]
        bis = min(_tree_cut(leaf_costs, cl))
        diameter = 0 if n == 1 else (2 if n_leaves == 1 else 4)
        facts: dict[str, Any] = {
            "oversubscription": over_leaf, "oversubscription_by_level": (over_leaf,),
            "n_leaves": n_leaves, "n_spines": U,
        }
    else:
        n_pods = -(-n_leaves // lpp)
        for p in range(n_pods):
            pod_leaves = range(p * lpp, min((p + 1) * lpp, n_leaves))
            a = sum(leaf_counts[i][0] for i in pod_leaves)
            b = sum(leaf_counts[i][1] for i in pod_leaves)
            for j in range(U):
                G.add_node(("agg", p, j), kind="switch", level=2, pod=p,
                           half=0 if b == 0 else (1 if a == 0 else None))
                for i in pod_leaves:
                    add_link(G, ("leaf", i), ("agg", p, j), ub, lat, "uplink")
        for j in range(U):
            for c in range(U2):
                G.add_node(("core", j, c), kind="switch", level=3, half=None)
                for p in range(n_pods):
                    add_link(G, ("agg", p, j), ("core", j, c), cb, lat, "uplink")
        pod_costs = []
        for p in range(n_pods):
            leaves = [(leaf_counts[i][1] * bw, leaf_counts[i][0] * bw)
                      for i in range(p * lpp, min((p + 1) * lpp, n_leaves))]
            pod_costs.append(_tree_cut(leaves, cl))
        bis = min(_tree_cut(pod_costs, U * U2 * cb))
        diameter = 0 if n == 1 else (2 if n_leaves == 1 else (4 if n_pods == 1 else 6))
        over_agg = (lpp * ub) / (U2 * cb)
        facts = {
            "oversubscription": over_leaf, "oversubscription_by_level": (over_leaf, over_agg),
            "n_leaves": n_leaves, "n_pods": n_pods, "n_aggs": n_pods * U, "n_cores": U * U2,
        }
    return finish_graph(G, list(range(n)), bis, diameter, **facts)


# ----------------------------------------------------------------------------------------------------
# routing (called through hardware.topology.routing)

def _layout(G: nx.Graph) -> tuple[int, int, int, int, int]:
    g = G.graph
    lpp = g.get("leaves_per_pod") or 1
    return g["levels"], g["endpoints_per_leaf"], g["uplinks_per_leaf"], lpp, g.get("uplinks_per_agg") or 1


def route_static(G: nx.Graph, src: int, dst: int) -> list[Edge]:
    """D-mod-k route from ``src`` to ``dst`` (endpoint ids); see the module docstring."""
    levels, E, U, lpp, U2 = _layout(G)
    ls, ld = src // E, dst // E
    Ls, Ld = ("leaf", ls), ("leaf", ld)
    if ls == ld:
        return [(src, Ls), (Ls, dst)]
    j = dst % U
    if levels == 2:
        S = ("spine", j)
        return [(src, Ls), (Ls, S), (S, Ld), (Ld, dst)]
    ps, pd = ls // lpp, ld // lpp
    if ps == pd:
        A = ("agg", ps, j)
        return [(src, Ls), (Ls, A), (A, Ld), (Ld, dst)]
    c = (dst // U) % U2
    As, C, Ad = ("agg", ps, j), ("core", j, c), ("agg", pd, j)
    return [(src, Ls), (Ls, As), (As, C), (C, Ad), (Ad, Ld), (Ld, dst)]


def route_spread(G: nx.Graph, src: int, dst: int) -> list[tuple[Edge, float]]:
    """Even split over all up ports (fluid ECMP); returns ``[(directed edge, fraction), ...]``."""
    levels, E, U, lpp, U2 = _layout(G)
    ls, ld = src // E, dst // E
    Ls, Ld = ("leaf", ls), ("leaf", ld)
    if ls == ld:
        return [((src, Ls), 1.0), ((Ls, dst), 1.0)]
    out: list[tuple[Edge, float]] = [((src, Ls), 1.0)]
    f = 1.0 / U
    ps, pd = ls // lpp, ld // lpp
    if levels == 2 or ps == pd:
        for j in range(U):
            mid = ("spine", j) if levels == 2 else ("agg", ps, j)
            out.append(((Ls, mid), f))
            out.append(((mid, Ld), f))
    else:
        fc = f / U2
        for j in range(U):
            As, Ad = ("agg", ps, j), ("agg", pd, j)
            out.append(((Ls, As), f))
            out.append(((Ad, Ld), f))
            for c in range(U2):
                C = ("core", j, c)
                out.append(((As, C), fc))
                out.append(((C, Ad), fc))
    out.append(((Ld, dst), 1.0))
    return out


# ----------------------------------------------------------------------------------------------------
# closed-form spread routes for the routing engine's fast path

class _Tables:
    """Edge ids of a fat tree by position: ``up[x]`` / ``down[x]`` endpoint (node id x) <-> its leaf,
    ``leaf[x]`` its leaf; two levels (or the pod level): ``lu[i, j]`` leaf i -> spine / aggregation j of
    its pod, ``dl[j, k]`` spine / aggregation j of leaf k's pod -> leaf k; three levels: ``ac[p, j, c]``
    aggregation (p, j) -> core (j, c), ``ca[j, c, p]`` core (j, c) -> aggregation (p, j)."""

    def __init__(self, G: nx.Graph, ix) -> None:
        levels, E, U, lpp, U2 = _layout(G)
        n = G.graph["n_endpoints"]
        n_leaves = -(-n // E)
        eid, nid = ix.edge_id, ix.node_id
        N = len(ix.nodes)
        self.levels, self.U, self.U2, self.lpp, self.n_leaves = levels, U, U2, lpp, n_leaves
        self.leaf = np.full(N, -1, dtype=np.int64)
        self.up = np.full(N, -1, dtype=np.int64)
        self.down = np.full(N, -1, dtype=np.int64)
        for e in range(n):
            x, L = nid[e], ("leaf", e // E)
            self.leaf[x] = e // E
            self.up[x] = eid[(e, L)]
            self.down[x] = eid[(L, e)]

        def mid(i: int, j: int) -> Hashable:
            return ("spine", j) if levels == 2 else ("agg", i // lpp, j)

        self.lu = np.array([[eid[(("leaf", i), mid(i, j))] for j in range(U)] for i in range(n_leaves)],
                           dtype=np.int64).reshape(n_leaves, U)
        self.dl = np.array([[eid[(mid(k, j), ("leaf", k))] for k in range(n_leaves)] for j in range(U)],
                           dtype=np.int64).reshape(U, n_leaves)
        if levels == 3:
            n_pods = -(-n_leaves // lpp)
            self.ac = np.array([[[eid[(("agg", p, j), ("core", j, c))] for c in range(U2)] for j in range(U)]
                                for p in range(n_pods)], dtype=np.int64).reshape(n_pods, U, U2)
            self.ca = np.array([[[eid[(("core", j, c), ("agg", p, j))] for p in range(n_pods)] for c in range(U2)]
                                for j in range(U)], dtype=np.int64).reshape(U, U2, n_pods)


def _tables(G: nx.Graph, ix) -> _Tables | None:
    if "fat-tree" not in ix.tables:
        try:
            ix.tables["fat-tree"] = _Tables(G, ix)
        except (KeyError, TypeError):  # not the builder's wiring (edited in place): per-pair routes
            ix.tables["fat-tree"] = None
    return ix.tables["fat-tree"]


def spread_flow_classes(G: nx.Graph, ix, src: np.ndarray, dst: np.ndarray) -> list | None:
    """The spread routes of the flows ``src[f] -> dst[f]`` (endpoint node ids of the routing engine's
    index ``ix``, ``src != dst``) as flow classes of :mod:`hardware.topology.routing`: the same edges,
    fractions and latencies as :func:`route_spread`, with the switch part computed once per leaf pair."""
    from hardware.topology.routing import _Direct, _FlowClass, _Seg

    t = _tables(G, ix)
    if t is None:
        return None
    lat = ix.lat
    ls, ld = t.leaf[src], t.leaf[dst]
    out = []
    same = ls == ld
    fi = np.flatnonzero(same)
    if fi.size:
        out.append(_FlowClass(fi, [_Direct(t.up[src[fi]]), _Direct(t.down[dst[fi]])]))
    if fi.size == src.size:
        return out
    U, f = t.U, 1.0 / t.U
    if t.levels == 2:
        groups = [np.flatnonzero(~same)]
    else:
        ps, pd = ls // t.lpp, ld // t.lpp
        groups = [np.flatnonzero(~same & (ps == pd)), np.flatnonzero(ps != pd)]
    for g, fl in enumerate(groups):
        if fl.size == 0:
            continue
        uk, inv = np.unique(ls[fl] * t.n_leaves + ld[fl], return_inverse=True)
        a, b = uk // t.n_leaves, uk % t.n_leaves
        up, down = t.lu[a], t.dl[:, b].T                                   # (M, U) each
        if g == 0:  # leaf -> spine / aggregation j -> leaf, 1/U each
            edge = np.concatenate([up, down], axis=1)
            frac = np.full(edge.shape, f)
            seg_lat = (lat[up] + lat[down]).max(axis=1)
        else:       # leaf -> agg j -> core (j, c) -> agg j -> leaf: 1/U below the cores, 1/(U U2) through them
            U2 = t.U2
            fc = f / U2
            pa, pb = a // t.lpp, b // t.lpp
            ac = t.ac[pa]                                                   # (M, U, U2)
            ca = np.moveaxis(t.ca[:, :, pb], 2, 0)                          # (M, U, U2)
            M = uk.size
            edge = np.concatenate([up, down, ac.reshape(M, U * U2), ca.reshape(M, U * U2)], axis=1)
            frac = np.concatenate([np.full((M, 2 * U), f), np.full((M, 2 * U * U2), fc)], axis=1)
            seg_lat = (lat[up][:, :, None] + lat[ac] + lat[ca] + lat[down][:, :, None]).reshape(M, U * U2).max(axis=1)
        width = edge.shape[1]
        indptr = np.arange(uk.size + 1, dtype=np.int64) * width
        seg = _Seg(indptr, edge.reshape(-1), frac.reshape(-1), seg_lat, inv.reshape(-1))
        out.append(_FlowClass(fl, [_Direct(t.up[src[fl]]), seg, _Direct(t.down[dst[fl]])]))
    return out
