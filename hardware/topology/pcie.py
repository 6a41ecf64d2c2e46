"""PCIe trees inside one server: GPUs on PCIe switches under the CPU sockets' root complexes.

Structure
---------
GPU ``i`` (endpoints ``0..n-1``) sits on PCIe switch ``("pcie", i // gpus_per_switch)``; switch ``s`` of
``S`` hangs off socket ``("cpu", s * sockets // S)`` (switches are spread over the sockets in blocks, e.g.
the DGX-1: two PLX switches per CPU, two GPUs per switch). The sockets are joined all-to-all by one
UPI/QPI link per pair (kind ``"upi"``).

Assumptions
-----------
- ``pcie_bw_Bps`` is the GPU link (x16 gen3: 15.75 GB/s raw per direction); the switch-to-root link
  defaults to the same width (``uplink_bw_Bps``).
- APPROXIMATION: the socket link defaults to ``pcie_bw_Bps`` when ``socket_link_bw_Bps`` is not given
  (no sourced QPI/UPI figure in hardware_specs.md); pass the real value when known.
- GPU peer traffic across sockets goes GPU -> switch -> CPU -> CPU -> switch -> GPU (5 hops).

Closed forms
------------
- nodes ``n + S + sockets``; edges ``n + S + sockets*(sockets-1)/2``;
- diameter: 5 when GPUs sit under two or more sockets, 4 when under one socket with several switches,
  2 with a single switch (0 for one GPU);
- natural partition: the first ``n // 2`` GPUs against the rest. With one or two sockets the graph is a
  tree and the bisection is its exact minimum cut by the tree recursion (for the DGX-1 layout:
  ``min(socket link, 2 * uplink, 4 * pcie)``); with more sockets the builder solves the (tiny) max-flow
  problem with networkx instead.
"""
from __future__ import annotations

import networkx as nx

from hardware.topology._common import add_link, check_bw, check_int, check_latency, finish_graph, new_graph
from hardware.topology.bisection import max_flow_bandwidth, tree_min_cut

__all__ = ["pcie_tree", "KIND"]

KIND = "pcie-tree"


def pcie_tree(
    n_gpus: int,
    gpus_per_switch: int,
    pcie_bw_Bps: float,
    latency_s: float,
    sockets: int = 2,
    uplink_bw_Bps: float | None = None,
    socket_link_bw_Bps: float | None = None,
) -> nx.Graph:
    """Build a PCIe tree of ``n_gpus`` GPUs under ``sockets`` CPU sockets.

    Parameters
    ----------
    n_gpus : int
        GPUs (endpoints ``0..n_gpus-1``), >= 1.
    gpus_per_switch : int
        GPUs per PCIe switch, >= 1.
    pcie_bw_Bps : float
        GPU-to-switch link bandwidth, bytes/s per direction.
    latency_s : float
        Latency of every link, seconds.
    sockets : int
        CPU sockets (root complexes), >= 1, joined all-to-all by UPI/QPI links.
    uplink_bw_Bps : float, optional
        Switch-to-root-complex bandwidth; defaults to ``pcie_bw_Bps``.
    socket_link_bw_Bps : float, optional
        UPI/QPI link bandwidth per direction; defaults to ``pcie_bw_Bps`` (an approximation, see above).
    """
    n = check_int(KIND, "n_gpus", n_gpus)
    gps = check_int(KIND, "gpus_per_switch", gpus_per_switch)
    bw = check_bw(KIND, "pcie_bw_Bps", pcie_bw_Bps)
    lat = check_latency(KIND, "latency_s", latency_s)
    n_sock = check_int(KIND, "sockets", sockets)
    ubw = bw if uplink_bw_Bps is None else check_bw(KIND, "uplink_bw_Bps", uplink_bw_Bps)
    sbw = bw if socket_link_bw_Bps is None else check_bw(KIND, "socket_link_bw_Bps", socket_link_bw_Bps)
    n_sw = -(-n // gps)
    params = {"n_gpus": n, "gpus_per_switch": gps, "pcie_bw_Bps": bw, "latency_s": lat, "sockets": n_sock,
              "uplink_bw_Bps": ubw, "socket_link_bw_Bps": sbw}
    G = new_graph(KIND, f"pcie-tree-{n}g{gps}s{n_sock}", params, "shortest")

    def half_of(members: list[int]) -> int | None:
        halves = {0 if i < n // 2 else 1 for i in members}
        return halves.pop() if len(halves) == 1 else None

    sock_of_sw = [s * n_sock // n_sw for s in range(n_sw)]
    for c in range(n_sock):
        gpus = [i for i in range(n) if sock_of_sw[i // gps] == c]
        G.add_node(("cpu", c), kind="cpu", half=half_of(gpus))
    for s in range(n_sw):
        gpus = list(range(s * gps, min((s + 1) * gps, n)))
        G.add_node(("pcie", s), kind="switch", half=half_of(gpus))
        add_link(G, ("pcie", s), ("cpu", sock_of_sw[s]), ubw, lat, "pcie")
        for i in gpus:
            G.add_node(i, kind="endpoint", half=0 if i < n // 2 else 1)
            add_link(G, i, ("pcie", s), bw, lat, "pcie")
    for c in range(n_sock):
        for c2 in range(c + 1, n_sock):
            add_link(G, ("cpu", c), ("cpu", c2), sbw, lat, "upi")

    used_sockets = set(sock_of_sw)
    if n == 1:
        diameter = 0
    elif len(used_sockets) > 1:
        diameter = 5
    elif n_sw > 1:
        diameter = 4
    else:
        diameter = 2
    bis = tree_min_cut(G, ("cpu", 0)) if n_sock <= 2 else max_flow_bandwidth(G)
    return finish_graph(G, list(range(n)), bis, diameter, n_switches=n_sw)
