"""Shared helpers of the topology builders: parameter validation, edge creation and graph facts.

Internal module (no public API). Every builder validates its inputs with the ``check_*`` helpers, which
raise :class:`hardware.errors.SpecError` with ``source="topology:<kind>"`` and the offending field.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Hashable, Iterable

import networkx as nx

from hardware.errors import SpecError

__all__ = [
    "check_int",
    "check_bw",
    "check_latency",
    "check_choice",
    "source_of",
    "new_graph",
    "add_link",
    "finish_graph",
    "endpoints",
]


def source_of(kind: str) -> str:
    """Error source string of a builder kind, e.g. ``"topology:fat-tree"``."""
    return f"topology:{kind}"


def check_int(kind: str, field: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in ``[minimum, maximum]``; else raise SpecError."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SpecError(source_of(kind), field, value, "must be an integer")
    if value < minimum:
        raise SpecError(source_of(kind), field, value, f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise SpecError(source_of(kind), field, value, f"must be <= {maximum}")
    return int(value)


def _check_real(kind: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SpecError(source_of(kind), field, value, "must be a number")
    out = float(value)
    if not math.isfinite(out):
        raise SpecError(source_of(kind), field, value, "must be finite")
    return out


def check_bw(kind: str, field: str, value: Any) -> float:
    """Return a bandwidth in bytes/s as float; it must be finite and > 0."""
    out = _check_real(kind, field, value)
    if out <= 0.0:
        raise SpecError(source_of(kind), field, value, "must be > 0 (bytes/s)")
    return out


def check_latency(kind: str, field: str, value: Any) -> float:
    """Return a latency in seconds as float; it must be finite and >= 0."""
    out = _check_real(kind, field, value)
    if out < 0.0:
        raise SpecError(source_of(kind), field, value, "must be >= 0 (seconds)")
    return out


def check_choice(kind: str, field: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; else raise SpecError listing them."""
    choices = list(choices)
    if value not in choices:
        raise SpecError(source_of(kind), field, value, f"must be one of {choices}")
    return value


def new_graph(kind: str, name: str, params: dict[str, Any], routing: str) -> nx.Graph:
    """Create an empty graph carrying ``name``, ``kind``, the builder ``params`` (flat and under
    ``"params"``) and the routing family used by :mod:`hardware.topology.routing`."""
    G = nx.Graph()
    G.graph.update(params)
    G.graph["params"] = dict(params)
    G.graph["name"] = name
    G.graph["kind"] = kind
    G.graph["routing"] = routing
    return G


def add_link(
    G: nx.Graph,
    u: Hashable,
    v: Hashable,
    bw_Bps: float,
    latency_s: float,
    kind: str,
    links: int = 1,
) -> None:
    """Add ``links`` parallel full-duplex links between ``u`` and ``v``.

    Parallel links are aggregated on one edge: ``links`` counts them and ``bw_Bps`` is the sum (each
    direction). Adding to an existing edge adds its links and bandwidth (the latency and kind must
    agree; the first ones are kept).
    """
    if G.has_edge(u, v):
        data = G.edges[u, v]
        data["links"] += links
        data["bw_Bps"] += bw_Bps * links
        return
    G.add_edge(u, v, bw_Bps=float(bw_Bps) * links, latency_s=float(latency_s), kind=kind, links=int(links))


def finish_graph(
    G: nx.Graph,
    endpoint_ids: list[Hashable],
    bisection_bw_Bps: float,
    diameter_hops: int,
    **facts: Any,
) -> nx.Graph:
    """Record the closed-form facts and the stable endpoint order on ``G.graph`` and return ``G``."""
    G.graph["endpoints"] = tuple(endpoint_ids)
    G.graph["num_endpoints"] = len(endpoint_ids)
    G.graph["bisection_bw_Bps"] = float(bisection_bw_Bps)
    G.graph["diameter_hops"] = int(diameter_hops)
    G.graph.update(facts)
    return G


def endpoints(G: nx.Graph) -> list[Hashable]:
    """Endpoints of ``G`` (where ranks live) in their stable order.

    Uses the order recorded by the builder (``G.graph["endpoints"]``); for a hand-made graph without it,
    the nodes whose ``kind`` is ``"endpoint"``, sorted.
    """
    recorded = G.graph.get("endpoints")
    if recorded is not None:
        return list(recorded)
    return sorted(n for n, k in G.nodes(data="kind") if k == "endpoint")
