"""2D-torus allreduce (Mikami et al. 2018 on ABCI; Ying et al. 2018 on TPU v3 pods).

The ``p`` ranks form a ``px x py`` grid; rank ``y*px + x`` sits at ``(x, y)`` (rows are consecutive ranks,
so with block placement a row lies inside a node when ``px`` divides ``ranks_per_node``). Three phases:

1. ring reduce-scatter along X (every row at once): ``(px-1)(alpha + n/px (beta + gamma))``;
2. allreduce along Y of the ``n/px`` block each rank now owns (every column at once), with ``y_algorithm``
   (ring by default, as in Mikami et al.);
3. ring all-gather along X: ``(px-1)(alpha + n/px beta)``.

With rings in both dimensions the bandwidth term equals the flat ring's, ``2(p-1)/p n beta``, while the
latency term falls from ``2(p-1)`` to ``2(px-1) + 2(py-1)`` messages.

Links: the X phases use ``fabric.intra`` when ``ranks_per_node % px == 0`` (rows inside nodes), else
``fabric.inter``; the Y phase uses ``fabric.intra`` when ``p <= ranks_per_node``, else ``fabric.inter``
with beta multiplied by ``c / min(c, nics_per_node)``, ``c = min(px, ranks_per_node)`` ranks of a node
crossing the node boundary at once. APPROXIMATION: X rows that straddle nodes are charged the plain
inter-node link (no NIC sharing).

Grid: ``px`` given (must divide every ``p``), or by default the most square factorisation
``px = p / d`` with ``d`` the largest divisor of ``p`` not above ``sqrt(p)`` (so ``px >= py``; prime ``p``
gives a ring). With ``px = ranks_per_node`` this is exactly the hierarchical ``reduce_scatter`` variant.
"""
from __future__ import annotations

from numbers import Integral
from typing import Callable

import numpy as np

from hardware.errors import ConfigError

from ._flat import get_flat
from .base import Algorithm, Fabric, FlowTime, Step, embed_steps, embedded_fabric_steps
from .ring import ring_allgather, ring_reduce_scatter

__all__ = ["Torus2D", "most_square_grid"]


def most_square_grid(p) -> tuple[np.ndarray, np.ndarray]:
    """``(px, py)`` with ``px * py = p``, ``px >= py`` and ``py`` the largest divisor ``<= sqrt(p)``
    (elementwise over integer ``p >= 1``; loops over candidate divisors, not over elements)."""
    p = np.asarray(p, dtype=np.int64)
    u, inv = np.unique(p, return_inverse=True)
    d = np.ones_like(u)
    top = int(np.sqrt(float(u.max()))) + 1 if u.size else 1
    for c in range(2, top + 1):
        d = np.where((u % c == 0) & (c * c <= u), c, d)
    py = d[inv].reshape(p.shape)
    return p // py, py


class Torus2D(Algorithm):
    """2D-torus allreduce: RS along X, allreduce along Y, AG along X (see the module docstring).

    Parameters
    ----------
    px : int, optional
        Size of the X dimension (must divide p); default: most square grid with ``px >= py``.
    y_algorithm : str
        Flat algorithm along Y (default ``"ring"``).
    """

    name = "torus2d"
    summary = "2D torus: ring reduce-scatter along X, allreduce along Y on n/px, ring all-gather along X"

    def __init__(self, px: int | None = None, y_algorithm: str = "ring"):
        if px is not None and (isinstance(px, bool) or not isinstance(px, Integral) or px < 1):
            raise ConfigError(self.name, "px", px, "must be an integer >= 1")
        self.px = None if px is None else int(px)
        self.y = get_flat(y_algorithm, self.name, "y_algorithm")

    def __repr__(self) -> str:
        return f"Torus2D(px={self.px!r}, y_algorithm={self.y.name!r})"

    def grid(self, p) -> tuple[np.ndarray, np.ndarray]:
        """``(px, py)`` for each ``p`` (ConfigError when a fixed ``px`` does not divide ``p``)."""
        p = np.asarray(p, dtype=np.int64)
        if self.px is None:
            return most_square_grid(p)
        bad = p % self.px != 0
        if bad.any():
            raise ConfigError(self.name, "px", self.px, f"must divide p = {int(p[bad].flat[0])}")
        return np.full_like(p, self.px), p // self.px

    # ---- closed form -----------------------------------------------------------------------------------
    def _time(self, op: str, p: np.ndarray, n: np.ndarray, fabric: Fabric) -> np.ndarray:
        px, py = self.grid(p)
        rpn = fabric.ranks_per_node
        i, e = fabric.intra, fabric.inter
        x_in = rpn % px == 0
        ax = np.where(x_in, i.alpha_s, e.alpha_s)
        bx = np.where(x_in, i.beta_s_per_B, e.beta_s_per_B)
        gx = np.where(x_in, i.gamma_s_per_B, e.gamma_s_per_B)
        y_in = p <= rpn
        share = np.where(y_in, 1.0, fabric.share_factor(np.minimum(px, rpn)))
        ay = np.where(y_in, i.alpha_s, e.alpha_s)
        by = np.where(y_in, i.beta_s_per_B, e.beta_s_per_B) * share
        gy = np.where(y_in, i.gamma_s_per_B, e.gamma_s_per_B)
        return (ring_reduce_scatter(px, n, ax, bx, gx) + ring_allgather(px, n, ax, bx)
                + self.y.formula("allreduce", py, n / px, ay, by, gy))

    # ---- steps -----------------------------------------------------------------------------------------
    def _build(self, p: int, y_steps: Callable[[np.ndarray, float], list[Step]]) -> list[Step]:
        px, py = (int(v) for v in self.grid(np.int64(p)))
        x = np.arange(px, dtype=np.int64)
        y = np.arange(py, dtype=np.int64)
        rows = np.stack([(y[:, None] * px + x[None, :]).ravel(),
                         (y[:, None] * px + (x[None, :] + 1) % px).ravel()], axis=1)
        out: list[Step] = []
        if px > 1:
            out.append(Step(rows, 1.0 / px, 1.0 / px, px - 1))
        if py > 1:  # group x = column x
            out += y_steps(x[:, None] + y[None, :] * px, 1.0 / px)
        if px > 1:
            out.append(Step(rows, 1.0 / px, 0.0, px - 1))
        return out

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Ring RS along rows (one pattern, px-1 times), the Y algorithm's steps in every column at once
        (``n/px``), ring AG along rows. ``ranks_per_node`` is not used."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        return self._build(p, lambda rmap, scale: embed_steps(self.y.steps(rmap.shape[1]), rmap, scale))

    def fabric_steps(self, p: int, nbytes: float, flow_time: FlowTime, gamma_s_per_B: float,
                     ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """As :meth:`steps`, letting the Y algorithm adapt to ``flow_time`` (pipelined trees)."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        return self._build(p, lambda rmap, scale: embedded_fabric_steps(
            self.y, rmap, scale, nbytes, flow_time, gamma_s_per_B))
