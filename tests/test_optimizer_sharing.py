"""The optimizer step when several ranks share one host: its memory-traffic scale measured with k ranks
stepping at once (executor.calibrate.fit_optimizer_sharing), carried by the calibrated spec
(``[calibration.optimizer_traffic]``, hardware.specs.Calibration.optimizer_traffic_for), copied into an
emulated cluster's spec at ``k * H -> k``, and used by the predictor for the optimizer at that sharing
(perfmodel.predict._optimizer_bw_Bps).

Known answer: rows generated from the cost model itself with a traffic scale ``s`` and a launch cost ``L``
give back exactly ``s``."""
from __future__ import annotations

import pytest

import executor.calibrate as cal
from hardware.catalog import load_system
from hardware.errors import SpecError
from perfmodel.config import load_config
from perfmodel.optimizers import optimizer_cost
from perfmodel.predict import predict
from perfmodel.workload import load_workload

PEAK, BW, LAUNCH = 2e11, 3e10, 20e-6


def _step_s(model: str, opt: str, k: int, scale: float) -> float:
    table = load_workload(model)

    def cost(launch: float) -> float:
        return optimizer_cost(opt, table, per_device_batch=2, ranks=1, peak_flops=PEAK / k, efficiency=0.5,
                              mem_bw_Bps=BW / k, comm=lambda *a: 0.0, options={"launch_overhead_s": launch}).total_s
    return scale * cost(0.0) + (cost(1.0) - cost(0.0)) * LAUNCH


def test_the_fit_recovers_a_known_scale_per_share():
    rows = {2: [{"model": m, "optimizer": o, "step_s": _step_s(m, o, 2, 1.4)}
                for m in ("alexnet", "resnet20", "tiny") for o in ("sgd", "lars")],
            4: [{"model": "alexnet", "optimizer": "sgd", "step_s": _step_s("alexnet", "sgd", 4, 0.8)}]}
    fit = cal.fit_optimizer_sharing(rows, LAUNCH, PEAK, BW)
    assert fit["scale"] == pytest.approx({2: 1.4, 4: 0.8})
    assert all(abs(r["rel_err"]) < 1e-9 for r in fit["rows"])
    bound = {(r["model"], r["optimizer"]): r["memory_bound"] for r in fit["rows"] if r["share"] == 2}
    assert bound[("alexnet", "sgd")] and not bound[("tiny", "sgd")]   # 244 MB of parameters vs 6 kB


def test_launch_bound_rows_and_one_rank_give_no_scale():
    rows = {1: [{"model": "alexnet", "optimizer": "sgd", "step_s": _step_s("alexnet", "sgd", 1, 2.0)}],
            2: [{"model": "tiny", "optimizer": o, "step_s": _step_s("tiny", o, 2, 3.0)} for o in ("sgd", "lars")],
            4: []}
    assert cal.fit_optimizer_sharing(rows, LAUNCH, PEAK, BW) == {"scale": {}, "rows": []}


def _spec(tmp_path, name: str, traffic: dict | None):
    from test_bench_calibrate import fake_report   # tests/ is on sys.path

    rep = fake_report()
    if traffic is not None:
        rep["overheads"]["optimizer_sharing"] = {"scale": traffic, "rows": []}
    path, _ = cal.write_spec(rep, tmp_path / name / "local.toml")
    return path


def _optimizer_s(path, ranks: int, model: str = "alexnet") -> float:
    cfg = load_config(model=model, batch=8 * ranks, optimizer="sgd", epochs=1, system=str(path), nodes=1,
                      ranks_per_node=ranks)
    return predict(cfg).breakdown["optimizer_s"]


def test_the_spec_carries_the_scale_and_the_predictor_uses_it_at_that_sharing(tmp_path):
    plain = _spec(tmp_path, "plain", None)
    shared = _spec(tmp_path, "shared", {2: 0.75})
    c = load_system(shared).calibration
    assert dict(c.optimizer_traffic) == pytest.approx({2: 0.75})
    assert c.optimizer_traffic_for(2) == pytest.approx(0.75)
    assert c.optimizer_traffic_for(4) is None and c.optimizer_traffic_for(1.5) is None
    assert load_system(plain).calibration.optimizer_traffic_for(2) is None
    assert "[calibration.optimizer_traffic]" in shared.read_text()
    assert "stepping at once" in load_system(shared).sources["calibration.optimizer_traffic.ranks_2"]
    # one rank and four ranks: the one-rank scale (1.5) as before
    for ranks in (1, 4):
        assert _optimizer_s(shared, ranks) == pytest.approx(_optimizer_s(plain, ranks), rel=1e-12)
    # two ranks: AlexNet's SGD step is memory-bound, so its time scales with the traffic: 0.75 / 1.5 of it,
    # less the launch costs that do not scale
    a, b = _optimizer_s(plain, 2), _optimizer_s(shared, 2)
    assert 0.5 * a < b < 0.52 * a


def test_a_non_positive_scale_is_a_one_line_spec_error(tmp_path):
    path = _spec(tmp_path, "bad", {2: 0.75})
    path.write_text(path.read_text().replace("ranks_2 = 0.75", "ranks_2 = 0.0", 1))
    with pytest.raises(SpecError, match=r"field 'calibration.optimizer_traffic.ranks_2' = 0.0: must be > 0"):
        load_system(path)


def test_the_emulated_spec_carries_the_scale_of_k_times_h_ranks(tmp_path, monkeypatch):
    from executor.cluster.plan import ClusterConfig
    from executor.cluster.spec import write_spec

    base = _spec(tmp_path, "base", {2: 0.75, 4: 0.6})
    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path / "emu"))
    monkeypatch.setenv("TTT_CACHE_DIR", "")
    (tmp_path / "emu").mkdir()
    write_spec(tmp_path / "emu", ClusterConfig(hosts=2, link_gbps=1, latency_us=100), str(base))
    emu = load_system("emulated").calibration
    # 1 rank per host on 2 hosts = 2 ranks on this CPU; 2 per host = 4
    assert dict(emu.optimizer_traffic) == pytest.approx({1: 0.75, 2: 0.6})
