"""The wait for the slowest rank on a calibrated system (perfmodel.predict._sync_wait and the simulator's
calibrated jitter): the calibrated compute is already the slowest of the ranks that shared the device, so
a run on that one node adds no wait, and the simulator's slowest rank averages the calibrated compute."""
from __future__ import annotations

import numpy as np
import pytest

from executor import calibrate as cal
from hardware.catalog import load_system
from perfmodel.config import load_config
from perfmodel.predict import _sync_wait, measured_together, predict
from perfmodel.sim.variability import Variability
from perfmodel.simulate import simulate
from test_bench_calibrate import fake_report   # tests/ is on sys.path (rootdir-less test modules)

CV = {1: 0.1, 2: 0.1, 4: 0.2}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path, _ = cal.write_spec({**fake_report(), "jitter_cv": CV}, tmp_path_factory.mktemp("sync") / "local.toml")
    return path


def test_measured_together():
    assert measured_together(2.0, 2) == 2 and measured_together(4.0, 4) == 4
    assert measured_together(2.0, 8) == 2          # several nodes of two sharing ranks each
    assert measured_together(0.5, 4) == 1          # a rank with more than a device
    assert measured_together(4.0, 2) == 2          # never more than the ranks there are
    # an emulated cluster of 4 hosts on the calibrated machine: 1 rank per host was measured as 4 together
    assert measured_together(1.0, 4, nodes_per_machine=4) == 4
    assert measured_together(2.0, 16, nodes_per_machine=4) == 8 and measured_together(1.0, 2, 4) == 2


def test_no_wait_on_the_calibrated_node_and_the_known_extra_on_more(spec):
    s = load_system(spec)
    assert s.calibration.jitter_cv[4] == pytest.approx(0.2)
    one = _sync_wait(s, 2, 2.0, np.array([0.1]))
    assert one == pytest.approx([0.0], abs=1e-12)
    v = Variability("normal", 0.1)
    # 8 ranks, 2 per device: beyond the slowest of the 2 measured together
    eight = _sync_wait(s, 8, 2.0, np.array([0.1]))
    assert eight == pytest.approx([0.1 * (v.expected_max(8) / v.expected_max(2) - 1.0)], rel=1e-9)
    assert eight[0] > 0
    assert _sync_wait(s, 1, 1.0, np.array([0.1])) is None


def test_prediction_on_one_node_has_no_sync_wait(spec):
    p = predict(load_config(model="resnet20", batch=64, system=str(spec), nodes=1, ranks_per_node=2, epochs=1.0))
    assert p.breakdown["sync_wait_s"] == pytest.approx(0.0, abs=1e-12)


def test_simulated_slowest_rank_averages_the_calibrated_compute(spec):
    cfg = load_config(model="resnet20", batch=128, system=str(spec), nodes=1, ranks_per_node=4, epochs=1.0)
    p = predict(cfg)
    res = simulate(cfg, seed=1, iterations=600, prediction=p)
    d = res.to_dict()["breakdown"]
    compute_sim = d["forward_s"] + d["backward_s"]
    compute_pred = p.breakdown["forward_s"] + p.breakdown["backward_s"]
    # 600 draws of the max of 4 at CV 0.2: the mean is within about 1 % of its expectation
    assert compute_sim == pytest.approx(compute_pred, rel=0.03)
    assert d["sync_wait_s"] > 0                         # the ranks still differ within each step
    # a jitter given by hand is taken as it is: the slowest of 4 is slower than the nominal compute
    hand = simulate(cfg, seed=1, iterations=600, prediction=p, jitter=Variability("normal", 0.2)).to_dict()
    assert hand["breakdown"]["forward_s"] + hand["breakdown"]["backward_s"] > 1.15 * compute_pred
