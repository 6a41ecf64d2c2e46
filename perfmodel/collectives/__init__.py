"""Collective-communication cost models: one module per algorithm family, one signature, a registry.

Two levels of model share one interface (:class:`~perfmodel.collectives.base.Algorithm`):

1. closed forms (alpha-beta-gamma, Thakur, Rabenseifner and Gropp 2005; PAPERS.md section 6), vectorised
   over ``p`` and ``nbytes``: ``ALGORITHMS[name].allreduce_time(p, nbytes, net)`` or
   ``allreduce_time(name, p, nbytes, net)``;
2. step patterns (:meth:`Algorithm.steps`) priced on a real topology by :func:`time_on_fabric` with an
   injected ``flow_time(pairs, nbytes_per_flow)``.

``net`` is a :class:`NetParams` (flat network) or a :class:`Fabric` (intra-node / inter-node links, ranks
and NICs per node); see :mod:`perfmodel.collectives.base` for the conventions (SI units, ``p == 1`` costs
0, ConfigError on bad input).

Registry names: ``ring``, ``recursive_doubling``, ``halving_doubling``, ``binary_tree``,
``double_binary_tree``, ``hierarchical``, ``torus2d``, ``parameter_server``; ``auto`` (via
:func:`get_algorithm`) picks the fastest of :data:`AUTO_CANDIDATES` per element.
"""
from __future__ import annotations

from typing import Any, Iterable

from hardware.errors import ConfigError

from .auto import Auto
from .base import (OPS, Algorithm, Fabric, FlatAlgorithm, FlowTime, HierNetParams, NetParams, Step,
                   as_fabric, per_rank_send_frac)
from .base import time_on_fabric as _time_on_fabric
from .halving_doubling import HalvingDoubling
from .hierarchical import Hierarchical
from .metrics import algorithm_bandwidth, bus_bandwidth, bus_factor
from .parameter_server import ParameterServer
from .recursive_doubling import RecursiveDoubling
from .ring import Ring
from .torus2d import Torus2D, most_square_grid
from .tree import BinaryTree, DoubleBinaryTree

__all__ = [
    "OPS", "Algorithm", "FlatAlgorithm", "NetParams", "Fabric", "HierNetParams", "Step", "FlowTime",
    "as_fabric", "per_rank_send_frac",
    "Ring", "RecursiveDoubling", "HalvingDoubling", "BinaryTree", "DoubleBinaryTree", "Hierarchical",
    "Torus2D", "ParameterServer", "Auto", "most_square_grid",
    "ALGORITHMS", "AUTO_CANDIDATES", "AUTO", "get_algorithm", "known_algorithms",
    "collective_time", "allreduce_time", "reduce_scatter_time", "allgather_time", "broadcast_time",
    "reduce_time", "auto_allreduce", "choose", "time_on_fabric",
    "algorithm_bandwidth", "bus_bandwidth", "bus_factor",
]

#: name -> algorithm with default options (construct the classes directly for other options)
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a for a in (
        Ring(), RecursiveDoubling(), HalvingDoubling(), BinaryTree(), DoubleBinaryTree(), Hierarchical(),
        Torus2D(), ParameterServer(),
    )
}

#: what ``auto`` chooses from: every allreduce algorithm (a parameter server is a different architecture,
#: not a choice an MPI library makes)
AUTO_CANDIDATES: tuple[str, ...] = tuple(k for k in ALGORITHMS if k != "parameter_server")

#: the default ``auto`` algorithm
AUTO = Auto({k: ALGORITHMS[k] for k in AUTO_CANDIDATES})


def known_algorithms() -> list[str]:
    """Names accepted by :func:`get_algorithm` (the registry plus ``auto``)."""
    return [*ALGORITHMS, "auto"]


def get_algorithm(name: str | Algorithm) -> Algorithm:
    """The algorithm called ``name`` (an :class:`Algorithm` is returned unchanged).

    Raises ConfigError(source="--allreduce", field="allreduce") for an unknown name.
    """
    if isinstance(name, Algorithm):
        return name
    if name == "auto":
        return AUTO
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ConfigError("--allreduce", "allreduce", name,
                          f"unknown algorithm; known: {', '.join(known_algorithms())}") from None


def _auto(candidates: Iterable[str | Algorithm] | None) -> Auto:
    if candidates is None:
        return AUTO
    algs: dict[str, Algorithm] = {}
    for c in candidates:
        a = get_algorithm(c)
        key, i = a.name, 2
        while key in algs:  # two variants of one family: name them name, name#2, ...
            key, i = f"{a.name}#{i}", i + 1
        algs[key] = a
    return Auto(algs)


def collective_time(op: str, algorithm: str | Algorithm, p: Any, nbytes: Any, net: NetParams | Fabric):
    """Closed-form time in seconds of collective ``op`` with ``algorithm`` (name or instance)."""
    return get_algorithm(algorithm).time(op, p, nbytes, net)


def allreduce_time(algorithm: str | Algorithm, p: Any, nbytes: Any, net: NetParams | Fabric):
    """Allreduce time in seconds (vectorised over ``p`` and ``nbytes``); ``algorithm`` may be ``"auto"``."""
    return collective_time("allreduce", algorithm, p, nbytes, net)


def reduce_scatter_time(algorithm: str | Algorithm, p: Any, nbytes: Any, net: NetParams | Fabric):
    """Reduce-scatter time in seconds (``nbytes`` = full input vector)."""
    return collective_time("reduce_scatter", algorithm, p, nbytes, net)


def allgather_time(algorithm: str | Algorithm, p: Any, nbytes: Any, net: NetParams | Fabric):
    """All-gather time in seconds (``nbytes`` = full output vector)."""
    return collective_time("allgather", algorithm, p, nbytes, net)


def broadcast_time(algorithm: str | Algorithm, p: Any, nbytes: Any, net: NetParams | Fabric):
    """Broadcast time in seconds."""
    return collective_time("broadcast", algorithm, p, nbytes, net)


def reduce_time(algorithm: str | Algorithm, p: Any, nbytes: Any, net: NetParams | Fabric):
    """Reduce time in seconds."""
    return collective_time("reduce", algorithm, p, nbytes, net)


def auto_allreduce(p: Any, nbytes: Any, net: NetParams | Fabric,
                   candidates: Iterable[str | Algorithm] | None = None, op: str = "allreduce"):
    """(times, index) of the fastest candidate per element; ``index`` refers to
    ``Auto.names(op)`` of the candidates (default :data:`AUTO_CANDIDATES`, in that order)."""
    return _auto(candidates).select(op, p, nbytes, net)


def choose(p: Any, nbytes: Any, net: NetParams | Fabric, candidates: Iterable[str | Algorithm] | None = None,
           op: str = "allreduce"):
    """Name(s) of the fastest candidate per element (str for scalar inputs, else an array of str)."""
    return _auto(candidates).choose(op, p, nbytes, net)


def time_on_fabric(algorithm: str | Algorithm, p: int, nbytes: float, flow_time: FlowTime,
                   gamma_s_per_B: float, *, ranks_per_node: int | None = None, op: str = "allreduce") -> float:
    """Topology-aware time in seconds: the algorithm's steps priced with ``flow_time`` (see
    :func:`perfmodel.collectives.base.time_on_fabric`); ``algorithm`` may be a name or ``"auto"``."""
    return _time_on_fabric(get_algorithm(algorithm), p, nbytes, flow_time, gamma_s_per_B,
                           ranks_per_node=ranks_per_node, op=op)
