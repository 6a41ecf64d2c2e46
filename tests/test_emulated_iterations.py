"""validation.emulated.iterations_vs_predict's speed normalisation, with the real run replaced by a recorded
measurement: the run's probe statistic is the slowest rank's own typical probe (without per-rank samples the
typical of the per-iteration maximum, the calibration reference's statistic), never the median, and only the
prediction's CPU work is scaled."""
from __future__ import annotations

import pytest

import executor.launch
from hardware.errors import ConfigError
import validation.loop
from validation.emulated import iterations_vs_predict


def fake_measurement(ranks: int, iteration_s: float, probe: dict) -> dict:
    rec = [{"warmup": i == 0, "iteration_s": iteration_s} for i in range(4)]
    return {"records": [list(rec) for _ in range(ranks)], "iteration_s": iteration_s, "speed_probe": probe,
            "breakdown": {"compute_s": 0.1, "comm_exposed_s": 0.02, "comm_total_s": 0.03}}


@pytest.fixture
def recorded(monkeypatch):
    """launch returns a measurement whose probe median (30 ms) is twice its typical value (15 ms); the
    reference probe is 10 ms, so the factor must be 1.5 (the median would give 3.0)."""
    seen = []
    monkeypatch.setattr(executor.launch, "launch",
                        lambda cfg, ranks, **kw: fake_measurement(ranks, 0.25, {"median_s": 0.030, "typical_s": 0.015}))

    def factor(system, ranks, probe_s, model=None):
        seen.append(probe_s)
        return probe_s / 0.010

    monkeypatch.setattr(validation.loop, "speed_factor", factor)
    return seen


def test_factor_is_the_typical_probe_over_the_reference(recorded):
    (row,) = iterations_vs_predict("dgx1-v100", ranks=2, batches=(64,))
    assert recorded == [0.015]
    assert row["speed_factor"] == pytest.approx(1.5)
    assert row["speed_probe_s"] == 0.015 and row["speed_probe_median_s"] == 0.030


def test_only_cpu_work_is_scaled(recorded):
    from perfmodel.config import load_config
    from perfmodel.predict import predict

    (row,) = iterations_vs_predict("dgx1-v100", ranks=2, batches=(64,))
    cfg = load_config(model="resnet20", batch=64, optimizer="sgd", allreduce="ring", bucket_bytes=25e6,
                      overlap=True, system="dgx1-v100", nodes=row["nodes"], ranks_per_node=row["ranks_per_node"],
                      iterations=10, warmup_iterations=3, epochs=1.0)
    pred = predict(cfg)
    bd = pred.breakdown
    cpu = sum(float(bd.get(k) or 0.0) for k in ("compute_s", "optimizer_s", "overhead_s", "sync_wait_s"))
    assert row["predicted_raw_s"] == pytest.approx(pred.iteration_s)
    assert row["predicted_s"] == pytest.approx(pred.iteration_s + 0.5 * cpu)
    assert cpu < pred.iteration_s     # the network's part is left as predicted
    assert row["measured_s"] == pytest.approx(0.25)
    assert row["error_pct"] == pytest.approx(100 * (row["predicted_s"] - 0.25) / 0.25)


def test_kfac_is_measured_by_the_mean_over_whole_refresh_periods(monkeypatch):
    """K-FAC's refresh iterations are part of what the model prices per iteration, so its measured time is the
    mean of the slowest rank's iterations (SGD keeps the median); the options default to a refresh every 5
    iterations, and each rank's typical probe is kept."""
    times = [0.1, 0.1, 0.1, 0.1, 0.5] * 2
    seen = []

    def launch(cfg, ranks, **kw):
        seen.append((cfg.optimizer, dict(cfg.optimizer_options or {}), kw["iterations"]))
        recs = [[{"warmup": False, "iteration_s": t, "probe_s": 0.01 * (r + 1)} for t in times] for r in range(ranks)]
        return {"records": recs, "iteration_s": 0.18, "speed_probe": {"median_s": 0.02, "typical_s": 0.02},
                "breakdown": {"compute_s": 0.1, "comm_exposed_s": 0.02, "comm_total_s": 0.03, "optimizer_s": 0.05}}

    monkeypatch.setattr(executor.launch, "launch", launch)
    monkeypatch.setattr(validation.loop, "speed_factor", lambda *a, **k: None)
    (kf,) = iterations_vs_predict("dgx1-v100", ranks=2, batches=(64,), optimizer="kfac", iterations=10)
    (sgd,) = iterations_vs_predict("dgx1-v100", ranks=2, batches=(64,), optimizer="sgd", iterations=10)
    assert seen[0] == ("kfac", {"refresh_interval": 5}, 10) and seen[1][1] == {}
    assert kf["measured_s"] == pytest.approx(0.18) and kf["measured_median_s"] == pytest.approx(0.1)
    assert sgd["measured_s"] == pytest.approx(0.1)
    assert kf["optimizer"] == "kfac" and kf["measured_optimizer_s"] == pytest.approx(0.05)
    assert kf["predicted_optimizer_s"] > sgd["predicted_optimizer_s"] > 0
    assert kf["speed_probe_ranks_s"] == pytest.approx([0.01, 0.02])
    with pytest.raises(ConfigError, match="multiple of 5"):   # not whole refresh periods: refused, nothing run
        iterations_vs_predict("dgx1-v100", ranks=2, batches=(64,), optimizer="kfac", iterations=12)
    assert len(seen) == 2


def test_factor_is_the_calibrations_statistic_with_each_ranks_own_beside_it(monkeypatch):
    """The factor uses the calibration's statistic, the typical of the per-iteration slowest rank's probe
    (here 14 ms: each iteration one rank probes against the others), not the slowest rank's own typical,
    which the fast mode of 4 ranks on 2 cores pulls down (10 and 12 ms here); that one and each rank's own
    typical are kept beside it."""
    def launch(cfg, ranks, **kw):
        recs = [[{"warmup": i == 0, "iteration_s": 0.2,
                  "probe_s": 0.014 if i % ranks == r else 0.010 + 0.002 * r} for i in range(9)] for r in range(ranks)]
        return {"records": recs, "iteration_s": 0.2, "speed_probe": {"median_s": 0.014, "typical_s": 0.014},
                "breakdown": {"compute_s": 0.1, "comm_exposed_s": 0.02, "comm_total_s": 0.03}}

    seen = []
    monkeypatch.setattr(executor.launch, "launch", launch)
    monkeypatch.setattr(validation.loop, "speed_factor", lambda system, ranks, probe_s, model=None: seen.append(probe_s) or probe_s / 0.014)
    (row,) = iterations_vs_predict("dgx1-v100", ranks=2, batches=(64,))
    assert seen == [pytest.approx(0.014)]
    assert row["speed_factor"] == pytest.approx(1.0) and row["speed_probe_s"] == pytest.approx(0.014)
    assert row["speed_probe_iteration_max_s"] == pytest.approx(0.014)
    assert row["speed_probe_slowest_own_s"] == pytest.approx(0.012)
    assert row["speed_probe_ranks_s"] == pytest.approx([0.010, 0.012])
    assert row["predicted_s"] == pytest.approx(row["predicted_raw_s"])
