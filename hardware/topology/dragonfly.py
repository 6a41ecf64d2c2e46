"""Dragonfly networks (Kim, Dally, Scott, Abts 2008; Cray Aries / Cori): all-to-all groups joined by
global links.

Structure
---------
``groups`` (g) groups of ``routers_per_group`` (a) routers ``("router", i, k)``; each router serves
``endpoints_per_router`` (p) endpoints and has ``global_links_per_router`` (h) global ports. Endpoints
are ints ``0..g*a*p-1``: endpoint ``e`` sits on router ``e // p`` (global router index), i.e. group
``e // (a*p)``. Within a group every pair of routers has one local link (``link_bw_Bps``, kind
``"local"``); endpoint links use ``link_bw_Bps`` too (kind ``"network"``); global links use
``global_bw_Bps`` (kind ``"global"``).

Global arrangement (balanced, deterministic)
--------------------------------------------
Each group has ``a*h`` global ports and must reach the ``g - 1`` other groups, so ``g <= a*h + 1`` is
required (otherwise some groups would have no direct link; not supported). Every pair of groups gets
``base = (a*h) // (g - 1)`` links; the ``extra = (a*h) % (g - 1)`` ports left per group are wired as a
circulant graph (group ``i`` to ``i +- 1, ..., i +- extra//2`` and, for odd ``extra`` with even g, to
``i + g/2``), so every pair gets ``base`` or ``base + 1`` links. If ``g * extra`` is odd, one port per
group stays unused. A group lists its global links by target group and sends the ``s``-th of them from
router ``s % a`` (round robin), which spreads the links to one group over different routers. Two links
that join the same pair of routers are aggregated on one edge (``links`` = 2, twice the bandwidth).

Closed forms
------------
- diameter: at most 3 router hops (local-global-local) plus the two endpoint links, i.e. 5 hops between
  endpoints; the builder computes the exact value of this arrangement (it can be smaller for small
  networks, e.g. 2 groups) by checking one- and two-hop reachability between routers.
- natural partition: groups ``< g // 2`` against the rest. ``bisection = min(C * global_bw,
  min(|A|, |B|) * link_bw)`` with C the global links crossing. APPROXIMATION: this ignores local links as
  a bottleneck and assumes an even arrangement (exact when the global cut or the endpoint cut is the
  minimum cut, which holds when local links are at least as fast as the global share of a router; it
  over-estimates when global links are much faster than local ones, e.g. 10x on 3 routers per group).
  With a single group the partition is by router (``k < a // 2``) and the value
  ``min(endpoint cut, local links between the halves)``, the same approximation.

Routing (minimal: at most one global hop)
-----------------------------------------
Same router: endpoint-router-endpoint. Same group: one local hop. Other group: local hop to the router
holding a global link to the destination group (none if the source router holds it), the global hop,
local hop to the destination router (none if the link lands there). Static routing picks link
``dst % m`` among the ``m`` global links between the two groups; spread routing splits evenly over all
``m``. This is the dragonfly's minimal routing, not always the graph-shortest path (a route through a
third group can be shorter in small networks).
"""
from __future__ import annotations

from typing import Hashable

import networkx as nx

from hardware.errors import SpecError
from hardware.topology._common import add_link, check_bw, check_int, check_latency, finish_graph, new_graph, source_of

__all__ = ["dragonfly", "route_static", "route_spread", "KIND"]

KIND = "dragonfly"

Edge = tuple[Hashable, Hashable]


