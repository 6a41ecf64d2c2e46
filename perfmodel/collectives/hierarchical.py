"""Hierarchical (two-level) allreduce: inside each node, then between nodes, then inside each node again
(Goyal et al. 2017; Jia et al. 2018; NCCL/Horovod hierarchical allreduce).

``L = min(p, ranks_per_node)`` ranks per node, ``N = ceil(p / L)`` nodes, block placement. Intra-node
phases run a ring on ``fabric.intra``; the inter-node phase runs the chosen flat algorithm
(``inter_algorithm``, ring by default) on ``fabric.inter``.

Variant ``"reduce_scatter"`` (default; Jia et al., NCCL): intra-node ring reduce-scatter, then ``L``
concurrent inter-node allreduces of ``n/L`` bytes (one per local rank, across the ``N`` nodes), then an
intra-node ring all-gather. The ``L`` concurrent inter-node streams of a node share its NICs, so their
beta is multiplied by ``L / min(L, nics_per_node)``::

    T = RS_ring(L, n; intra) + AR_inter(N, n/L; inter, beta * L/min(L, nics)) + AG_ring(L, n; intra)

Variant ``"reduce_broadcast"`` (Goyal et al.: reduce to one leader per node, allreduce between the
leaders, broadcast inside the node). The intra-node reduce is a ring reduce-scatter followed by a direct
gather to the leader (``alpha + (L-1)/L n beta``: all blocks arrive at once through the leader's link); the
broadcast is a direct scatter followed by a ring all-gather::

    T = RS_ring(L, n) + (alpha + (L-1)/L n beta)_intra + AR_inter(N, n; inter)
        + (alpha + (L-1)/L n beta)_intra + AG_ring(L, n)

APPROXIMATION: when ``p`` is not a multiple of ``ranks_per_node`` the closed form prices ``N`` full nodes
(the last node is partly empty; the full nodes set the time). Step patterns require whole nodes.
``p <= ranks_per_node`` reduces to a ring on ``fabric.intra``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from hardware.errors import ConfigError

from ._flat import get_flat
from .base import Algorithm, Fabric, FlowTime, Step, embed_steps, embedded_fabric_steps
from .ring import ring_allgather, ring_reduce_scatter

__all__ = ["Hierarchical", "VARIANTS", "node_rings"]

VARIANTS = ("reduce_scatter", "reduce_broadcast")


def node_rings(N: int, L: int) -> np.ndarray:
    """Flows of one ring step inside each of ``N`` nodes of ``L`` ranks (``jL + i -> jL + (i+1) mod L``)."""
    j, i = np.meshgrid(np.arange(N, dtype=np.int64), np.arange(L, dtype=np.int64), indexing="ij")
    return np.stack([(j * L + i).ravel(), (j * L + (i + 1) % L).ravel()], axis=1)


class Hierarchical(Algorithm):
    """Two-level allreduce (see the module docstring).

    Parameters
    ----------
    inter_algorithm : str
        Flat algorithm between nodes: ``ring`` (default), ``recursive_doubling``, ``halving_doubling``,
        ``binary_tree`` or ``double_binary_tree``.
    variant : str
        ``"reduce_scatter"`` (default) or ``"reduce_broadcast"`` (Goyal et al.).
    """

    name = "hierarchical"
    summary = "intra-node reduce-scatter, inter-node allreduce of n/ppn, intra-node all-gather"

    def __init__(self, inter_algorithm: str = "ring", variant: str = "reduce_scatter"):
        self.inter = get_flat(inter_algorithm, self.name, "inter_algorithm")
        if variant not in VARIANTS:
            raise ConfigError(self.name, "variant", variant, f"must be one of {list(VARIANTS)}")
        self.variant = variant

    def __repr__(self) -> str:
        return f"Hierarchical(inter_algorithm={self.inter.name!r}, variant={self.variant!r})"

    # ---- closed form -----------------------------------------------------------------------------------
    def _time(self, op: str, p: np.ndarray, n: np.ndarray, fabric: Fabric) -> np.ndarray:
        L = np.minimum(p, fabric.ranks_per_node)
        N = -(-p // L)
        i, e = fabric.intra, fabric.inter
        ia, ib, ig = i.alpha_s, i.beta_s_per_B, i.gamma_s_per_B
        t = ring_reduce_scatter(L, n, ia, ib, ig) + ring_allgather(L, n, ia, ib)
        if self.variant == "reduce_scatter":
            share = fabric.share_factor(L)
            t = t + self.inter.formula("allreduce", N, n / L, e.alpha_s, e.beta_s_per_B * share, e.gamma_s_per_B)
        else:
            Lf = L.astype(np.float64)
            t = t + 2.0 * np.where(L > 1, ia + (Lf - 1.0) / Lf * n * ib, 0.0)
            t = t + self.inter.formula("allreduce", N, n, e.alpha_s, e.beta_s_per_B, e.gamma_s_per_B)
        return t

    # ---- steps -----------------------------------------------------------------------------------------
    def _layout(self, p: int, ranks_per_node: int | None) -> tuple[int, int]:
        if ranks_per_node is None:
            raise ConfigError(self.name, "ranks_per_node", None, "required for the step pattern")
        rpn = self._check_p_scalar(ranks_per_node)
        L = min(p, rpn)
        if p % L:
            raise ConfigError(self.name, "p", p, f"step pattern needs whole nodes (ranks_per_node = {rpn})")
        return L, p // L

    def _build(self, p: int, ranks_per_node: int | None,
               inter_steps: Callable[[np.ndarray, float], list[Step]]) -> list[Step]:
        L, N = self._layout(p, ranks_per_node)
        out: list[Step] = []
        ring = node_rings(N, L)
        if L > 1:
            out.append(Step(ring, 1.0 / L, 1.0 / L, L - 1))
        leaders = np.arange(N, dtype=np.int64) * L
        j, loc = np.meshgrid(np.arange(N, dtype=np.int64), np.arange(1, L, dtype=np.int64), indexing="ij")
        gather = np.stack([(j * L + loc).ravel(), (j * L).ravel()], axis=1)
        if self.variant == "reduce_scatter":
            if N > 1:  # group i = local rank i of every node
                out += inter_steps(leaders[None, :] + np.arange(L, dtype=np.int64)[:, None], 1.0 / L)
        else:
            if L > 1:
                out.append(Step(gather, 1.0 / L, 0.0))
            if N > 1:
                out += inter_steps(leaders[None, :], 1.0)
            if L > 1:
                out.append(Step(gather[:, ::-1].copy(), 1.0 / L, 0.0))
        if L > 1:
            out.append(Step(ring, 1.0 / L, 0.0, L - 1))
        return out

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Intra ring reduce-scatter (one pattern, L-1 times), the inter algorithm's steps run by every
        local rank index at once (``n/L`` each; Goyal variant: gather, leaders only with ``n``, scatter),
        intra ring all-gather. ``ranks_per_node`` is required and must divide ``p`` (or be >= p)."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        return self._build(p, ranks_per_node,
                           lambda rmap, scale: embed_steps(self.inter.steps(rmap.shape[1]), rmap, scale))

    def fabric_steps(self, p: int, nbytes: float, flow_time: FlowTime, gamma_s_per_B: float,
                     ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """As :meth:`steps`, letting the inter algorithm adapt to ``flow_time`` (pipelined trees)."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        return self._build(p, ranks_per_node, lambda rmap, scale: embedded_fabric_steps(
            self.inter, rmap, scale, nbytes, flow_time, gamma_s_per_B))
