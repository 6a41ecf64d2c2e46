"""Tree algorithms: the binomial-tree reduce + broadcast ("binary_tree") and NCCL's pipelined double
binary tree ("double_binary_tree", Sanders, Speck and Traff 2009; NCCL 2.4).

binary_tree
-----------
The textbook (MPICH) reduce to rank 0 followed by a broadcast from rank 0, both along a binomial tree of
``L = ceil(log2 p)`` levels; in level ``k`` rank ``i`` with ``i mod 2^(k+1) == 2^k`` sends its whole vector
to ``i - 2^k`` (reduce) or receives it from there (broadcast). Each rank sends or receives at most one
message per level, so (PAPERS.md section 6)::

    reduce    = L (alpha + n beta + n gamma)
    broadcast = L (alpha + n beta)
    allreduce = 2 L (alpha + n beta) + L n gamma

Exact for every ``p`` (``L = log2 p`` for powers of two).

double_binary_tree
------------------
Two complementary binary trees built exactly as NCCL's ``ncclGetDtree`` (tree 1: NCCL's in-order btree
rooted at rank 0; tree 2: its mirror for even ``p``, shifted by one for odd ``p``), so that every rank is
a leaf in at least one tree. Each tree carries half of the vector, cut into ``k`` segments of
``c = n / (2k)`` bytes. Allreduce runs reduce and broadcast as one pipeline (NCCL's "up-down"): node ``v``
of height ``h(v)`` sends segment ``j`` to its parent at step ``j + h(v)``; the root of height ``H`` sends it
down at step ``j + H``, a node at depth ``d`` forwards it at step ``j + H + d``. Total steps
``k + 2H - 1`` with ``H = ceil(log2 p)`` (the height of NCCL's trees, checked in the tests).

In the steady state every tree edge carries one segment per step in each direction. The most loaded rank
then sends/receives ``m`` flows (``m = 4`` for ``p >= 4``, ``3`` for ``p = 3``, ``2`` for ``p = 2``) and
reduces ``m_g`` segments (``2``; ``1`` for ``p = 2``). The closed form charges every step at that
steady-state load::

    allreduce = (k + 2H - 1) (alpha + c (m beta + m_g gamma))        -> 2H alpha + ... for k = 1
                                                                        -> ~ 2 n beta + n gamma for k >> H
    reduce    = (k + H - 1)  (alpha + c (m_u beta + m_g gamma))     m_u = 2 (1 for p = 2)
    broadcast = (k + H - 1)  (alpha + c m_u beta)

APPROXIMATION (upper bound): the ``H``-ish fill and drain steps carry fewer flows than the steady state,
so the exact step schedule (see :meth:`DoubleBinaryTree.steps`) priced with a uniform link model lies
between ``(k + D) alpha + max(0, k - D) c (m beta + m_g gamma)`` and the closed form (``D = 2H - 1`` for
allreduce, ``H - 1`` otherwise).

Segment count: with ``segment_bytes=None`` (default) ``k`` is the integer that minimises the closed form,
``k* = sqrt(D S n / (2 alpha))`` with ``S`` the per-byte step cost, clipped to ``[1, max_segments]``; the
time is then a minimum of functions increasing in ``n``, ``alpha``, ``beta`` and ``gamma``, hence monotone
in each (NCCL tunes its chunk size to the same effect). With a fixed ``segment_bytes = s``,
``k = ceil(n / (2 s))`` (NCCL-like fixed chunks); that time is not monotone in ``n`` at segment
boundaries.
"""
from __future__ import annotations

from functools import lru_cache
from numbers import Real
from typing import Any

import numpy as np

from hardware.errors import ConfigError

from .base import Fabric, FlatAlgorithm, FlowTime, Step, as_fabric, ceil_log2, select_params

__all__ = ["BinaryTree", "DoubleBinaryTree", "binomial_allreduce", "binomial_reduce", "binomial_broadcast",
           "nccl_btree", "nccl_double_tree", "dbt_loads", "best_segments"]


