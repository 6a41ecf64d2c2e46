"""One crossbar switch with every endpoint on its own port (a star).

Assumptions
-----------
- The switch is non-blocking: only the endpoint links limit traffic.
- ``latency_s`` is per link, so an endpoint-to-endpoint message pays ``2 * latency_s``.

Closed forms (N endpoints, link bandwidth b)
--------------------------------------------
- nodes ``N + 1``, edges ``N``; diameter 2 hops (0 for N = 1);
- bisection (first ``N // 2`` endpoints against the rest): ``(N // 2) * b``.
"""
from __future__ import annotations

import networkx as nx

from hardware.topology._common import add_link, check_bw, check_int, check_latency, finish_graph, new_graph

__all__ = ["single_switch", "KIND"]

KIND = "single-switch"
SWITCH = ("switch", 0)


def single_switch(n_endpoints: int, link_bw_Bps: float, latency_s: float) -> nx.Graph:
    """Build a star of ``n_endpoints`` endpoints (ints ``0..N-1``) around one switch ``("switch", 0)``.

    Parameters
    ----------
    n_endpoints : int
        Number of endpoints, >= 1.
    link_bw_Bps : float
        Bandwidth of each endpoint link, bytes/s per direction.
    latency_s : float
        Latency of each link, seconds.
    """
    n = check_int(KIND, "n_endpoints", n_endpoints)
    bw = check_bw(KIND, "link_bw_Bps", link_bw_Bps)
    lat = check_latency(KIND, "latency_s", latency_s)
    G = new_graph(KIND, f"single-switch-{n}", {"n_endpoints": n, "link_bw_Bps": bw, "latency_s": lat}, "shortest")
    G.add_node(SWITCH, kind="switch", half=None)
    for e in range(n):
        G.add_node(e, kind="endpoint", half=0 if e < n // 2 else 1)
        add_link(G, e, SWITCH, bw, lat, "network")
    return finish_graph(G, list(range(n)), (n // 2) * bw, 2 if n > 1 else 0, oversubscription=1.0)