def _pair_multiplicity(g: int, ports: int) -> dict[tuple[int, int], int]:
    """Global links between each unordered pair of groups ``(i, j)``, ``i < j``, in the balanced
    arrangement: ``base`` links per pair plus a circulant graph of degree ``extra`` (see module doc)."""
    mult: dict[tuple[int, int], int] = {}
    if g < 2:
        return mult
    base, extra = divmod(ports, g - 1)
    for i in range(g):
        for j in range(i + 1, g):
            mult[(i, j)] = base
    # extra <= g - 2, so every offset o <= extra // 2 is < g / 2 and the edges {i, i + o} are distinct
    for o in range(1, extra // 2 + 1):
        for i in range(g):
            j = (i + o) % g
            mult[(min(i, j), max(i, j))] += 1
    if extra % 2 == 1 and g % 2 == 0:
        for i in range(g // 2):
            mult[(i, i + g // 2)] += 1
    return mult


def dragonfly(
    groups: int,
    routers_per_group: int,
    endpoints_per_router: int,
    global_links_per_router: int,
    link_bw_Bps: float,
    global_bw_Bps: float,
    latency_s: float,
) -> nx.Graph:
    """Build a dragonfly with a balanced global-link arrangement (see the module docstring).

    Parameters
    ----------
    groups : int
        Number of groups g, >= 1 and <= routers_per_group * global_links_per_router + 1.
    routers_per_group : int
        Routers per group a, >= 1 (all-to-all local links).
    endpoints_per_router : int
        Endpoints per router p, >= 1 (Aries: 4 nodes per router).
    global_links_per_router : int
        Global ports per router h, >= 1 (>= 0 allowed only with one group).
    link_bw_Bps : float
        Endpoint and local link bandwidth, bytes/s per direction.
    global_bw_Bps : float
        Global link bandwidth, bytes/s per direction.
    latency_s : float
        Latency of every link, seconds.
    """
    g = check_int(KIND, "groups", groups)
    a = check_int(KIND, "routers_per_group", routers_per_group)
    p = check_int(KIND, "endpoints_per_router", endpoints_per_router)
    h = check_int(KIND, "global_links_per_router", global_links_per_router, minimum=0 if g == 1 else 1)
    bw = check_bw(KIND, "link_bw_Bps", link_bw_Bps)
    gbw = check_bw(KIND, "global_bw_Bps", global_bw_Bps)
    lat = check_latency(KIND, "latency_s", latency_s)
    if g > a * h + 1:
        raise SpecError(source_of(KIND), "groups", g,
                        f"must be <= routers_per_group * global_links_per_router + 1 = {a * h + 1} "
                        "(every pair of groups needs a direct global link)")
    params = {"groups": g, "routers_per_group": a, "endpoints_per_router": p, "global_links_per_router": h,
              "link_bw_Bps": bw, "global_bw_Bps": gbw, "latency_s": lat}
    G = new_graph(KIND, f"dragonfly-g{g}a{a}p{p}h{h}", params, "dragonfly")
    n = g * a * p

    def R(i: int, k: int) -> tuple[str, int, int]:
        return ("router", i, k)

    # natural partition: by group (g >= 2), else by router (a >= 2), else by endpoint
    def router_half(i: int, k: int) -> int | None:
        if g > 1:
            return 0 if i < g // 2 else 1
        if a > 1:
            return 0 if k < a // 2 else 1
        return None

    for i in range(g):
        for k in range(a):
            G.add_node(R(i, k), kind="router", group=i, half=router_half(i, k))
    for e in range(n):
        i, k = divmod(e // p, a)
        half = router_half(i, k)
        G.add_node(e, kind="endpoint", group=i, router=k, half=(0 if e < n // 2 else 1) if half is None else half)
        add_link(G, e, R(i, k), bw, lat, "network")
    for i in range(g):
        for k in range(a):
            for k2 in range(k + 1, a):
                add_link(G, R(i, k), R(i, k2), bw, lat, "local")

    mult = _pair_multiplicity(g, a * h)
    # per group: ordered list of (target group, index) -> slot number -> router slot % a
    slot: dict[tuple[int, int, int], int] = {}
    for i in range(g):
        s = 0
        for j in range(g):
            if j == i:
                continue
            for m in range(mult[(min(i, j), max(i, j))]):
                slot[(i, j, m)] = s
                s += 1
    links: dict[tuple[int, int], list[tuple[tuple, tuple]]] = {}
    for (i, j), c in mult.items():
        lst = []
        for m in range(c):
            ri, rj = R(i, slot[(i, j, m)] % a), R(j, slot[(j, i, m)] % a)
            add_link(G, ri, rj, gbw, lat, "global")
            lst.append((ri, rj))
        links[(i, j)] = lst
        links[(j, i)] = [(y, x) for x, y in lst]
    G.graph["_global_links"] = links

    cross = sum(c for (i, j), c in mult.items() if (i < g // 2) != (j < g // 2))
    if g > 1:
        n_a = (g // 2) * a * p
        bis = min(cross * gbw, min(n_a, n - n_a) * bw)
    elif a > 1:  # one group split by routers: endpoint cut or the local links between the halves
        ra = a // 2
        bis = min(ra * p * bw, ra * (a - ra) * bw)
    else:  # a single router: a star
        bis = (n // 2) * bw
    diameter = 0 if n == 1 else 2 + _router_diameter(g, a, links)
    return finish_graph(G, list(range(n)), bis, diameter, n_routers=g * a,
                        n_global_links=sum(mult.values()), global_links_between_halves=cross)


def _router_diameter(g: int, a: int, links: dict[tuple[int, int], list[tuple[tuple, tuple]]]) -> int:
    """Exact router-level diameter of the arrangement (0, 1, 2 or 3)."""
    if g == 1:
        return 1 if a > 1 else 0
    glob: dict[tuple, set] = {}
    for lst in links.values():
        for x, y in lst:
            glob.setdefault(x, set()).add(y)
    routers = [("router", i, k) for i in range(g) for k in range(a)]
    groups_of = {r: {y[1] for y in glob.get(r, ())} for r in routers}
    lacking = {(j, i): [("router", j, k) for k in range(a) if i not in groups_of[("router", j, k)]]
               for i in range(g) for j in range(g) if i != j}
    diam = 1 if a > 1 else 0
    for r in routers:
        i = r[1]
        two_global = set()
        for x in glob.get(r, ()):
            two_global |= glob.get(x, set())
        for j in range(g):
            if j == i:
                continue
            if j in groups_of[r]:  # direct global link to j: 1 hop to its landing routers, 2 to the rest
                d = 1 if len({y for y in glob[r] if y[1] == j}) == a else 2
            else:  # 2 hops if r' links to group i or two global hops reach it, else local-global-local
                d = 3 if any(x not in two_global for x in lacking[(j, i)]) else 2
            if d > diam:
                diam = d
                if diam == 3:
                    return 3
    return diam


def _group_route(G: nx.Graph, src: int, dst: int, link: tuple[tuple, tuple]) -> list[Edge]:
    p, a = G.graph["endpoints_per_router"], G.graph["routers_per_group"]
    rs = ("router",) + divmod(src // p, a)
    rd = ("router",) + divmod(dst // p, a)
    x, y = link
    out: list[Edge] = [(src, rs)]
    if x != rs:
        out.append((rs, x))
    out.append((x, y))
    if y != rd:
        out.append((y, rd))
    out.append((rd, dst))
    return out


def _local(G: nx.Graph, src: int, dst: int) -> list[Edge] | None:
    p, a = G.graph["endpoints_per_router"], G.graph["routers_per_group"]
    rs = ("router",) + divmod(src // p, a)
    rd = ("router",) + divmod(dst // p, a)
    if rs == rd:
        return [(src, rs), (rs, dst)]
    if rs[1] == rd[1]:
        return [(src, rs), (rs, rd), (rd, dst)]
    return None


def route_static(G: nx.Graph, src: int, dst: int) -> list[Edge]:
    """Minimal route through global link ``dst % m`` of the ``m`` links between the two groups."""
    local = _local(G, src, dst)
    if local is not None:
        return local
    ap = G.graph["endpoints_per_router"] * G.graph["routers_per_group"]
    lst = G.graph["_global_links"][(src // ap, dst // ap)]
    return _group_route(G, src, dst, lst[dst % len(lst)])


def route_spread(G: nx.Graph, src: int, dst: int) -> list[tuple[Edge, float]]:
    """Minimal routes split evenly over all global links between the two groups."""
    local = _local(G, src, dst)
    if local is not None:
        return [(e, 1.0) for e in local]
    ap = G.graph["endpoints_per_router"] * G.graph["routers_per_group"]
    lst = G.graph["_global_links"][(src // ap, dst // ap)]
    f = 1.0 / len(lst)
    acc: dict[Edge, float] = {}
    for link in lst:
        for e in _group_route(G, src, dst, link):
            acc[e] = acc.get(e, 0.0) + f
    return list(acc.items())
