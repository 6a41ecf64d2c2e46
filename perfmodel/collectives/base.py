"""Shared vocabulary of the collective cost models: network parameters, the fabric, step patterns, the
:class:`Algorithm` interface, input checks and topology-aware costing (:func:`time_on_fabric`).

Cost model (Hockney / Thakur-Rabenseifner-Gropp 2005 alpha-beta-gamma): sending one message of ``m``
bytes between two ranks costs ``alpha + m * beta`` seconds; reducing ``m`` bytes costs ``m * gamma``. A
rank can send one message and receive one message at the same time (full duplex, single port). ``p`` is
the number of ranks, ``n`` the message size in bytes (the full vector: for reduce-scatter the input, for
all-gather the output, as in nccl-tests).

The fabric
----------
Every algorithm takes a :class:`Fabric` (``intra``, ``inter``, ``ranks_per_node``, ``nics_per_node``);
a bare :class:`NetParams` is accepted and means a flat network (``Fabric(net, net, ranks_per_node=1)``).
Ranks are placed in blocks: ranks ``[j*ranks_per_node, (j+1)*ranks_per_node)`` share node ``j``.

* Flat algorithms (ring, recursive doubling, halving-doubling, binomial and double binary trees) use
  ``intra`` when ``p <= ranks_per_node`` (all ranks in one node) and ``inter`` otherwise, for *every*
  message. The parameter server always uses ``inter`` (its servers are other machines). APPROXIMATION: when ranks span nodes, the closed form charges all steps at inter-node cost and
  ignores that several ranks of a node may share its NICs; :func:`time_on_fabric` with a topology-aware
  ``flow_time`` captures both effects.
* Hierarchical and 2D-torus algorithms use ``intra`` for the phases inside a node and ``inter`` for the
  phases between nodes. When the ``c`` ranks of a node cross the node boundary concurrently, they share
  its ``nics_per_node`` NICs: the inter-node ``beta`` is multiplied by ``c / min(c, nics_per_node)``.

Conventions shared by all algorithms
------------------------------------
* ``p == 1`` costs 0 s for every collective (a single rank keeps its own data).
* ``p`` and ``nbytes`` may be scalars or numpy arrays (broadcast together); the result has their broadcast
  shape (a numpy float scalar for scalar inputs). No Python loop runs over the elements.
* Bad input (``p < 1``, non-integer ``p``, negative or non-finite ``nbytes``, an operation the algorithm
  does not define) raises :class:`hardware.errors.ConfigError`.

Step patterns
-------------
:meth:`Algorithm.steps` describes the algorithm as a list of :class:`Step` (flows sent at once, bytes per
flow as a fraction of ``n``, bytes reduced per rank, repeat count). :func:`time_on_fabric` prices the
steps with an injected ``flow_time(pairs, nbytes_per_flow)`` (e.g. the topology layer's
``max_flow_time`` with ranks mapped to endpoints by a placement):
``sum(step.repeat * (flow_time(step.pairs, step.send_frac * n) + step.reduce_frac * n * gamma))``.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np

from hardware.errors import ConfigError

__all__ = [
    "OPS",
    "SOURCE",
    "NetParams",
    "Fabric",
    "HierNetParams",
    "as_fabric",
    "Step",
    "Algorithm",
    "FlatAlgorithm",
    "FlowTime",
    "select_params",
    "time_on_fabric",
    "embed_steps",
    "embedded_fabric_steps",
    "per_rank_send_frac",
    "check_p_n",
    "ceil_log2",
    "floor_log2",
    "is_pow2",
]

#: collective operations an algorithm may define
OPS: tuple[str, ...] = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")

#: ``source`` of the ConfigErrors raised for bad p / nbytes / fabric
SOURCE = "collectives"

#: ``flow_time(pairs, nbytes_per_flow) -> seconds`` for flows (k, 2) int (src, dst) sent at the same time
FlowTime = Callable[[np.ndarray, float], float]


# --------------------------------------------------------------------------------------------------------
# Network parameters
# --------------------------------------------------------------------------------------------------------
def _check_nonneg(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(owner, name, value, "must be a number")
    out = float(value)
    if not math.isfinite(out) or out < 0.0:
        raise ConfigError(owner, name, value, "must be finite and >= 0")
    return out


def _check_pos_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ConfigError(owner, name, value, "must be an integer >= 1")
    return int(value)


@dataclass(frozen=True)
class NetParams:
    """Alpha-beta-gamma parameters of one kind of link.

    Parameters
    ----------
    alpha_s : float
        Per-message latency (startup) in seconds, >= 0.
    beta_s_per_B : float
        Transfer time per byte in seconds (1 / link bandwidth in bytes/s), >= 0.
    gamma_s_per_B : float
        Reduction time per byte in seconds (1 / reduction throughput in bytes/s), >= 0. Default 0.
    """

    alpha_s: float
    beta_s_per_B: float
    gamma_s_per_B: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha_s", "beta_s_per_B", "gamma_s_per_B"):
            object.__setattr__(self, name, _check_nonneg("NetParams", name, getattr(self, name)))

    @classmethod
    def from_bandwidth(cls, latency_s: float, bw_Bps: float, reduce_Bps: float | None = None) -> "NetParams":
        """Build from a latency (s), a link bandwidth (bytes/s) and optionally a reduction throughput
        (bytes/s; ``None`` means reductions are free)."""
        for name, v in (("bw_Bps", bw_Bps), ("reduce_Bps", reduce_Bps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, Real) or not v > 0):
                raise ConfigError("NetParams", name, v, "must be > 0 (bytes/s)")
        gamma = 0.0 if reduce_Bps is None else 1.0 / float(reduce_Bps)
        return cls(latency_s, 1.0 / float(bw_Bps), gamma)

    def scaled_beta(self, factor: float) -> "NetParams":
        """Copy with ``beta`` multiplied by ``factor`` (link sharing)."""
        return NetParams(self.alpha_s, self.beta_s_per_B * factor, self.gamma_s_per_B)


@dataclass(frozen=True)
class Fabric:
    """Two-level network: links inside a node (``intra``) and between nodes (``inter``).

    Parameters
    ----------
    intra : NetParams
        Links between ranks of one node (NVLink, PCIe, shared memory).
    inter : NetParams
        Point-to-point parameters between ranks on different nodes (one rank per NIC).
    ranks_per_node : int
        Ranks per node (block placement), >= 1.
    nics_per_node : int
        Network interfaces per node, >= 1 (default 1). ``c`` ranks of a node that cross the node boundary
        at the same time share ``min(c, nics_per_node)`` NICs (used by the hierarchical, 2D-torus and
        parameter-server models).
    """

    intra: NetParams
    inter: NetParams
    ranks_per_node: int = 1
    nics_per_node: int = 1

    def __post_init__(self) -> None:
        for name in ("intra", "inter"):
            if not isinstance(getattr(self, name), NetParams):
                raise ConfigError("Fabric", name, getattr(self, name), "must be a NetParams")
        object.__setattr__(self, "ranks_per_node", _check_pos_int("Fabric", "ranks_per_node",
                                                                  self.ranks_per_node))
        object.__setattr__(self, "nics_per_node", _check_pos_int("Fabric", "nics_per_node",
                                                                 self.nics_per_node))

    @classmethod
    def flat(cls, net: NetParams) -> "Fabric":
        """A single-level network: every pair of ranks is connected by ``net``."""
        return cls(net, net, 1, 1)

    def share_factor(self, concurrent: np.ndarray | int) -> np.ndarray:
        """``c / min(c, nics_per_node)``: slowdown of the inter-node beta when ``c`` ranks of a node send
        across the node boundary at once (elementwise; ``c >= 1``)."""
        c = np.maximum(np.asarray(concurrent, dtype=float), 1.0)
        return c / np.minimum(c, float(self.nics_per_node))


#: the name the brief uses for the two-level parameters; the same class
HierNetParams = Fabric


def as_fabric(net: NetParams | Fabric) -> Fabric:
    """Return ``net`` as a :class:`Fabric` (a :class:`NetParams` becomes a flat fabric)."""
    if isinstance(net, Fabric):
        return net
    if isinstance(net, NetParams):
        return Fabric.flat(net)
    raise ConfigError(SOURCE, "net", type(net).__name__, "must be a NetParams or a Fabric")


# --------------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Step:
    """One communication step (or ``repeat`` consecutive identical steps) of an algorithm.

    Attributes
    ----------
    pairs : np.ndarray
        Shape (k, 2) int64, ``(src_rank, dst_rank)`` of the flows sent simultaneously. A pair may appear
        twice (two flows between the same ranks, e.g. in both trees of a double binary tree).
    send_frac : float
        Bytes per flow = ``send_frac * n``.
    reduce_frac : float
        Bytes reduced after the step by the most loaded rank = ``reduce_frac * n`` (0 when nothing is
        reduced). Charged at ``gamma`` seconds per byte.
    repeat : int
        Number of consecutive steps with exactly this pattern and size.
    """

    pairs: np.ndarray
    send_frac: float
    reduce_frac: float = 0.0
    repeat: int = 1

    def __post_init__(self) -> None:
        pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        pairs.setflags(write=False)
        object.__setattr__(self, "pairs", pairs)
        object.__setattr__(self, "send_frac", float(self.send_frac))
        object.__setattr__(self, "reduce_frac", float(self.reduce_frac))
        object.__setattr__(self, "repeat", int(self.repeat))


def per_rank_send_frac(steps: list[Step], n_endpoints: int) -> np.ndarray:
    """Total bytes sent by each endpoint over all ``steps``, as a fraction of ``n`` (shape (n_endpoints,))."""
    out = np.zeros(n_endpoints)
    for st in steps:
        if len(st.pairs):
            out += np.bincount(st.pairs[:, 0], minlength=n_endpoints) * st.send_frac * st.repeat
    return out


# --------------------------------------------------------------------------------------------------------
# Input checks and integer helpers (vectorised)
# --------------------------------------------------------------------------------------------------------
def check_p_n(p: Any, nbytes: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate and broadcast ``p`` and ``nbytes``.

    Returns
    -------
    (p, n, scalar)
        ``p`` as int64 array, ``n`` as float64 array (same broadcast shape) and whether both inputs were
        scalars. Raises ConfigError when ``p`` is not an integer >= 1 or ``nbytes`` is negative or not
        finite.
    """
    try:
        pa = np.asarray(p)
        na = np.asarray(nbytes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(SOURCE, "nbytes", nbytes, "must be a number or an array of numbers") from None
    if pa.dtype.kind in "iu":
        pi = pa.astype(np.int64, copy=False)
    elif pa.dtype.kind == "f":
        ok = np.isfinite(pa)
        bad = ~ok | (np.floor(np.where(ok, pa, 0.0)) != pa)
        if bad.any():
            raise ConfigError(SOURCE, "p", pa[bad].flat[0].item(), "number of ranks must be an integer >= 1")
        pi = pa.astype(np.int64)
    else:
        raise ConfigError(SOURCE, "p", p, "number of ranks must be an integer >= 1")
    if (pi < 1).any():
        raise ConfigError(SOURCE, "p", pi[pi < 1].flat[0].item(), "number of ranks must be an integer >= 1")
    badn = ~np.isfinite(na) | (na < 0)
    if badn.any():
        raise ConfigError(SOURCE, "nbytes", na[badn].flat[0].item(), "must be finite and >= 0")
    scalar = pi.ndim == 0 and na.ndim == 0
    try:
        pb, nb = np.broadcast_arrays(pi, na)
    except ValueError:
        raise ConfigError(SOURCE, "p", f"shape {pi.shape}", f"cannot broadcast with nbytes shape {na.shape}") \
            from None
    return pb, nb, scalar


def floor_log2(p: np.ndarray) -> np.ndarray:
    """Exact ``floor(log2(p))`` for integer ``p >= 1`` (elementwise, int64)."""
    return np.frexp(np.asarray(p, dtype=np.float64))[1].astype(np.int64) - 1


def ceil_log2(p: np.ndarray) -> np.ndarray:
    """Exact ``ceil(log2(p))`` for integer ``p >= 1`` (elementwise, int64; 0 for p == 1)."""
    return np.frexp(np.asarray(p, dtype=np.float64) - 1.0)[1].astype(np.int64)


def is_pow2(p: np.ndarray) -> np.ndarray:
    """Whether each integer ``p >= 1`` is a power of two."""
    pi = np.asarray(p, dtype=np.int64)
    return (pi & (pi - 1)) == 0


def _out(x: np.ndarray, scalar: bool):
    x = np.asarray(x, dtype=np.float64)
    return x[()] if scalar else x


# --------------------------------------------------------------------------------------------------------
# Algorithm interface
# --------------------------------------------------------------------------------------------------------
class Algorithm(abc.ABC):
    """A collective algorithm: closed-form costs and step patterns.

    Subclasses set :attr:`name`, :attr:`ops` (the collectives whose closed forms they define),
    :attr:`step_ops` (those with step patterns) and implement :meth:`_time` and :meth:`steps`.
    """

    #: registry name
    name: str = ""
    #: one-line description (with the source of the model)
    summary: str = ""
    #: collectives with a closed form
    ops: frozenset[str] = frozenset({"allreduce"})
    #: collectives with a step pattern
    step_ops: frozenset[str] = frozenset({"allreduce"})

    # ---- closed forms ----------------------------------------------------------------------------------
    def time(self, op: str, p: Any, nbytes: Any, net: NetParams | Fabric):
        """Closed-form time in seconds of collective ``op`` on ``p`` ranks and ``nbytes`` bytes."""
        self._check_op(op, self.ops)
        fabric = as_fabric(net)
        pi, n, scalar = check_p_n(p, nbytes)
        t = self._time(op, pi, n, fabric)
        t = np.where(pi == 1, 0.0, t)
        return _out(t, scalar)

    def allreduce_time(self, p: Any, nbytes: Any, net: NetParams | Fabric):
        """Allreduce time in seconds (see :meth:`time`)."""
        return self.time("allreduce", p, nbytes, net)

    def reduce_scatter_time(self, p: Any, nbytes: Any, net: NetParams | Fabric):
        """Reduce-scatter time in seconds; ``nbytes`` is the full input vector (each rank keeps n/p)."""
        return self.time("reduce_scatter", p, nbytes, net)

    def allgather_time(self, p: Any, nbytes: Any, net: NetParams | Fabric):
        """All-gather time in seconds; ``nbytes`` is the full output vector (each rank contributes n/p)."""
        return self.time("allgather", p, nbytes, net)

    def broadcast_time(self, p: Any, nbytes: Any, net: NetParams | Fabric):
        """Broadcast time in seconds of ``nbytes`` from rank 0."""
        return self.time("broadcast", p, nbytes, net)

    def reduce_time(self, p: Any, nbytes: Any, net: NetParams | Fabric):
        """Reduce (to rank 0) time in seconds of ``nbytes``."""
        return self.time("reduce", p, nbytes, net)

    def supports(self, op: str) -> bool:
        """Whether a closed form of ``op`` is defined."""
        return op in self.ops

    @abc.abstractmethod
    def _time(self, op: str, p: np.ndarray, n: np.ndarray, fabric: Fabric) -> np.ndarray:
        """Elementwise time of ``op`` (arrays already validated and broadcast; p == 1 is zeroed later)."""

    # ---- step patterns ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Step pattern of ``op`` on ``p`` ranks (ranks numbered 0..p-1, block placement)."""

    def fabric_steps(self, p: int, nbytes: float, flow_time: FlowTime, gamma_s_per_B: float,
                     ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Steps used by :func:`time_on_fabric`. Algorithms whose pattern depends on the message size and
        the network (pipelined trees choose their segment count) override this; default :meth:`steps`."""
        return self.steps(p, ranks_per_node=ranks_per_node, op=op)

    def n_endpoints(self, p: int, ranks_per_node: int | None = None) -> int:
        """Number of endpoints the steps address (``p``; more for a parameter server's servers)."""
        return int(p)

    def send_volume_frac(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> float:
        """Largest total bytes sent by one endpoint over the whole collective, as a fraction of ``n``
        (computed from the step pattern)."""
        p = self._check_p_scalar(p)
        steps = self.steps(p, ranks_per_node=ranks_per_node, op=op)
        return float(per_rank_send_frac(steps, self.n_endpoints(p, ranks_per_node)).max(initial=0.0))

    # ---- helpers ---------------------------------------------------------------------------------------
    def _check_op(self, op: str, allowed: frozenset[str]) -> None:
        if op not in allowed:
            raise ConfigError(SOURCE, "collective", op,
                              f"not defined for algorithm '{self.name}'; defined: {', '.join(sorted(allowed))}")

    @staticmethod
    def _check_p_scalar(p: Any) -> int:
        if isinstance(p, bool) or not isinstance(p, Integral) or p < 1:
            raise ConfigError(SOURCE, "p", p, "number of ranks must be an integer >= 1")
        return int(p)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FlatAlgorithm(Algorithm):
    """An algorithm that sees one kind of link: ``fabric.intra`` when ``p <= ranks_per_node``, else
    ``fabric.inter`` (see the module docstring). Subclasses implement :meth:`formula` on arrays."""

    def _time(self, op: str, p: np.ndarray, n: np.ndarray, fabric: Fabric) -> np.ndarray:
        a, b, g = select_params(fabric, p)
        return self.formula(op, p, n, a, b, g)

    @abc.abstractmethod
    def formula(self, op: str, p: np.ndarray, n: np.ndarray, a: Any, b: Any, g: Any) -> np.ndarray:
        """Elementwise closed form of ``op`` with alpha ``a``, beta ``b`` and gamma ``g`` (scalars or
        arrays broadcastable with ``p`` and ``n``). Must give 0 for p == 1."""


def select_params(fabric: Fabric, p: np.ndarray) -> tuple[Any, Any, Any]:
    """alpha, beta, gamma of a flat algorithm on ``p`` ranks: intra when ``p <= ranks_per_node``."""
    i, e = fabric.intra, fabric.inter
    if fabric.ranks_per_node == 1 or i == e:
        return e.alpha_s, e.beta_s_per_B, e.gamma_s_per_B
    inside = np.asarray(p) <= fabric.ranks_per_node
    return (np.where(inside, i.alpha_s, e.alpha_s), np.where(inside, i.beta_s_per_B, e.beta_s_per_B),
            np.where(inside, i.gamma_s_per_B, e.gamma_s_per_B))


# --------------------------------------------------------------------------------------------------------
# Topology-aware costing
# --------------------------------------------------------------------------------------------------------
def time_on_fabric(algorithm: Algorithm, p: int, nbytes: float, flow_time: FlowTime, gamma_s_per_B: float,
                   *, ranks_per_node: int | None = None, op: str = "allreduce") -> float:
    """Time in seconds of ``op`` priced step by step with an injected ``flow_time``.

    Parameters
    ----------
    algorithm : Algorithm
        The algorithm (an instance; :func:`perfmodel.collectives.time_on_fabric` also accepts names).
    p : int
        Number of ranks (>= 1).
    nbytes : float
        Message size in bytes (>= 0).
    flow_time : callable
        ``flow_time(pairs, nbytes_per_flow) -> seconds``: time for all flows in ``pairs`` (k, 2) sent at
        once, latency plus bandwidth with link sharing. Called once per distinct step.
    gamma_s_per_B : float
        Reduction time per byte (s/B), charged on each step's ``reduce_frac * nbytes``.
    ranks_per_node : int, optional
        Needed by the hierarchical algorithm (node size); passed to :meth:`Algorithm.steps`.
    op : str
        Collective (must be in ``algorithm.step_ops``).

    Returns
    -------
    float
        ``sum(step.repeat * (flow_time(step.pairs, step.send_frac * nbytes) + step.reduce_frac * nbytes *
        gamma_s_per_B))`` (0 for p == 1).
    """
    p = Algorithm._check_p_scalar(p)
    n = _check_nonneg(SOURCE, "nbytes", nbytes)
    g = _check_nonneg(SOURCE, "gamma_s_per_B", gamma_s_per_B)
    algorithm._check_op(op, algorithm.step_ops)
    if p == 1:
        return 0.0
    total = 0.0
    for st in algorithm.fabric_steps(p, n, flow_time, g, ranks_per_node=ranks_per_node, op=op):
        if len(st.pairs) == 0:
            continue
        total += st.repeat * (float(flow_time(st.pairs, st.send_frac * n)) + st.reduce_frac * n * g)
    return total


def embed_steps(steps: list[Step], rank_map: np.ndarray, scale: float) -> list[Step]:
    """Run a sub-algorithm's ``steps`` in several groups at once.

    Parameters
    ----------
    steps : list of Step
        Steps of the sub-algorithm on ranks ``0..N-1`` with fractions relative to its own message size.
    rank_map : np.ndarray
        Shape (groups, N): global rank of sub-rank ``j`` in group ``i``. All groups run concurrently.
    scale : float
        Sub-message size / outer message size (fractions are multiplied by it).
    """
    rank_map = np.asarray(rank_map, dtype=np.int64)
    out = []
    for st in steps:
        pairs = rank_map[:, st.pairs].reshape(-1, 2)
        out.append(Step(pairs, st.send_frac * scale, st.reduce_frac * scale, st.repeat))
    return out


def embedded_fabric_steps(algorithm: Algorithm, rank_map: np.ndarray, scale: float, nbytes: float,
                          flow_time: FlowTime, gamma_s_per_B: float, op: str = "allreduce") -> list[Step]:
    """:meth:`Algorithm.fabric_steps` of a sub-algorithm run by every group of ``rank_map`` on
    ``scale * nbytes`` bytes, with ``flow_time`` seeing the flows of all groups; embedded as in
    :func:`embed_steps`."""
    rank_map = np.asarray(rank_map, dtype=np.int64)

    def sub_flow_time(pairs: np.ndarray, nb: float) -> float:
        return flow_time(rank_map[:, np.asarray(pairs, dtype=np.int64)].reshape(-1, 2), nb)

    sub = algorithm.fabric_steps(rank_map.shape[1], scale * nbytes, sub_flow_time, gamma_s_per_B, op=op)
    return embed_steps(sub, rank_map, scale)
