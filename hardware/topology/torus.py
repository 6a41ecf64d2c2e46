"""k-ary n-cube tori (rings, 2D and 3D tori) with wraparound links; every torus node is an endpoint.

Structure
---------
``dims = (d0, d1[, d2])``. Endpoint ``i`` (int) has coordinate ``coord`` in row-major order (the last
dimension varies fastest). Along a dimension of size ``d >= 3`` every node links to its ``+1`` neighbour
modulo ``d`` (a ring of ``d`` links). A dimension of size 2 has a single link per pair (the two
"directions" reach the same neighbour; we do not double it) and a dimension of size 1 has none.

Closed forms (P = prod(dims), b = link bandwidth)
-------------------------------------------------
- links: ``sum over dims of (P if d >= 3, P / 2 if d == 2, 0 if d == 1)``;
- diameter ``sum(d // 2)`` hops;
- natural partition: cut the largest dimension D (the first one if several) into ``coord < D // 2`` and
  the rest. Two planes of ``P / D`` links cross it when ``D >= 3`` (one plane when D = 2), so
  ``bisection = 2 * P / D * b`` (D >= 3), ``P / 2 * b`` (D = 2). For odd D the two sides differ by one
  plane of nodes; the value is still the exact cut of that partition.

Routing
-------
Dimension-order routing: correct dimension 0 first, then 1, then 2, each along the shorter way round.
When both ways are equally long (``d`` even, offset ``d / 2``) the static route takes the ``+``
direction and the spread route splits the flow half and half between the two directions.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import networkx as nx

from hardware.errors import SpecError
from hardware.topology._common import add_link, check_bw, check_int, check_latency, finish_graph, new_graph, source_of

__all__ = ["torus", "route_static", "route_spread", "KIND"]

KIND = "torus"

Edge = tuple[Hashable, Hashable]


def _strides(dims: Sequence[int]) -> list[int]:
    strides = [1] * len(dims)
    for k in range(len(dims) - 2, -1, -1):
        strides[k] = strides[k + 1] * dims[k + 1]
    return strides


def _coord(i: int, dims: Sequence[int]) -> list[int]:
    out = []
    for d in reversed(dims):
        i, r = divmod(i, d)
        out.append(r)
    return out[::-1]


def torus(dims: Sequence[int], link_bw_Bps: float, latency_s: float) -> nx.Graph:
    """Build a torus of shape ``dims`` (1 to 3 dimensions) with wraparound links.

    Parameters
    ----------
    dims : sequence of int
        Size of each dimension, each >= 1, e.g. ``(4, 4)`` or ``(8, 8, 16)``.
    link_bw_Bps : float
        Bandwidth of each link, bytes/s per direction.
    latency_s : float
        Latency of each link (one hop), seconds.
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not 1 <= len(dims) <= 3:
        raise SpecError(source_of(KIND), "dims", dims, "must be a sequence of 1 to 3 integers")
    dims_t = tuple(check_int(KIND, f"dims[{k}]", d) for k, d in enumerate(dims))
    bw = check_bw(KIND, "link_bw_Bps", link_bw_Bps)
    lat = check_latency(KIND, "latency_s", latency_s)
    P = 1
    for d in dims_t:
        P *= d
    strides = _strides(dims_t)
    axis = max(range(len(dims_t)), key=lambda k: (dims_t[k], -k))
    D = dims_t[axis]
    G = new_graph(KIND, "torus-" + "x".join(map(str, dims_t)),
                  {"dims": dims_t, "link_bw_Bps": bw, "latency_s": lat}, "torus")
    for i in range(P):
        c = _coord(i, dims_t)
        G.add_node(i, kind="endpoint", coord=tuple(c), half=0 if c[axis] < D // 2 else 1)
    for i in range(P):
        c = _coord(i, dims_t)
        for k, d in enumerate(dims_t):
            if d == 1 or (d == 2 and c[k] == 1):
                continue
            j = i + (((c[k] + 1) % d) - c[k]) * strides[k]
            add_link(G, i, j, bw, lat, "network")
    cut_links = 2 * P // D if D >= 3 else (P // 2 if D == 2 else 0)
    return finish_graph(G, list(range(P)), cut_links * bw, sum(d // 2 for d in dims_t),
                        bisection_axis=axis, strides=tuple(strides))


def _walk(i: int, k: int, steps: int, sign: int, dims: Sequence[int], strides: Sequence[int]) -> tuple[list[Edge], int]:
    """Edges of ``steps`` hops along dimension ``k`` in direction ``sign`` from endpoint ``i``."""
    d, s = dims[k], strides[k]
    edges = []
    for _ in range(steps):
        c = (i // s) % d
        j = i + (((c + sign) % d) - c) * s
        edges.append((i, j))
        i = j
    return edges, i


def _segments(G: nx.Graph, src: int, dst: int) -> list[list[tuple[list[Edge], float]]]:
    dims, strides = G.graph["dims"], G.graph["strides"]
    segs = []
    cur = src
    for k, d in enumerate(dims):
        cs, cd = (cur // strides[k]) % d, (dst // strides[k]) % d
        delta = (cd - cs) % d
        if delta == 0:
            continue
        if d == 2:
            edges, cur2 = _walk(cur, k, 1, 1, dims, strides)
            segs.append([(edges, 1.0)])
        elif delta < d - delta:
            edges, cur2 = _walk(cur, k, delta, 1, dims, strides)
            segs.append([(edges, 1.0)])
        elif delta > d - delta:
            edges, cur2 = _walk(cur, k, d - delta, -1, dims, strides)
            segs.append([(edges, 1.0)])
        else:
            plus, cur2 = _walk(cur, k, delta, 1, dims, strides)
            minus, _ = _walk(cur, k, delta, -1, dims, strides)
            segs.append([(plus, 0.5), (minus, 0.5)])
        cur = cur2
    return segs


def route_static(G: nx.Graph, src: int, dst: int) -> list[Edge]:
    """Dimension-order route; ties go the ``+`` way."""
    return [e for seg in _segments(G, src, dst) for e in seg[0][0]]


def route_spread(G: nx.Graph, src: int, dst: int) -> list[tuple[Edge, float]]:
    """Dimension-order route; ties split half and half between the two directions."""
    return [(e, f) for seg in _segments(G, src, dst) for edges, f in seg for e in edges]
