"""Time to accuracy (validation.tta and the executor's until-target mode): when a run evaluates, where it
stops, the crossing records the convergence fit sees, and the predicted stopping point."""
from __future__ import annotations

import pytest

from executor.rank_main import evaluation_due
from validation.tta import TTA_DEFAULTS, crossing_records, measure_tta, stopping_epoch


def due(ipe: int, every: float, n: int) -> list[int]:
    return [it for it in range(1, n + 1) if evaluation_due(it, ipe, every)]


def test_evaluation_schedule():
    assert due(10, 1.0, 30) == [10, 20, 30]                 # epoch ends
    assert due(10, 2.0, 45) == [20, 40]                     # every other epoch
    assert due(10, 0.25, 20) == [3, 5, 8, 10, 13, 15, 18, 20]   # 2.5 iterations apart: crossings of 2.5 k
    assert due(8, 0.25, 16) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert due(3, 0.25, 4) == [1, 2, 3, 4]                  # less than an iteration apart: every iteration
    # every epoch end is an evaluation whatever the fraction that divides an epoch
    for ipe in (7, 10, 22, 45):
        for every in (0.25, 0.5, 1.0):
            assert all(evaluation_due(k * ipe, ipe, every) for k in range(1, 5))


def test_stopping_epoch_rounds_up_to_an_evaluation():
    assert stopping_epoch(2.1, 0.25) == pytest.approx(2.25)
    assert stopping_epoch(2.25, 0.25) == pytest.approx(2.25)     # exactly at an evaluation: stops there
    assert stopping_epoch(0.1, 0.25) == pytest.approx(0.25)      # at least one evaluation
    assert stopping_epoch(2.1, 1.0) == 3


def test_crossing_records_interpolate_the_running_maximum():
    run = {"batch": 64, "evaluations": [{"epoch": 0.5, "top1": 70.0}, {"epoch": 1.0, "top1": 90.0},
                                        {"epoch": 1.5, "top1": 85.0}, {"epoch": 2.0, "top1": 96.0}]}
    recs = {r.top1: r.epochs for r in crossing_records(run, target=95.0, span=15.0, step=5.0)}
    # 80: half way from 70 (0.5) to 90 (1.0); 85 and 90: the running maximum is 90 at 1.0 and stays 90 at
    # 1.5, so 95 is crossed between 1.5 (90) and 2.0 (96)
    assert recs[80.0] == pytest.approx(0.75) and recs[90.0] == pytest.approx(1.0)
    assert recs[95.0] == pytest.approx(1.5 + 0.5 * 5 / 6)
    assert all(r.batch == 64 for r in crossing_records(run, 95.0))


@pytest.mark.slow
def test_a_real_run_stops_at_the_first_evaluation_at_the_target():
    opts = {**TTA_DEFAULTS, "target_top1": 60.0, "max_epochs": 4, "eval_every_epochs": 0.25}
    m = measure_tta(64, opts, system="local", timeout_s=300)
    ev = m["evaluations"]
    ipe = m["iterations_per_epoch"]
    assert m["reached"] and ev[-1]["top1"] >= 60.0 and all(e["top1"] < 60.0 for e in ev[:-1])
    assert m["epochs_to_target"] == pytest.approx(ev[-1]["iteration"] / ipe)
    assert m["time_to_accuracy_s"] == ev[-1]["wall_s"] > 0
    its = [e["iteration"] for e in ev]
    assert its == due(ipe, 0.25, its[-1])                 # a quarter epoch apart, as scheduled
    # an unreachable target within half an epoch stops at max_epochs, not reached
    m2 = measure_tta(64, {**opts, "target_top1": 99.99, "max_epochs": 0.5}, system="local", timeout_s=300)
    assert not m2["reached"] and m2["time_to_accuracy_s"] is None
    assert m2["evaluations"][-1]["epoch"] == pytest.approx(0.5, abs=1.0 / m2["iterations_per_epoch"])
