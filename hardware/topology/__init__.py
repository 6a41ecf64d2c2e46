"""Network topologies as networkx graphs, rank placement and path queries.

Graph conventions (other code depends on these)
-----------------------------------------------
- Every builder returns an undirected :class:`networkx.Graph`. Each edge is a **full-duplex** link:
  its capacity ``bw_Bps`` applies to **each direction independently**. Routes and loads are expressed
  on *directed* edges ``(u, v)``.
- Parallel physical links (a doubled V100 NVLink pair, NVSwitch planes, two dragonfly global links
  between the same routers) are **aggregated on one edge**: ``links`` counts them and ``bw_Bps`` is
  their sum. No builder returns a MultiGraph.
- Edge attributes: ``bw_Bps`` (float, bytes/s per direction), ``latency_s`` (float, seconds per hop;
  a path's latency is the sum over its edges), ``kind`` (str: ``"network"`` endpoint-to-switch or torus
  link, ``"uplink"`` switch-to-switch in a fat tree, ``"local"`` / ``"global"`` dragonfly router links,
  ``"nvlink"``, ``"pcie"``, ``"upi"`` socket-to-socket, ``"nic"`` device-to-NIC), ``links`` (int).
- Node attributes: ``kind`` in {``"endpoint"``, ``"switch"``, ``"router"``, ``"cpu"``, ``"nic"``};
  ``half`` (0, 1 or None) marks the natural bisection partition (see :mod:`.bisection`). Endpoints are
  where ranks live (a GPU, a CPU socket, or a whole host in node-level graphs).
- Endpoint ids are sortable and listed in a stable order by :func:`endpoints`: ints ``0..N-1`` for flat
  graphs, tuples ``(node, local_device)`` for two-level graphs (:func:`cluster_with_nodes`). Non-endpoint
  nodes are tuples such as ``("leaf", 3)``, ``("spine", 0)``, ``("router", group, k)``.
- ``G.graph`` holds ``name``, ``kind`` (the registry name), the builder parameters (flat, and as a dict
  under ``params``), ``routing`` (the routing family), ``endpoints`` and the closed-form facts the
  builder knows: ``num_endpoints``, ``bisection_bw_Bps`` (natural partition), ``diameter_hops``
  (between endpoints), ``oversubscription`` where relevant. Keys starting with ``_`` are caches and
  routing tables, not part of the contract.

Builders are pure functions of explicit parameters; bad values raise
:class:`hardware.errors.SpecError` with ``source="topology:<kind>"`` and the field. The registry
:func:`build` makes any of them by name.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import networkx as nx

from hardware.errors import SpecError
from hardware.topology._common import endpoints
from hardware.topology.bisection import (
    bisection_bandwidth,
    cut_bandwidth,
    max_flow_bandwidth,
    natural_halves,
    natural_side,
    tree_min_cut,
)
from hardware.topology.cluster import cluster_with_nodes, single_device
from hardware.topology.dragonfly import dragonfly
from hardware.topology.fat_tree import fat_tree
from hardware.topology.nvlink import DGX1_P100_LINKS, DGX1_V100_LINKS, dgx1_hybrid_cube_mesh, nvswitch
from hardware.topology.pcie import pcie_tree
from hardware.topology.placement import POLICIES, place_ranks
from hardware.topology.routing import (
    ROUTINGS,
    bottleneck_bw,
    clear_routes,
    link_loads,
    max_flow_time,
    path,
    path_latency,
    route_fractions,
)
from hardware.topology.single_switch import single_switch
from hardware.topology.torus import torus

__all__ = [
    # registry
    "BUILDERS", "build", "available",
    # builders
    "single_switch", "fat_tree", "torus", "dragonfly", "dgx1_hybrid_cube_mesh", "nvswitch", "pcie_tree",
    "cluster_with_nodes", "single_device", "DGX1_P100_LINKS", "DGX1_V100_LINKS",
    # queries
    "endpoints", "place_ranks", "POLICIES",
    "path", "bottleneck_bw", "path_latency", "link_loads", "max_flow_time", "route_fractions",
    "clear_routes", "ROUTINGS",
    "bisection_bandwidth", "cut_bandwidth", "max_flow_bandwidth", "natural_halves", "natural_side",
    "tree_min_cut",
]

#: registry kind -> builder
BUILDERS: dict[str, Callable[..., nx.Graph]] = {
    "single-switch": single_switch,
    "fat-tree": fat_tree,
    "torus": torus,
    "dragonfly": dragonfly,
    "dgx1-hybrid-cube-mesh": dgx1_hybrid_cube_mesh,
    "nvswitch": nvswitch,
    "pcie-tree": pcie_tree,
    "cluster": cluster_with_nodes,
}


def available() -> list[str]:
    """Registry kinds accepted by :func:`build`, sorted."""
    return sorted(BUILDERS)


def build(kind: str, **params: Any) -> nx.Graph:
    """Build the topology ``kind`` from keyword parameters (see each builder for its parameters).

    Raises
    ------
    SpecError
        Unknown ``kind`` (the message lists the known ones), an unknown or missing parameter, or a bad
        value.
    """
    builder = BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise SpecError("topology", "kind", kind, f"unknown topology; known: {', '.join(available())}")
    sig = inspect.signature(builder)
    source = f"topology:{kind}"
    for name, value in params.items():
        if name not in sig.parameters:
            raise SpecError(source, name, value, f"unknown parameter; expected one of {list(sig.parameters)}")
    for name, p in sig.parameters.items():
        if p.default is inspect.Parameter.empty and name not in params:
            raise SpecError(source, name, None, "required parameter is missing")
    return builder(**params)
