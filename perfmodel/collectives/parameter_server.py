"""Sharded parameter server (Li et al. 2014; MXNet/TensorFlow PS): ``p`` workers push their gradients to
``S`` servers, each server owning ``n/S`` bytes, then pull the updated parameters back.

Push: every worker sends ``n/S`` to each server (``n`` in all); every server receives ``p n / S`` and sums
``p`` contributions (``(p-1) n/S`` bytes reduced). Pull: the reverse, without reduction. All messages of a
phase are in flight at once and overlap their latency; the phase is bound by the busier end (bandwidth
bound, single-port model)::

    push = alpha + max(n * w, p n / S) beta + (p-1) n/S gamma
    pull = alpha + max(n * w, p n / S) beta
    allreduce-equivalent = push + pull

``w = L / min(L, nics_per_node)`` with ``L = min(p, ranks_per_node)`` workers sharing a node's NICs (1 for a
flat network). Servers are dedicated machines, so every message uses ``fabric.inter``. Default ``S = p``
(one server per worker, a common deployment); servers are endpoints ``p .. p+S-1`` in the step patterns.
``p == 1`` costs 0 (the package-wide convention: a single worker keeps its own parameters).
"""
from __future__ import annotations

from numbers import Integral

import numpy as np

from hardware.errors import ConfigError

from .base import Algorithm, Fabric, Step

__all__ = ["ParameterServer"]


class ParameterServer(Algorithm):
    """Push to / pull from ``servers`` sharded servers.

    Parameters
    ----------
    servers : int, optional
        Number of servers ``S`` (default: ``p``, one per worker).
    """

    name = "parameter_server"
    summary = "sharded parameter server: push n to S servers, pull n back; server NIC bound"

    def __init__(self, servers: int | None = None):
        if servers is not None and (isinstance(servers, bool) or not isinstance(servers, Integral)
                                    or servers < 1):
            raise ConfigError(self.name, "servers", servers, "must be an integer >= 1")
        self.servers = None if servers is None else int(servers)

    def __repr__(self) -> str:
        return f"ParameterServer(servers={self.servers!r})"

    def n_servers(self, p):
        """``S`` for each ``p``."""
        p = np.asarray(p, dtype=np.int64)
        return p if self.servers is None else np.full_like(p, self.servers)

    def _time(self, op: str, p: np.ndarray, n: np.ndarray, fabric: Fabric) -> np.ndarray:
        e = fabric.inter
        S = self.n_servers(p).astype(np.float64)
        pf = p.astype(np.float64)
        w = fabric.share_factor(np.minimum(p, fabric.ranks_per_node))
        load = np.maximum(n * w, pf * n / S)
        return 2.0 * (e.alpha_s + load * e.beta_s_per_B) + (pf - 1.0) * n / S * e.gamma_s_per_B

    def n_endpoints(self, p: int, ranks_per_node: int | None = None) -> int:
        """``p`` workers plus ``S`` servers."""
        return int(p) + int(self.n_servers(p))

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Push (every worker -> every server, ``n/S`` per flow, ``(p-1) n/S`` reduced per server), pull
        (every server -> every worker). Workers are ranks ``0..p-1``, servers ``p..p+S-1``."""
        p = self._check_p_scalar(p)
        self._check_op(op, self.step_ops)
        if p == 1:
            return []
        S = int(self.n_servers(p))
        w, s = np.meshgrid(np.arange(p, dtype=np.int64), np.arange(p, p + S, dtype=np.int64), indexing="ij")
        push = np.stack([w.ravel(), s.ravel()], axis=1)
        return [Step(push, 1.0 / S, (p - 1) / S), Step(push[:, ::-1].copy(), 1.0 / S, 0.0)]
