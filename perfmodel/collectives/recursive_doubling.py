"""Recursive-doubling allreduce (Thakur, Rabenseifner and Gropp 2005, section 4.4; MPICH's short-message
allreduce).

Power of two ``p``: in step ``k = 0..log2(p)-1`` rank ``i`` exchanges the whole vector with rank
``i XOR 2^k`` and reduces it::

    allreduce = log2(p) (alpha + n beta + n gamma)

Other ``p`` (the MPICH pre/post-step reduction to a power of two): let ``p' = 2^floor(log2 p)`` and
``r = p - p'``. Before the exchange, the ``r`` odd ranks among the first ``2r`` send their vector to their
even neighbour, which reduces it (``alpha + n beta + n gamma``); the ``p'`` survivors run recursive
doubling; afterwards each of those even ranks sends the result back (``alpha + n beta``). With
``L = ceil(log2 p) = floor(log2 p) + 1`` this is "ceil plus one extra step"::

    allreduce = (L + 1)(alpha + n beta) + L n gamma          (p not a power of two)

(The survivors are the even ranks among the first ``2r`` and all ranks ``>= 2r``, so rank 0 always
survives; MPICH pairs the other way round, which costs the same.)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import FlatAlgorithm, Step, ceil_log2, is_pow2

__all__ = ["RecursiveDoubling", "recursive_doubling_allreduce", "survivors", "pre_post_pairs"]


def recursive_doubling_allreduce(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """``log2(p)(a + n b + n g)`` for powers of two, else ``(L+1)(a + n b) + L n g``, ``L = ceil(log2 p)``."""
    L = ceil_log2(p).astype(np.float64)
    extra = (~is_pow2(p)).astype(np.float64)
    return (L + extra) * (a + n * b) + L * n * g


def survivors(p: int) -> tuple[int, int, np.ndarray]:
    """Power-of-two reduction of ``p`` ranks.

    Returns
    -------
    (q, r, old_of_new)
        ``q = 2^floor(log2 p)``, ``r = p - q`` and the original rank of each of the ``q`` survivors
        (new rank ``v < r`` is old rank ``2v``, else ``v + r``).
    """
    q = 1 << (int(p).bit_length() - 1)
    r = int(p) - q
    v = np.arange(q, dtype=np.int64)
    return q, r, np.where(v < r, 2 * v, v + r)


def pre_post_pairs(r: int) -> tuple[np.ndarray, np.ndarray]:
    """Flows of the pre-step (odd ``2i+1 -> 2i``) and the post-step (``2i -> 2i+1``), ``i < r``."""
    i = np.arange(r, dtype=np.int64)
    pre = np.stack([2 * i + 1, 2 * i], axis=1)
    return pre, pre[:, ::-1].copy()


def exchange_pairs(old_of_new: np.ndarray, mask: int) -> np.ndarray:
    """Flows ``v -> v XOR mask`` among survivors (both directions), mapped to original ranks."""
    v = np.arange(len(old_of_new), dtype=np.int64)
    return np.stack([old_of_new[v], old_of_new[v ^ mask]], axis=1)


class RecursiveDoubling(FlatAlgorithm):
    """Recursive doubling: ``log2 p`` full-vector exchanges (latency-optimal, for small messages)."""

    name = "recursive_doubling"
    summary = "recursive doubling: log2(p)(a + n b + n g); non-power-of-two: pre/post step (MPICH)"

    def formula(self, op, p, n, a, b, g):
        return recursive_doubling_allreduce(p, n, a, b, g)

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Pre-step (if p is not a power of two), one distinct exchange pattern per doubling step (whole
        vector, reduced), post-step."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        q, r, old = survivors(p)
        pre, post = pre_post_pairs(r)
        out = [Step(pre, 1.0, 1.0)] if r else []
        mask = 1
        while mask < q:
            out.append(Step(exchange_pairs(old, mask), 1.0, 1.0))
            mask <<= 1
        if r:
            out.append(Step(post, 1.0, 0.0))
        return out
