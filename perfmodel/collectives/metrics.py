"""Bandwidth figures of merit of a measured or predicted collective, as nccl-tests reports them
(PAPERS.md section 6; nccl-tests doc/PERFORMANCE.md).

* algorithm bandwidth ``algbw = n / time`` (bytes/s), ``n`` the collective's size (for reduce-scatter the
  input, for all-gather the output);
* bus bandwidth ``busbw = algbw * factor``: the per-rank link speed a bandwidth-optimal algorithm would need,
  comparable across ``p`` and with the hardware's link speed. Factors: allreduce ``2(p-1)/p``;
  reduce-scatter and all-gather ``(p-1)/p``; broadcast and reduce ``1``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from hardware.errors import ConfigError

from .base import SOURCE, check_p_n

__all__ = ["BUS_FACTORS", "bus_factor", "algorithm_bandwidth", "bus_bandwidth"]

#: collective -> bus-bandwidth factor as a function of p (nccl-tests)
BUS_FACTORS = {
    "allreduce": lambda p: 2.0 * (p - 1.0) / p,
    "reduce_scatter": lambda p: (p - 1.0) / p,
    "allgather": lambda p: (p - 1.0) / p,
    "broadcast": lambda p: np.ones_like(p),
    "reduce": lambda p: np.ones_like(p),
}


def bus_factor(p: Any, op: str = "allreduce") -> np.ndarray:
    """nccl-tests bus-bandwidth factor of ``op`` on ``p`` ranks (elementwise)."""
    if op not in BUS_FACTORS:
        raise ConfigError(SOURCE, "collective", op, f"unknown; known: {', '.join(BUS_FACTORS)}")
    pi, _, scalar = check_p_n(p, 0.0)
    out = BUS_FACTORS[op](pi.astype(np.float64))
    return out[()] if scalar else out


def _check_time(time_s: Any) -> np.ndarray:
    t = np.asarray(time_s, dtype=np.float64)
    bad = ~np.isfinite(t) | (t <= 0)
    if bad.any():
        raise ConfigError(SOURCE, "time_s", t[bad].flat[0].item(), "must be finite and > 0")
    return t


def algorithm_bandwidth(nbytes: Any, time_s: Any):
    """``nbytes / time_s`` in bytes/s (elementwise)."""
    _, n, scalar = check_p_n(1, nbytes)
    t = _check_time(time_s)
    out = n / t
    return out[()] if np.ndim(out) == 0 else out


def bus_bandwidth(p: Any, nbytes: Any, time_s: Any, op: str = "allreduce"):
    """Bus bandwidth in bytes/s: ``algorithm_bandwidth * bus_factor(p, op)`` (elementwise)."""
    return algorithm_bandwidth(nbytes, time_s) * bus_factor(p, op)
