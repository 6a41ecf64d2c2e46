"""Two-level graphs: a cluster of identical nodes (each with an internal graph) joined by a network.

Structure
---------
- Node ``n`` (``0..n_nodes-1``) is a copy of ``node_graph`` whose nodes ``x`` become ``(n, x)``; its
  endpoints ``(n, local)`` are the cluster's endpoints, listed node by node in the node graph's endpoint
  order. Each carries ``group = node = n`` (used by :func:`hardware.topology.placement.place_ranks`).
- Each node has ``nics_per_node`` NICs ``(n, ("nic", k))`` (kind ``"nic"``). The node's ``i``-th device
  links to NIC ``i % nics_per_node`` by an edge of ``nic_bw_Bps`` (kind ``"nic"``): the host side of the
  NIC (PCIe and the NIC's injection rate), modelled as one direct link.
- The network is built by the registry from ``network = {"kind": ..., **params}`` with
  ``n_nodes * nics_per_node`` endpoints (injected as ``n_endpoints`` for the kinds that take it; other
  kinds must produce exactly that many). Network endpoint ``m`` becomes NIC ``m % nics_per_node`` of node
  ``m // nics_per_node`` (a node's NICs are neighbours in the network, e.g. on the same leaf); the other
  network nodes (switches, routers) keep their ids.

Routing (family ``"cluster"``)
------------------------------
Between devices of one node: the node graph's own routing (never through the NIC). Between nodes:
device -> its NIC -> the network's routing -> the destination's NIC -> device.
:func:`spread_flow_classes` (the routing engine's fast path for a step of flows) prices the node-graph
and network parts on those graphs' own engines -- a network route once per pair of NICs, whatever the
devices behind them -- and maps their edges onto the cluster's.

Closed forms
------------
- ``diameter_hops``: the longest *routed* endpoint path, ``max(node diameter, network diameter + 2)``
  (for two or more nodes). APPROXIMATION: with several NICs per node the network's diametral pair may sit
  on one node, and then this is an upper bound.
- Natural partition: the network's; a device takes its NIC's half (node-internal switches take their
  devices' half when they agree). ``bisection_bw_Bps = min(network bisection, host-side capacity of
  either half) + sum of the internal cuts of the nodes split between the halves``, where a NIC's
  host-side capacity is ``min(devices on it * nic_bw, its network links)`` and a split node's internal
  cut is the max-flow between its two groups of devices inside the node graph. It is exact
  (``bisection_exact``) when every NIC carries devices whose links are at least as fast as the NIC's
  network links and no node is split; otherwise it is an APPROXIMATION.
"""
from __future__ import annotations

import inspect
from typing import Any, Hashable, Mapping

import networkx as nx
import numpy as np

from hardware.errors import SpecError
from hardware.topology import routing as _routing
from hardware.topology._common import add_link, check_bw, check_int, check_latency, endpoints, finish_graph, new_graph
from hardware.topology.bisection import max_flow_bandwidth

__all__ = ["cluster_with_nodes", "single_device", "route_static", "route_spread", "spread_flow_classes", "KIND"]

KIND = "cluster"
_SOURCE = f"topology:{KIND}"

Edge = tuple[Hashable, Hashable]


def single_device() -> nx.Graph:
    """Node graph of a node with one device (endpoint ``0``): a CPU host or a KNL node."""
    G = new_graph("single-device", "single-device", {}, "shortest")
    G.add_node(0, kind="endpoint", half=0)
    return finish_graph(G, [0], 0.0, 0)


def _build_sub(spec: Any, field: str, extra: Mapping[str, Any] | None = None) -> nx.Graph:
    from hardware.topology import BUILDERS, build  # registry lives in the package

    if isinstance(spec, nx.Graph):
        return spec
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise SpecError(_SOURCE, field, spec, "must be a topology graph or a mapping with a 'kind' key")
    params = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if extra:
        builder = BUILDERS.get(kind)
        if builder is not None:
            accepted = inspect.signature(builder).parameters
            for k, v in extra.items():
                if k in accepted:
                    if k in params and params[k] != v:
                        raise SpecError(_SOURCE, f"{field}.{k}", params[k], f"must be {v} (n_nodes * nics_per_node)")
                    params[k] = v
    return build(kind, **params)


