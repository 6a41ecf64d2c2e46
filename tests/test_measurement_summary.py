"""executor.measurement.summarise: the iteration is the slowest rank's, the breakdown the critical rank's
(the last to finish its compute), with known per-rank records."""
from __future__ import annotations

import pytest

from executor.measurement import summarise


def rec(data, fwd, bwd, wait, opt, *, warmup=False, kfac_factor=0.0):
    return {"warmup": warmup, "data_s": data, "forward_s": fwd, "backward_s": bwd, "comm_wait_s": wait,
            "comm_total_s": wait + 0.001, "optimizer_s": opt, "kfac_refresh_s": 0.0, "kfac_factor_s": kfac_factor,
            "iteration_s": data + fwd + bwd + wait + opt}


def test_breakdown_is_the_critical_ranks_and_iteration_the_slowest():
    # iteration 1: rank 0 computes 100 ms and waits 2 ms for the allreduce; rank 1 computes 80 ms and waits
    # 22 ms for rank 0. Iteration 2 swaps them. The allreduce is exposed by 2 ms only.
    r0 = [rec(0.001, 0.03, 0.06, 0.0, 0.005, warmup=True), rec(0.0, 0.04, 0.06, 0.002, 0.005),
          rec(0.0, 0.03, 0.05, 0.022, 0.005)]
    r1 = [rec(0.001, 0.03, 0.06, 0.0, 0.005, warmup=True), rec(0.0, 0.03, 0.05, 0.022, 0.006),
          rec(0.0, 0.04, 0.06, 0.002, 0.006)]
    s = summarise([r0, r1], global_batch=64)
    b = s["breakdown"]
    assert s["measured_iterations"] == 2
    assert b["compute_s"] == pytest.approx(0.100)          # the slowest compute, not the waiting rank's 80 ms
    assert b["comm_exposed_s"] == pytest.approx(0.002)     # what no rank could hide
    assert b["optimizer_s"] == pytest.approx(0.0055)       # rank 0's 5 ms, then rank 1's 6 ms
    # iteration: the slowest rank of each (rank 1's 108 ms, then rank 1's 108 ms)
    assert s["iteration_s"] == pytest.approx(0.108) and s["images_per_s"] == pytest.approx(64 / 0.108)


def test_kfac_factor_time_is_booked_as_optimizer():
    s = summarise([[rec(0.0, 0.05, 0.07, 0.0, 0.01, kfac_factor=0.02)]], global_batch=32)
    assert s["breakdown"]["compute_s"] == pytest.approx(0.10)
    assert s["breakdown"]["optimizer_s"] == pytest.approx(0.03)


def test_only_warmup_is_an_error():
    with pytest.raises(ValueError, match="no measured"):
        summarise([[rec(0.0, 0.05, 0.07, 0.0, 0.01, warmup=True)]], global_batch=32)


def test_the_copies_after_the_wait_are_their_own_component():
    """comm_exposed_s is the wait for the collectives alone; the averaging and copy back that follow it in
    finish() are copy_out_s (the cost models book them with the bucketer's overheads)."""
    def with_copy(r, copy):
        return {**r, "copy_out_s": copy, "iteration_s": r["iteration_s"] + copy}
    r0 = [with_copy(rec(0.0, 0.04, 0.06, 0.002, 0.005), 0.003)]
    r1 = [with_copy(rec(0.0, 0.03, 0.05, 0.022, 0.006), 0.004)]
    b = summarise([r0, r1], global_batch=64)["breakdown"]
    assert b["comm_exposed_s"] == pytest.approx(0.002) and b["copy_out_s"] == pytest.approx(0.003)   # rank 0's
    # older records without the split: 0
    assert summarise([[rec(0.0, 0.04, 0.06, 0.002, 0.005)]], global_batch=8)["breakdown"]["copy_out_s"] == 0.0