# --------------------------------------------------------------------------------------------------------
# Binomial tree
# --------------------------------------------------------------------------------------------------------
def binomial_reduce(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """``ceil(log2 p)(a + n b + n g)`` (elementwise)."""
    return ceil_log2(p) * (a + n * (b + g))


def binomial_broadcast(p: Any, n: Any, a: Any, b: Any, g: Any = 0.0) -> np.ndarray:
    """``ceil(log2 p)(a + n b)`` (elementwise)."""
    return ceil_log2(p) * (a + n * b)


def binomial_allreduce(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """``2 ceil(log2 p)(a + n b) + ceil(log2 p) n g`` (elementwise)."""
    L = ceil_log2(p)
    return L * (2.0 * (a + n * b) + n * g)


def _binomial_levels(p: int) -> list[np.ndarray]:
    """Reduce flows (child -> parent) of each binomial level, level 0 first."""
    r = np.arange(p, dtype=np.int64)
    out, m = [], 1
    while m < p:
        snd = r[r % (2 * m) == m]
        out.append(np.stack([snd, snd - m], axis=1))
        m <<= 1
    return out


class BinaryTree(FlatAlgorithm):
    """Binomial-tree reduce followed by binomial-tree broadcast (not pipelined)."""

    name = "binary_tree"
    summary = "binomial tree reduce + broadcast: 2 ceil(log2 p)(a + n b) + ceil(log2 p) n g"
    ops = frozenset({"allreduce", "reduce", "broadcast"})
    step_ops = ops

    def formula(self, op, p, n, a, b, g):
        return {"allreduce": binomial_allreduce, "reduce": binomial_reduce,
                "broadcast": binomial_broadcast}[op](p, n, a, b, g)

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """One pattern per tree level: reduce levels (whole vector, reduced), then broadcast levels."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        levels = _binomial_levels(p)
        red = [Step(pr, 1.0, 1.0) for pr in levels]
        bc = [Step(pr[:, ::-1].copy(), 1.0, 0.0) for pr in reversed(levels)]
        return {"allreduce": red + bc, "reduce": red, "broadcast": bc}[op]


# --------------------------------------------------------------------------------------------------------
# NCCL double binary tree
# --------------------------------------------------------------------------------------------------------
def _btree_node(nranks: int, rank: int) -> tuple[int, int, int]:
    """(parent, child0, child1) of ``rank`` in NCCL's btree (``ncclGetBtree``); -1 where absent."""
    bit = 1
    while bit < nranks:
        if bit & rank:
            break
        bit <<= 1
    if rank == 0:
        return -1, -1, (bit >> 1 if nranks > 1 else -1)
    up = (rank ^ bit) | (bit << 1)
    if up >= nranks:
        up = rank ^ bit
    lowbit = bit >> 1
    down0 = -1 if lowbit == 0 else rank - lowbit
    down1 = -1 if lowbit == 0 else rank + lowbit
    while down1 >= nranks:
        down1 = -1 if lowbit == 0 else rank + lowbit
        lowbit >>= 1
    return up, down0, down1


@lru_cache(maxsize=64)
def nccl_btree(p: int) -> np.ndarray:
    """Parent of every rank in NCCL's binary tree on ``p`` ranks (-1 for the root, rank 0)."""
    out = np.array([_btree_node(p, r)[0] for r in range(p)], dtype=np.int64)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def nccl_double_tree(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Parents of every rank in NCCL's two trees (``ncclGetDtree``): tree 2 mirrors tree 1 for even ``p``
    (rank ``r`` plays ``p-1-r``) and shifts it by one for odd ``p`` (rank ``r`` plays ``r-1 mod p``)."""
    t1 = nccl_btree(p)
    r = np.arange(p, dtype=np.int64)
    if p % 2 == 1:
        u = t1[(r - 1) % p]
        t2 = np.where(u == -1, -1, (u + 1) % p)
    else:
        u = t1[p - 1 - r]
        t2 = np.where(u == -1, -1, p - 1 - u)
    t2 = t2.astype(np.int64)
    t2.setflags(write=False)
    return t1, t2


def _depth_height(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = len(parent)
    depth = np.full(p, -1, dtype=np.int64)
    for v in range(p):  # memoised walk to the root
        path, x = [], v
        while x != -1 and depth[x] < 0:
            path.append(x)
            x = parent[x]
        base = -1 if x == -1 else depth[x]
        for i, y in enumerate(reversed(path)):
            depth[y] = base + 1 + i
    height = np.zeros(p, dtype=np.int64)
    for v in np.argsort(-depth, kind="stable"):
        if parent[v] != -1:
            height[parent[v]] = max(height[parent[v]], height[v] + 1)
    return depth, height


def dbt_loads(p: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steady-state loads of the double binary tree (elementwise, int64): ``m`` (most flows on one rank,
    up-down), ``m_u`` (most flows, one direction) and ``m_g`` (most segments reduced by one rank)."""
    p = np.asarray(p, dtype=np.int64)
    m = np.where(p >= 4, 4, np.where(p == 3, 3, np.where(p == 2, 2, 0)))
    mu = np.where(p >= 3, 2, np.where(p == 2, 1, 0))
    return m, mu, mu.copy()


def best_segments(D: Any, A: Any, S: Any, n: Any, max_segments: int) -> np.ndarray:
    """Integer ``k`` in ``[1, max_segments]`` minimising ``(k + D)(A + S n / (2k))`` (elementwise)."""
    D = np.asarray(D, dtype=np.float64)
    num = D * np.asarray(S, dtype=np.float64) * np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        kstar = np.sqrt(num / (2.0 * np.asarray(A, dtype=np.float64)))
    kstar = np.where(np.isnan(kstar), 1.0, kstar)
    k1 = np.clip(np.floor(kstar), 1.0, float(max_segments))
    k2 = np.minimum(k1 + 1.0, float(max_segments))

    def f(k):
        return (k + D) * (A + S * n / (2.0 * k))

    return np.where(f(k2) < f(k1), k2, k1)


class DoubleBinaryTree(FlatAlgorithm):
    """NCCL's pipelined double binary tree (see the module docstring).

    Parameters
    ----------
    segment_bytes : float, optional
        Fixed segment (chunk) size per tree in bytes; ``None`` (default) picks the optimal segment count.
    max_segments : int
        Upper bound on the segment count when optimising (default 65536).
    """

    name = "double_binary_tree"
    summary = "NCCL pipelined double binary tree: ~2 ceil(log2 p) a + 2 n b + n g (segmented)"
    ops = frozenset({"allreduce", "reduce", "broadcast"})
    step_ops = ops

    def __init__(self, segment_bytes: float | None = None, max_segments: int = 1 << 16):
        if segment_bytes is not None and (isinstance(segment_bytes, bool) or not isinstance(segment_bytes, Real)
                                          or not segment_bytes > 0 or segment_bytes == float("inf")):
            raise ConfigError(self.name, "segment_bytes", segment_bytes, "must be a finite number > 0")
        if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
            raise ConfigError(self.name, "max_segments", max_segments, "must be an integer >= 1")
        self.segment_bytes = None if segment_bytes is None else float(segment_bytes)
        self.max_segments = max_segments

    # ---- closed form -----------------------------------------------------------------------------------
    @staticmethod
    def _depth_term(op: str, p: np.ndarray) -> np.ndarray:
        H = ceil_log2(p).astype(np.float64)
        return 2.0 * H - 1.0 if op == "allreduce" else H - 1.0

    def _slope(self, op: str, p: np.ndarray, b: Any, g: Any) -> np.ndarray:
        """Seconds per byte of segment in one steady-state step."""
        m, mu, mg = dbt_loads(p)
        if op == "allreduce":
            return m * b + mg * g
        if op == "reduce":
            return mu * b + mg * g
        return mu * b

    def segments(self, op: str, p: Any, n: Any, a: Any, S: Any) -> np.ndarray:
        """Segment count per tree: fixed-size (``ceil(n / (2 segment_bytes))``) or optimal."""
        if self.segment_bytes is not None:
            return np.maximum(1.0, np.ceil(np.asarray(n, dtype=np.float64) / (2.0 * self.segment_bytes)))
        return best_segments(self._depth_term(op, np.asarray(p)), a, S, n, self.max_segments)

    def formula(self, op, p, n, a, b, g):
        D = self._depth_term(op, p)
        S = self._slope(op, p, b, g)
        k = self.segments(op, p, n, a, S)
        return np.where(p > 1, (k + D) * (a + S * n / (2.0 * k)), 0.0)

    def bounds(self, op: str, p: int, nbytes: float, net) -> tuple[float, float]:
        """(lower, upper) bound on the exact step schedule priced with a uniform link model ``net`` (the
        upper bound is the closed form)."""
        fab: Fabric = as_fabric(net)
        pa = np.asarray(p)
        a, b, g = select_params(fab, pa)
        D = self._depth_term(op, pa)
        S = self._slope(op, pa, b, g)
        k = self.segments(op, pa, nbytes, a, S)
        c = nbytes / (2.0 * k)
        lo = (k + D) * a + max(0.0, float(k - D)) * c * S
        return float(lo), float((k + D) * (a + S * c))

    # ---- steps -----------------------------------------------------------------------------------------
    def _edges(self, p: int, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pairs, start step of segment 0, is_up) of every tree edge used by ``op``."""
        src, dst, start, up = [], [], [], []
        for parent in nccl_double_tree(p):
            depth, height = _depth_height(parent)
            H = int(height[parent == -1][0])
            kids = np.flatnonzero(parent != -1)
            if op in ("allreduce", "reduce"):
                src.append(kids), dst.append(parent[kids]), start.append(height[kids])
                up.append(np.ones(len(kids), bool))
            if op in ("allreduce", "broadcast"):
                off = H if op == "allreduce" else 0
                src.append(parent[kids]), dst.append(kids), start.append(off + depth[parent[kids]])
                up.append(np.zeros(len(kids), bool))
        pairs = np.stack([np.concatenate(src), np.concatenate(dst)], axis=1)
        return pairs, np.concatenate(start), np.concatenate(up)

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce",
              segments: int = 1) -> list[Step]:
        """Exact synchronous schedule with ``segments`` segments per tree: one Step per interval in which
        the set of active edges is constant (fill, steady state with ``repeat``, drain)."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if isinstance(segments, bool) or not isinstance(segments, (int, np.integer)) or segments < 1:
            raise ConfigError(self.name, "segments", segments, "must be an integer >= 1")
        k = int(segments)
        if p == 1:
            return []
        pairs, start, up = self._edges(p, op)
        bps = np.unique(np.concatenate([start, start + k]))
        out = []
        for t0, t1 in zip(bps[:-1], bps[1:]):
            act = (start <= t0) & (t0 < start + k)
            if not act.any():
                continue
            red = act & up
            nred = int(np.bincount(pairs[red, 1], minlength=p).max()) if red.any() else 0
            out.append(Step(pairs[act], 1.0 / (2 * k), nred / (2 * k), int(t1 - t0)))
        return out

    def fabric_steps(self, p: int, nbytes: float, flow_time: FlowTime, gamma_s_per_B: float,
                     ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Schedule with the segment count chosen as in the closed form, the step cost ``A + c S`` being
        measured with ``flow_time`` on the steady-state pattern (all edges active)."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        if self.segment_bytes is not None:
            k = max(1, int(np.ceil(nbytes / (2.0 * self.segment_bytes))))
        else:
            pairs, start, up = self._edges(p, op)
            D = int(start.max())
            A = float(flow_time(pairs, 0.0))
            half = nbytes / 2.0
            sb = (float(flow_time(pairs, half)) - A) / half if half > 0 else 0.0
            mg = int(np.bincount(pairs[up, 1], minlength=p).max()) if up.any() else 0
            k = int(best_segments(D, A, sb + mg * gamma_s_per_B, nbytes, self.max_segments))
        return self.steps(p, ranks_per_node=ranks_per_node, op=op, segments=k)
