"""Rank placement: which endpoint each MPI rank runs on.

Slots
-----
Every endpoint offers ``ranks_per_endpoint`` slots. Endpoints are grouped (a *group* is a node of a
two-level graph, or whatever ``group_key`` says); inside a group the slots are ordered endpoint by
endpoint (``d0, d0, d1, d1, ...`` for two ranks per endpoint).

Policies
--------
- ``"block"``: fill the groups in order, each group's slots in order -- a node's devices are filled
  before the next node's (with the default grouping this is plain endpoint order).
- ``"round-robin"``: deal ranks over the groups in turn: rank ``r`` goes to group ``r % n_groups`` (while
  every group still has free slots), taking that group's next slot. With no grouping every endpoint is
  its own group, so rank ``r`` lands on endpoint ``r % N`` (then the second slots, ...).

Grouping (``group_key``)
------------------------
``None``: the endpoints' ``group`` node attribute when present (two-level graphs set it to the node
index), else one group per endpoint. A string: that node attribute. A callable: ``group_key(endpoint)``.
Groups are ordered by their first endpoint.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Hashable

import networkx as nx

from hardware.errors import InfeasibleError, SpecError
from hardware.topology._common import endpoints

__all__ = ["place_ranks", "POLICIES"]

POLICIES = ("block", "round-robin")
_SOURCE = "topology:placement"


def _int_field(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SpecError(_SOURCE, field, value, "must be an integer")
    if value < minimum:
        raise SpecError(_SOURCE, field, value, f"must be >= {minimum}")
    return int(value)


def _grouper(G: nx.Graph, group_key: str | Callable[[Hashable], Hashable] | None) -> Callable[[Hashable], Hashable]:
    if callable(group_key):
        return group_key
    if group_key is None:
        return lambda e: G.nodes[e].get("group", ("endpoint", e))
    if isinstance(group_key, str):
        def by_attr(e: Hashable) -> Hashable:
            if group_key not in G.nodes[e]:
                raise SpecError(_SOURCE, "group_key", group_key, f"endpoint {e!r} has no such attribute")
            return G.nodes[e][group_key]
        return by_attr
    raise SpecError(_SOURCE, "group_key", group_key, "must be None, a node attribute name or a callable")


def place_ranks(
    G: nx.Graph,
    n_ranks: int,
    ranks_per_endpoint: int = 1,
    policy: str = "block",
    group_key: str | Callable[[Hashable], Hashable] | None = None,
) -> list[Hashable]:
    """Endpoint of each rank ``0..n_ranks-1``.

    Parameters
    ----------
    G : networkx.Graph
        A topology graph (its endpoints are the slots' hosts).
    n_ranks : int
        Number of ranks, >= 1.
    ranks_per_endpoint : int
        Slots per endpoint, >= 1 (e.g. several processes per CPU host).
    policy : {"block", "round-robin"}
        See the module docstring.
    group_key : None, str or callable
        How endpoints group into nodes (see the module docstring).

    Raises
    ------
    SpecError
        For a bad argument.
    InfeasibleError
        When ``n_ranks`` exceeds the number of slots.
    """
    n_ranks = _int_field("n_ranks", n_ranks, 1)
    k = _int_field("ranks_per_endpoint", ranks_per_endpoint, 1)
    if policy not in POLICIES:
        raise SpecError(_SOURCE, "policy", policy, f"must be one of {list(POLICIES)}")
    eps = endpoints(G)
    slots = len(eps) * k
    if n_ranks > slots:
        raise InfeasibleError(
            f"{_SOURCE}: n_ranks = {n_ranks} exceeds the {slots} slots of {G.graph.get('name', 'the graph')} "
            f"({len(eps)} endpoints x {k} ranks per endpoint)"
        )
    key = _grouper(G, group_key)
    groups: dict[Hashable, list[Hashable]] = {}
    for e in eps:
        groups.setdefault(key(e), []).extend([e] * k)
    queues = list(groups.values())
    if policy == "block":
        return [e for q in queues for e in q][:n_ranks]
    nxt = [0] * len(queues)
    out: list[Hashable] = []
    while len(out) < n_ranks:
        for gi, q in enumerate(queues):
            if nxt[gi] < len(q):
                out.append(q[nxt[gi]])
                nxt[gi] += 1
                if len(out) == n_ranks:
                    break
    return out
