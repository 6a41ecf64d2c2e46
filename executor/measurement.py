"""Measurements: per-iteration records of a real run, their summary (the same keys as ``predict --json``,
measured), and atomic writing.

Conventions
-----------
- Each rank records, per iteration, wall seconds of: ``data_s`` (fetching the batch), ``forward_s``,
  ``backward_s`` (including the gradient hooks that fill buckets and launch allreduces),
  ``comm_wait_s`` (waiting for outstanding allreduces after backward = exposed communication),
  ``copy_out_s`` (after the wait: averaging the buckets and copying them back into the gradients, executor
  work that the cost models book with the bucketer's overheads, not as communication),
  ``comm_total_s`` (sum of the bucket allreduce durations, overlapped or not), ``optimizer_s`` (including
  K-FAC work), ``kfac_refresh_s`` (the part of ``optimizer_s`` spent refreshing factors/inverses) and
  ``iteration_s`` (the whole step).
- A synchronous data-parallel iteration is as slow as its slowest rank: the summary takes, per iteration,
  the maximum over ranks of ``iteration_s`` and the per-component values of that slowest rank.
- Warm-up iterations are recorded and marked (``warmup: true``) and excluded from the summary.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["COMPONENTS", "summarise", "write_json_atomic", "load_measurement"]

from perfmodel.atomic import write_json_atomic  # noqa: E402 - re-exported: the executor writes through it

COMPONENTS = ("data_s", "forward_s", "backward_s", "comm_wait_s", "copy_out_s", "comm_total_s", "optimizer_s",
              "kfac_refresh_s", "kfac_factor_s", "iteration_s")


def summarise(per_rank: Sequence[Sequence[Mapping[str, Any]]], global_batch: int) -> dict[str, Any]:
    """Summary of measured iterations from ``per_rank[r][i]`` records (rank r, iteration i).

    Returns the contract keys (``iteration_s``, ``images_per_s``, ``breakdown`` with ``compute_s``,
    ``comm_total_s``, ``comm_exposed_s``, ``optimizer_s``, ``io_s``) plus the distribution of the step time
    (``iteration_p50_s``, ``iteration_p99_s``, ``iteration_std_s``, ``iteration_min_s``) and the number of
    measured iterations.

    The iteration time of an iteration is the slowest rank's. Its breakdown is that of the *critical* rank:
    the one that finished its data loading, forward and backward last. Its wait for the allreduce is the
    communication that no rank could hide, so ``comm_exposed_s`` is not inflated by the other ranks' wait
    for it, and ``compute_s`` is the slowest rank's compute, as the cost models book them (a calibrated
    compute time is the slowest of the ranks measured together).

    K-FAC computes its factors inside the forward/backward hooks of a refresh iteration (``kfac_factor_s``);
    ``compute_s`` excludes that time and ``optimizer_s`` includes it, as the cost models book it
    (``forward_s``/``backward_s`` stay as timed).
    """
    n_iter = min(len(r) for r in per_rank)
    slowest, critical = [], []
    for i in range(n_iter):
        recs = [r[i] for r in per_rank]
        if recs[0].get("warmup"):
            continue
        slowest.append(max(recs, key=lambda rec: rec["iteration_s"]))
        critical.append(max(recs, key=lambda rec: rec.get("data_s", 0.0) + rec["forward_s"] + rec["backward_s"]))
    if not slowest:
        raise ValueError("no measured (non-warm-up) iterations")
    it = np.array([r["iteration_s"] for r in slowest])

    def mean(key: str) -> float:
        return float(np.mean([r.get(key, 0.0) for r in critical]))

    iteration_s = float(it.mean())
    breakdown = {
        "compute_s": mean("forward_s") + mean("backward_s") - mean("kfac_factor_s"),
        "forward_s": mean("forward_s"), "backward_s": mean("backward_s"),
        "comm_total_s": mean("comm_total_s"), "comm_exposed_s": mean("comm_wait_s"),
        "copy_out_s": mean("copy_out_s"),
        "optimizer_s": mean("optimizer_s") + mean("kfac_factor_s"), "kfac_factor_s": mean("kfac_factor_s"),
        "kfac_refresh_s": mean("kfac_refresh_s"), "io_s": mean("data_s"),
    }
    return {
        "iteration_s": iteration_s, "images_per_s": global_batch / iteration_s,
        "iteration_p50_s": float(np.percentile(it, 50)), "iteration_p99_s": float(np.percentile(it, 99)),
        "iteration_std_s": float(it.std(ddof=1)) if it.size > 1 else 0.0, "iteration_min_s": float(it.min()),
        "measured_iterations": int(it.size), "breakdown": breakdown,
    }


def load_measurement(path: str | os.PathLike) -> dict[str, Any]:
    """Read a measurement file written by the executor."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
