"""Recursive halving and doubling (Rabenseifner 2004; Thakur, Rabenseifner and Gropp 2005, section 4.4):
a recursive-halving reduce-scatter followed by a recursive-doubling all-gather. Used by MPICH for long
messages and by Goyal et al. 2017 between servers.

Power of two ``p`` (MPICH order: the reduce-scatter exchanges ``n/2`` with distance 1 first, then ``n/4``
with distance 2, ...; the all-gather reverses it)::

    reduce_scatter = log2(p) alpha + (p-1)/p n beta + (p-1)/p n gamma
    allgather      = log2(p) alpha + (p-1)/p n beta
    allreduce      = 2 log2(p) alpha + 2 (p-1)/p n beta + (p-1)/p n gamma
    reduce         = reduce_scatter + binomial gather to rank 0 (log2(p) alpha + (p-1)/p n beta)
    broadcast      = binomial scatter from rank 0 + allgather (van de Geijn)

Other ``p``: the simple pre/post-step reduction to ``p' = 2^floor(log2 p)`` of Thakur, Rabenseifner and
Gropp 2005 (section 4.4), not Rabenseifner and Traff's "binary blocks" variant (2004), which Goyal et al.
used and which is cheaper by up to one extra message of ``n``. With ``r = p - p'`` (the ``r`` odd ranks among
the first ``2r`` fold into their even neighbour; ``q = p'`` in the formulas)::

    allreduce      = 2 log2(q) alpha + 2 (q-1)/q n beta + (q-1)/q n gamma + (2 alpha + 2 n beta + n gamma)
    reduce_scatter = RS_q + (alpha + n beta + n gamma) + (alpha + n/p beta)
    allgather      = (alpha + n/p beta) + AG_q + (alpha + n beta)
    reduce         = (alpha + n beta + n gamma) + RS_q + gather_q
    broadcast      = scatter_q + AG_q + (alpha + n beta)

APPROXIMATION (reduce-scatter / all-gather, p not a power of two): the survivors work on ``n/q`` blocks and
the folded rank's ``n/p`` share travels in one extra message; MPICH's uneven block counts are ignored.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import FlatAlgorithm, Step, floor_log2
from .recursive_doubling import exchange_pairs, pre_post_pairs, survivors

__all__ = ["HalvingDoubling", "hd_allreduce", "hd_reduce_scatter", "hd_allgather", "hd_reduce",
           "hd_broadcast"]


def _parts(p: Any):
    p = np.asarray(p, dtype=np.int64)
    lg = floor_log2(p)
    q = np.ldexp(1.0, lg)  # float 2**lg
    r = (p != q).astype(np.float64)
    frac = (q - 1.0) / q
    return p.astype(np.float64), lg.astype(np.float64), frac, r


def hd_allreduce(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """Rabenseifner allreduce, with the pre/post step for p not a power of two (elementwise)."""
    _, lg, frac, r = _parts(p)
    return 2 * lg * a + frac * n * (2 * b + g) + r * (2 * a + n * (2 * b + g))


def hd_reduce_scatter(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """Recursive-halving reduce-scatter (elementwise)."""
    pf, lg, frac, r = _parts(p)
    return lg * a + frac * n * (b + g) + r * (2 * a + n * (b + g) + n / pf * b)


def hd_allgather(p: Any, n: Any, a: Any, b: Any, g: Any = 0.0) -> np.ndarray:
    """Recursive-doubling all-gather (elementwise; ``g`` unused)."""
    pf, lg, frac, r = _parts(p)
    return lg * a + frac * n * b + r * (2 * a + n * b + n / pf * b)


def hd_reduce(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """Rabenseifner reduce: reduce-scatter + binomial gather (elementwise)."""
    _, lg, frac, r = _parts(p)
    return 2 * lg * a + frac * n * (2 * b + g) + r * (a + n * (b + g))


def hd_broadcast(p: Any, n: Any, a: Any, b: Any, g: Any = 0.0) -> np.ndarray:
    """Van de Geijn broadcast: binomial scatter + recursive-doubling all-gather (elementwise)."""
    _, lg, frac, r = _parts(p)
    return 2 * lg * a + 2 * frac * n * b + r * (a + n * b)


_FORMULAS = {"allreduce": hd_allreduce, "reduce_scatter": hd_reduce_scatter, "allgather": hd_allgather,
             "reduce": hd_reduce, "broadcast": hd_broadcast}


class HalvingDoubling(FlatAlgorithm):
    """Rabenseifner's recursive halving (reduce-scatter) and doubling (all-gather)."""

    name = "halving_doubling"
    summary = ("Rabenseifner halving/doubling: 2 log2(p) a + 2(p-1)/p n b + (p-1)/p n g; "
               "non-power-of-two: pre/post step (Thakur et al. 2005)")
    ops = frozenset(_FORMULAS)
    step_ops = ops

    def formula(self, op, p, n, a, b, g):
        return _FORMULAS[op](p, n, a, b, g)

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Pre-step (p not a power of two), then ``log2 p'`` distinct exchange patterns, each used twice
        (reduce-scatter with ``n/2, n/4, ...``; all-gather with ``..., n/4, n/2``), or binomial
        gather/scatter patterns for reduce/broadcast, then the post-step."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        q, r, old = survivors(p)
        pre, post = pre_post_pairs(r)
        masks = [1 << k for k in range(q.bit_length() - 1)]  # 1, 2, ..., q/2
        rs = [Step(exchange_pairs(old, m), 1.0 / (2 * m), 1.0 / (2 * m)) for m in masks]
        ag = [Step(exchange_pairs(old, m), 1.0 / (2 * m), 0.0) for m in reversed(masks)]
        v = np.arange(q, dtype=np.int64)
        gather, scatter = [], []
        for m in masks:  # binomial tree on survivors, rooted at new rank 0 (= rank 0)
            snd = v[v % (2 * m) == m]
            gather.append(Step(np.stack([old[snd], old[snd - m]], axis=1), m / q, 0.0))
        for m in reversed(masks):
            snd = v[v % (2 * m) == 0]
            scatter.append(Step(np.stack([old[snd], old[snd + m]], axis=1), m / q, 0.0))
        pre_full = [Step(pre, 1.0, 1.0)] if r else []
        post_full = [Step(post, 1.0, 0.0)] if r else []
        if op == "allreduce":
            return pre_full + rs + ag + post_full
        if op == "reduce_scatter":
            return pre_full + rs + ([Step(post, 1.0 / p, 0.0)] if r else [])
        if op == "allgather":
            return ([Step(pre, 1.0 / p, 0.0)] if r else []) + ag + post_full
        if op == "reduce":
            return pre_full + rs + gather
        return scatter + ag + post_full  # broadcast