def cluster_with_nodes(
    node_graph: nx.Graph | Mapping[str, Any] | None,
    n_nodes: int,
    network: nx.Graph | Mapping[str, Any],
    nics_per_node: int,
    nic_bw_Bps: float,
    nic_latency_s: float = 0.0,
) -> nx.Graph:
    """Build a cluster of ``n_nodes`` copies of ``node_graph`` joined by ``network``.

    Parameters
    ----------
    node_graph : networkx.Graph, mapping or None
        The node's internal graph (e.g. ``dgx1_hybrid_cube_mesh()``), or a registry spec
        ``{"kind": ..., **params}``, or None for one device per node.
    n_nodes : int
        Number of nodes, >= 1.
    network : networkx.Graph or mapping
        Registry spec of the network, e.g. ``{"kind": "fat-tree", "endpoints_per_leaf": 28, ...}``
        (``n_endpoints`` is filled in), or an already built graph with ``n_nodes * nics_per_node``
        endpoints.
    nics_per_node : int
        NICs per node, >= 1.
    nic_bw_Bps : float
        Device-to-NIC bandwidth, bytes/s per direction.
    nic_latency_s : float
        Latency of the device-to-NIC hop, seconds.
    """
    n_nodes = check_int(KIND, "n_nodes", n_nodes)
    nics = check_int(KIND, "nics_per_node", nics_per_node)
    nic_bw = check_bw(KIND, "nic_bw_Bps", nic_bw_Bps)
    nic_lat = check_latency(KIND, "nic_latency_s", nic_latency_s)
    node_tpl = single_device() if node_graph is None else _build_sub(node_graph, "node_graph")
    n_nics = n_nodes * nics
    net = _build_sub(network, "network", {"n_endpoints": n_nics})
    net_eps = endpoints(net)
    if len(net_eps) != n_nics:
        raise SpecError(_SOURCE, "network", net.graph.get("name", "network"),
                        f"has {len(net_eps)} endpoints, needs n_nodes * nics_per_node = {n_nics}")
    dev_local = endpoints(node_tpl)
    if not dev_local:
        raise SpecError(_SOURCE, "node_graph", node_tpl.graph.get("name", "node_graph"), "has no endpoints")

    params = {"n_nodes": n_nodes, "nics_per_node": nics, "nic_bw_Bps": nic_bw, "nic_latency_s": nic_lat,
              "node_kind": node_tpl.graph.get("kind", "custom"), "network_kind": net.graph.get("kind", "custom")}
    G = new_graph(KIND, f"cluster-{n_nodes}x{node_tpl.graph.get('name', 'node')}-{net.graph.get('name', 'net')}",
                  params, "cluster")

    # network first, with its endpoints renamed to NICs
    net_map: dict[Hashable, Hashable] = {}
    for m, e in enumerate(net_eps):
        net_map[e] = (m // nics, ("nic", m % nics))
    for u, data in net.nodes(data=True):
        v = net_map.get(u, u)
        attrs = dict(data)
        if u in net_map:
            attrs.update(kind="nic", group=v[0], node=v[0], network_endpoint=u)
        G.add_node(v, **attrs)
    for u, v, data in net.edges(data=True):
        G.add_edge(net_map.get(u, u), net_map.get(v, v), **data)

    nic_devices = [[i for i in range(len(dev_local)) if i % nics == k] for k in range(nics)]
    ep_ids: list[Hashable] = []
    split_nodes = 0
    intra_cut = 0.0
    intra_cache: dict[tuple, float] = {}
    for n in range(n_nodes):
        nic_half = [G.nodes[(n, ("nic", k))].get("half") for k in range(nics)]
        dev_half = {x: nic_half[i % nics] for i, x in enumerate(dev_local)}
        if len(set(dev_half.values())) > 1:  # a node split between the halves: its own links cross too
            split_nodes += 1
            key = tuple(dev_half[x] for x in dev_local)
            if key not in intra_cache:
                intra_cache[key] = max_flow_bandwidth(node_tpl, [x for x in dev_local if dev_half[x] == 0],
                                                      [x for x in dev_local if dev_half[x] == 1])
            intra_cut += intra_cache[key]
        for x, data in node_tpl.nodes(data=True):
            attrs = dict(data)
            attrs.update(group=n, node=n, local=x)
            if attrs.get("kind") == "endpoint":
                attrs["half"] = dev_half[x]
            else:
                node_halves = set(dev_half.values())
                attrs["half"] = node_halves.pop() if len(node_halves) == 1 else None
            G.add_node((n, x), **attrs)
        for u, v, data in node_tpl.edges(data=True):
            G.add_edge((n, u), (n, v), **data)
        for i, x in enumerate(dev_local):
            G.nodes[(n, x)]["nic"] = i % nics
            add_link(G, (n, x), (n, ("nic", i % nics)), nic_bw, nic_lat, "nic")
            ep_ids.append((n, x))

    # closed forms
    inj = {0: 0.0, 1: 0.0}
    exact = split_nodes == 0
    for n in range(n_nodes):
        for k in range(nics):
            nic = (n, ("nic", k))
            cap = sum(net.edges[net_eps[n * nics + k], w]["bw_Bps"] for w in net.neighbors(net_eps[n * nics + k]))
            host = len(nic_devices[k]) * nic_bw
            if host < cap or not nic_devices[k]:
                exact = False
            half = G.nodes[nic].get("half")
            if half in inj:
                inj[half] += min(host, cap)
    net_bis = float(net.graph.get("bisection_bw_Bps", 0.0))
    bis = min(net_bis, inj[0], inj[1]) + intra_cut
    node_diam = int(node_tpl.graph.get("diameter_hops", 0))
    diameter = max(node_diam, int(net.graph.get("diameter_hops", 0)) + 2) if n_nodes > 1 else node_diam
    facts: dict[str, Any] = {"devices_per_node": len(dev_local), "bisection_exact": exact}
    if "oversubscription" in net.graph:
        facts["oversubscription"] = net.graph["oversubscription"]
    G.graph["_node_graph"] = node_tpl
    G.graph["_network"] = net
    G.graph["_net_map"] = net_map
    G.graph["_net_endpoints"] = tuple(net_eps)
    return finish_graph(G, ep_ids, bis, diameter, **facts)


# ----------------------------------------------------------------------------------------------------
# routing (called through hardware.topology.routing)

def _split(G: nx.Graph, src: Hashable, dst: Hashable) -> tuple[Any, ...]:
    nics = G.graph["nics_per_node"]
    net_eps = G.graph["_net_endpoints"]
    nic_s = (src[0], ("nic", G.nodes[src]["nic"]))
    nic_d = (dst[0], ("nic", G.nodes[dst]["nic"]))
    m_s = src[0] * nics + G.nodes[src]["nic"]
    m_d = dst[0] * nics + G.nodes[dst]["nic"]
    return nic_s, nic_d, net_eps[m_s], net_eps[m_d]


def route_static(G: nx.Graph, src: Hashable, dst: Hashable) -> list[Edge]:
    """Static route: the node graph's route inside a node, NIC - network - NIC between nodes."""
    if src[0] == dst[0]:
        n = src[0]
        return [((n, u), (n, v)) for u, v in _routing.path(G.graph["_node_graph"], src[1], dst[1])]
    nic_s, nic_d, a, b = _split(G, src, dst)
    mp = G.graph["_net_map"]
    mid = [(mp.get(u, u), mp.get(v, v)) for u, v in _routing.path(G.graph["_network"], a, b)]
    return [(src, nic_s), *mid, (nic_d, dst)]


def route_spread(G: nx.Graph, src: Hashable, dst: Hashable) -> list[tuple[Edge, float]]:
    """Spread route: the node graph's / the network's spread routes, joined through the NICs."""
    if src[0] == dst[0]:
        n = src[0]
        return [(((n, u), (n, v)), f)
                for (u, v), f in _routing.route_fractions(G.graph["_node_graph"], src[1], dst[1], "spread")]
    nic_s, nic_d, a, b = _split(G, src, dst)
    mp = G.graph["_net_map"]
    mid = [((mp.get(u, u), mp.get(v, v)), f) for (u, v), f in _routing.route_fractions(G.graph["_network"], a, b, "spread")]
    return [((src, nic_s), 1.0), *mid, ((nic_d, dst), 1.0)]


class _Tables:
    """Per cluster node id ``x``: ``node[x]`` its node number (-1 off the nodes), ``local[x]`` its id in
    the node graph's index, ``net_ep[x]`` the network-index id of its NIC's network endpoint,
    ``up[x]`` / ``down[x]`` the edge ids device -> NIC / NIC -> device; ``net_map[e]`` the cluster edge id
    of network edge ``e``; ``intra_map[n, e]`` the cluster edge id of node-graph edge ``e`` in node ``n``."""

    def __init__(self, G: nx.Graph, ix) -> None:
        self.node_graph, self.net = G.graph["_node_graph"], G.graph["_network"]
        gix, nix = _routing._index(self.node_graph), _routing._index(self.net)
        self.gix, self.nix = gix, nix
        nics = G.graph["nics_per_node"]
        n_nodes = G.graph["n_nodes"]
        net_eps = G.graph["_net_endpoints"]
        mp = G.graph["_net_map"]
        eid, nid = ix.edge_id, ix.node_id
        N = len(ix.nodes)
        self.node = np.full(N, -1, dtype=np.int64)
        self.local = np.full(N, -1, dtype=np.int64)
        self.net_ep = np.full(N, -1, dtype=np.int64)
        self.up = np.full(N, -1, dtype=np.int64)
        self.down = np.full(N, -1, dtype=np.int64)
        for x in G.graph["endpoints"]:
            i = nid[x]
            k = G.nodes[x]["nic"]
            nic = (x[0], ("nic", k))
            self.node[i] = x[0]
            self.local[i] = gix.node_id[x[1]]
            self.net_ep[i] = nix.node_id[net_eps[x[0] * nics + k]]
            self.up[i] = eid[(x, nic)]
            self.down[i] = eid[(nic, x)]
        self.net_map = np.fromiter((eid[(mp.get(u, u), mp.get(v, v))] for u, v in nix.edges), dtype=np.int64,
                                   count=len(nix.edges))
        self.intra_map = np.array([[eid[((n, u), (n, v))] for u, v in gix.edges] for n in range(n_nodes)],
                                  dtype=np.int64).reshape(n_nodes, len(gix.edges))
        # the sub-graphs' latencies must be the cluster's (an in-place edit of the cluster's): else per pair
        ok = np.array_equal(ix.lat[self.net_map], nix.lat, equal_nan=True) and \
            np.array_equal(ix.lat[self.intra_map], np.broadcast_to(gix.lat, self.intra_map.shape), equal_nan=True)
        if not ok:
            raise KeyError("latency")


def _tables(G: nx.Graph, ix) -> _Tables | None:
    if "cluster" not in ix.tables:
        try:
            ix.tables["cluster"] = _Tables(G, ix)
        except (KeyError, TypeError, IndexError):
            ix.tables["cluster"] = None
    return ix.tables["cluster"]


def spread_flow_classes(G: nx.Graph, ix, src: np.ndarray, dst: np.ndarray) -> list | None:
    """The spread routes of the flows ``src[f] -> dst[f]`` (endpoint node ids of the routing engine's
    index ``ix``, ``src != dst``) as flow classes of :mod:`hardware.topology.routing`: the node graph's
    classes for flows inside a node, and NIC edge + the network's classes + NIC edge between nodes --
    the same edges, fractions and latencies as :func:`route_spread`."""
    t = _tables(G, ix)
    if t is None:
        return None
    ns, nd = t.node[src], t.node[dst]
    same = ns == nd
    out = []
    fi = np.flatnonzero(same)
    if fi.size:
        for c in _routing._flow_classes(t.node_graph, t.gix, t.local[src[fi]], t.local[dst[fi]], "spread"):
            flows = fi[c.flows]
            node_of = ns[flows]
            out.append(_routing._FlowClass(flows, [_routing._map_part(p, t.intra_map, node_of) for p in c.parts]))
    fo = np.flatnonzero(~same) if fi.size else np.arange(src.size, dtype=np.int64)
    if fo.size:
        for c in _routing._flow_classes(t.net, t.nix, t.net_ep[src[fo]], t.net_ep[dst[fo]], "spread"):
            flows = fo[c.flows]
            parts = [_routing._Direct(t.up[src[flows]]), *(_routing._map_part(p, t.net_map) for p in c.parts),
                     _routing._Direct(t.down[dst[flows]])]
            out.append(_routing._FlowClass(flows, parts))
    return out
