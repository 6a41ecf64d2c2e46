"""Ring allreduce: a ring reduce-scatter followed by a ring all-gather (Patarasuk and Yuan 2009; Thakur,
Rabenseifner and Gropp 2005; the bandwidth-optimal algorithm of NCCL and Baidu's allreduce).

The vector is cut into ``p`` blocks of ``n/p`` bytes. In each of ``p - 1`` reduce-scatter steps every rank
sends one block to its right neighbour (rank ``i -> i+1 mod p``) and reduces the block it receives; in each
of ``p - 1`` all-gather steps it forwards a finished block. Costs (alpha-beta-gamma, see ``base``)::

    reduce_scatter = (p-1) alpha + (p-1)/p n beta + (p-1)/p n gamma
    allgather      = (p-1) alpha + (p-1)/p n beta
    allreduce      = 2(p-1) alpha + 2(p-1)/p n beta + (p-1)/p n gamma

Exact for any ``p`` (no power-of-two condition). Assumes the ring order equals the rank order (with block
placement only one ring edge per node boundary crosses the network).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import FlatAlgorithm, Step

__all__ = ["Ring", "ring_allreduce", "ring_reduce_scatter", "ring_allgather", "ring_pairs"]


def ring_reduce_scatter(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """``(p-1) alpha + (p-1)/p n (beta + gamma)`` (elementwise; 0 for p == 1)."""
    p = np.asarray(p, dtype=np.float64)
    q = p - 1.0
    return q * a + q / p * n * (b + g)


def ring_allgather(p: Any, n: Any, a: Any, b: Any, g: Any = 0.0) -> np.ndarray:
    """``(p-1) alpha + (p-1)/p n beta`` (elementwise; ``g`` unused)."""
    p = np.asarray(p, dtype=np.float64)
    q = p - 1.0
    return q * a + q / p * n * b


def ring_allreduce(p: Any, n: Any, a: Any, b: Any, g: Any) -> np.ndarray:
    """``2(p-1) alpha + 2(p-1)/p n beta + (p-1)/p n gamma`` (elementwise)."""
    p = np.asarray(p, dtype=np.float64)
    q = p - 1.0
    return 2.0 * q * a + q / p * n * (2.0 * b + g)


def ring_pairs(p: int) -> np.ndarray:
    """Flows ``i -> (i+1) mod p`` of one ring step, shape (p, 2)."""
    r = np.arange(p, dtype=np.int64)
    return np.stack([r, (r + 1) % p], axis=1)


class Ring(FlatAlgorithm):
    """Ring reduce-scatter + all-gather (bandwidth-optimal, latency linear in p)."""

    name = "ring"
    summary = "ring reduce-scatter + all-gather: 2(p-1)a + 2(p-1)/p n b + (p-1)/p n g"
    ops = frozenset({"allreduce", "reduce_scatter", "allgather"})
    step_ops = ops

    def formula(self, op, p, n, a, b, g):
        if op == "allreduce":
            return ring_allreduce(p, n, a, b, g)
        if op == "reduce_scatter":
            return ring_reduce_scatter(p, n, a, b, g)
        return ring_allgather(p, n, a, b, g)

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """RS: one pattern (``i -> i+1``), ``n/p`` per flow, repeated p-1 times, reducing n/p per step;
        AG: the same pattern without reduction, repeated p-1 times."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        pairs = ring_pairs(p)
        rs = Step(pairs, 1.0 / p, 1.0 / p, p - 1)
        ag = Step(pairs, 1.0 / p, 0.0, p - 1)
        return {"allreduce": [rs, ag], "reduce_scatter": [rs], "allgather": [ag]}[op]
