"""``auto``: pick the fastest algorithm per (p, message size), as MPI libraries' tuned selection does
(MPICH, Open MPI's tuned component and NCCL choose by size thresholds; here the thresholds fall out of the
cost models themselves).

The closed form of ``auto`` is the elementwise minimum over its candidates that define the collective;
:meth:`Auto.select` also returns the index of the winner (ties go to the earlier candidate). On a fabric
(:func:`perfmodel.collectives.base.time_on_fabric`) ``auto`` prices every applicable candidate with the
injected ``flow_time`` and keeps the fastest; candidates that cannot build a step pattern for the given
``p`` (e.g. hierarchical without whole nodes) are skipped.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from hardware.errors import ConfigError, ToolkitError

from .base import (OPS, SOURCE, Algorithm, Fabric, FlowTime, NetParams, Step, as_fabric, check_p_n,
                   time_on_fabric)

__all__ = ["Auto"]


class Auto(Algorithm):
    """Fastest of ``candidates`` per element.

    Parameters
    ----------
    candidates : mapping of str to Algorithm
        The algorithms to choose from, in tie-breaking order.
    """

    name = "auto"
    summary = "fastest algorithm per message size (elementwise minimum of the candidates)"

    def __init__(self, candidates: Mapping[str, Algorithm]):
        if not candidates:
            raise ConfigError(SOURCE, "candidates", list(candidates), "need at least one algorithm")
        self.candidates: dict[str, Algorithm] = dict(candidates)
        self.ops = frozenset(op for op in OPS if any(a.supports(op) for a in self.candidates.values()))
        self.step_ops = frozenset(op for op in OPS if any(op in a.step_ops for a in self.candidates.values()))

    def __repr__(self) -> str:
        return f"Auto(candidates={list(self.candidates)!r})"

    def names(self, op: str = "allreduce") -> tuple[str, ...]:
        """Candidates defining ``op``, in order (what :meth:`select`'s index refers to)."""
        return tuple(k for k, a in self.candidates.items() if a.supports(op))

    def select(self, op: str, p: Any, nbytes: Any, net: NetParams | Fabric) -> tuple[Any, Any]:
        """(times, index): the fastest candidate's time and its index in :meth:`names` (elementwise)."""
        self._check_op(op, self.ops)
        fabric = as_fabric(net)
        pi, n, scalar = check_p_n(p, nbytes)
        names = self.names(op)
        times = np.stack([np.asarray(self.candidates[k].time(op, pi, n, fabric), dtype=np.float64)
                          for k in names])
        idx = np.argmin(times, axis=0)
        best = np.take_along_axis(times, idx[None, ...], axis=0)[0]
        if scalar:
            return best[()], int(idx)
        return best, idx

    def choose(self, op: str, p: Any, nbytes: Any, net: NetParams | Fabric):
        """Name of the fastest candidate (a str for scalar inputs, else an array of str)."""
        _, idx = self.select(op, p, nbytes, net)
        names = np.array(self.names(op))
        return str(names[idx]) if np.ndim(idx) == 0 else names[idx]

    def _time(self, op: str, p: np.ndarray, n: np.ndarray, fabric: Fabric) -> np.ndarray:
        return np.asarray(self.select(op, p, n, fabric)[0])

    def steps(self, p: int, ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Not defined: the choice depends on the message size and the network (use
        :func:`time_on_fabric`, which calls :meth:`fabric_steps`)."""
        raise ConfigError(SOURCE, "allreduce", self.name,
                          "has no fixed step pattern; use time_on_fabric or a concrete algorithm")

    def fabric_steps(self, p: int, nbytes: float, flow_time: FlowTime, gamma_s_per_B: float,
                     ranks_per_node: int | None = None, op: str = "allreduce") -> list[Step]:
        """Steps of the candidate that is fastest under ``flow_time``."""
        best, best_t = None, np.inf
        for alg in self.candidates.values():
            if op not in alg.step_ops:
                continue
            try:
                t = time_on_fabric(alg, p, nbytes, flow_time, gamma_s_per_B, ranks_per_node=ranks_per_node,
                                   op=op)
            except ToolkitError:
                continue  # not applicable to this p / node layout
            if t < best_t:
                best, best_t = alg, t
        if best is None:
            raise ConfigError(SOURCE, "allreduce", self.name, f"no candidate has a step pattern for p = {p}")
        return best.fabric_steps(p, nbytes, flow_time, gamma_s_per_B, ranks_per_node=ranks_per_node, op=op)
