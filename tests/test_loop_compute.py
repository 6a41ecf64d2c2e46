"""The executor-loop compute factor: a real run of a reference workload against the benchmark of the same
(model, batch) in the same calibration session (executor.calibrate.fit_loop_compute), carried by the
calibrated spec (hardware.specs.Calibration.loop_compute_for) and applied by the predictor to every compute
time at that sharing (perfmodel.predict.iteration_model)."""
from __future__ import annotations

import json
import math

import pytest

import executor.calibrate as cal
from hardware.catalog import load_system
from hardware.errors import ConfigError, SpecError
from perfmodel.config import load_config
from perfmodel.predict import predict

BFIT = {"bucketer_s": 200e-6, "grad_hook_s": 10e-6,
        "rows": [{"model": "resnet20", "grad_layers": 40, "param_bytes": 1_000_000}]}
MEM_BW = 2e10


def _doc(step_s: float, probe_s: float, batch: int = 8, other_probe_s: float | None = None) -> dict:
    """A minimal ``bench compute`` document: ResNet-20 at ``batch`` (and at 16, with its own probe)."""
    rows = [{"model": "resnet20", "batch": batch, "forward_s": step_s / 3, "backward_s": 2 * step_s / 3,
             "step_s": step_s, "probe_s": probe_s},
            {"model": "resnet20", "batch": 16, "forward_s": 1.0, "backward_s": 2.0, "step_s": 3.0,
             "probe_s": other_probe_s or probe_s}]
    return {"gemm": {"flops": 1e11}, "gemm_fp64": {"flops": 5e10}, "memory": {"triad_Bps": MEM_BW, "copy_Bps": MEM_BW},
            "reduce": {"gamma_s_per_B": 1e-10}, "models": rows, "optimizers": [], "bucketer": [], "layers": []}


def _session(loop: dict[int, dict], docs: dict[int, list[dict]]) -> dict:
    return {"plan": "quick", "compute": docs, "allreduce": {}, "loop": loop}


def _run(ranks: int, compute_s: float, probe_s: float | None) -> dict:
    return {"model": "resnet20", "batch": 8, "ranks": ranks, "iterations": 20, "compute_s": compute_s,
            "iteration_s": compute_s * 1.3, "speed_probe_s": probe_s}


def test_hook_overhead_is_what_the_predictor_books_apart():
    assert cal.loop_hook_overhead_s(BFIT, "resnet20", 1, MEM_BW) == 0.0   # one rank: no bucketer
    # fixed + layers x per-layer + 6 bytes per gradient byte at the rank's share of the bandwidth
    want = 200e-6 + 40 * 10e-6 + 6 * 1_000_000 / (MEM_BW / 2)
    assert cal.loop_hook_overhead_s(BFIT, "resnet20", 2, MEM_BW) == pytest.approx(want)
    assert cal.loop_hook_overhead_s(BFIT, "alexnet", 2, MEM_BW) == pytest.approx(200e-6)  # unknown model: fixed


def test_factor_by_known_answer_with_speed_normalisation_and_hooks():
    hooks2 = cal.loop_hook_overhead_s(BFIT, "resnet20", 2, MEM_BW)
    # session 1: 1 rank computes 1.1 x the benchmark at the same host speed; 2 ranks 1.2 x after the hooks,
    # while the host ran 1.25 x slower (probe 10 ms against the model's median reference 8 ms)
    s1 = _session({1: _run(1, 0.055, 5e-3), 2: _run(2, 0.06 * 1.2 * 1.25 + hooks2, 10e-3)},
                  {1: [_doc(0.05, 5e-3)], 2: [_doc(0.06, 7e-3, other_probe_s=9e-3)]})
    # session 2: the benchmark's rounds merge to the fastest (0.05), the run is 1.3 x; no probe: no normalising
    s2 = _session({2: _run(2, 0.05 * 1.3 + hooks2, None)}, {2: [_doc(0.07, 7e-3), _doc(0.05, 8e-3)]})
    fit = cal.fit_loop_compute([s1, s2], BFIT, MEM_BW)
    assert fit["scale"][1] == pytest.approx(1.1)
    assert fit["scale"][2] == pytest.approx(math.sqrt(1.2 * 1.3))   # two sessions: their geometric mean
    rows = {(r["session"], r["ranks"]): r for r in fit["rows"]}
    assert rows[(1, 2)]["speed_factor"] == pytest.approx(1.25) and rows[(2, 2)]["speed_factor"] == 1.0
    assert rows[(1, 2)]["hooks_s"] == pytest.approx(hooks2) and rows[(1, 1)]["hooks_s"] == 0.0
    # sessions without a loop reference give no factor
    assert cal.fit_loop_compute([{**s1, "loop": {}}], BFIT, MEM_BW) == {"scale": {}, "rows": []}


def test_one_outlying_session_does_not_move_the_factor():
    # three sessions at 1.03, 1.07 and 1.60 (a slow stretch the probe did not see): the median, 1.07
    sessions = [_session({2: _run(2, 0.05 * r + cal.loop_hook_overhead_s(BFIT, "resnet20", 2, MEM_BW), None)},
                         {2: [_doc(0.05, 7e-3)]}) for r in (1.03, 1.60, 1.07)]
    assert cal.fit_loop_compute(sessions, BFIT, MEM_BW)["scale"][2] == pytest.approx(1.07)


def test_the_step_tail_is_taken_out_of_the_loop_factor():
    """The run's compute is a mean, the benchmark's a typical time: with a step tail t at k ranks the factor
    is the ratio over t (the predictor applies the tail apart, so it is not counted twice)."""
    s = _session({1: _run(1, 0.05 * 1.1 * 1.05, 5e-3)}, {1: [_doc(0.05, 5e-3)]})
    assert cal.fit_loop_compute([s], BFIT, MEM_BW, {1: 1.05})["scale"][1] == pytest.approx(1.1)
    assert cal.fit_loop_compute([s], BFIT, MEM_BW, {2: 1.05})["scale"][1] == pytest.approx(1.1 * 1.05)


def test_step_tail_by_known_answer():
    def pt(share, step, median, n=7):
        return {"share": share, "step_s": step, "spread_step_s": {"min": step * 0.9, "median": median,
                                                                  "max": median * 2, "n": n}}
    points = [pt(1, 1.0, 1.04), pt(1, 2.0, 2.12), pt(1, 1.0, 1.05),   # median of 1.04, 1.06, 1.05
              pt(2, 1.0, 0.98),                                       # never below 1
              pt(4, 1.0, 1.5, n=2)]                                   # too few repetitions: no estimate
    assert cal.compute_step_tail(points) == pytest.approx({1: 1.05, 2: 1.0})


def test_a_reference_without_its_benchmark_row_is_a_clear_error():
    s = _session({1: {**_run(1, 0.05, 5e-3), "batch": 4}}, {1: [_doc(0.05, 5e-3)]})
    with pytest.raises(ConfigError, match="loop reference.*resnet20:4"):
        cal.fit_loop_compute([s], BFIT, MEM_BW)


def test_a_plan_whose_reference_is_not_benchmarked_fails_before_the_loop_runs(monkeypatch):
    monkeypatch.setattr(cal, "run_benchmark", lambda *a, **k: {"models": []})
    monkeypatch.setattr(cal, "measure_loop_reference", lambda *a, **k: pytest.fail("ran"))
    plan = cal.CalibrationPlan(name="t", compute_ranks=(1,), model_batches={"resnet20": (16,)}, allreduce_ranks=(),
                               compute_rounds=1, kfac=None, loop_reference=("resnet20", 8))
    with pytest.raises(ConfigError, match="loop_reference"):
        cal.measure_calibration(plan)


def test_raw_sessions_keep_the_loop_runs_with_integer_rank_keys():
    raw = {"plan": "quick", "compute": {"1": [{}]}, "allreduce": {}, "loop": {"1": _run(1, 0.05, 5e-3)}}
    n = cal.normalise_raw(json.loads(json.dumps(raw)))
    assert set(n["loop"]) == {1} and n["loop"][1]["compute_s"] == 0.05
    assert "loop" not in cal.normalise_raw({"compute": {}, "allreduce": {}})


def _spec(tmp_path, name: str, loop_scale: dict | None, tail: dict | None = None, jitter: dict | None = None):
    from test_bench_calibrate import fake_report   # tests/ is on sys.path

    rep = fake_report()
    if jitter is not None:
        rep["jitter_cv"] = jitter
    if loop_scale is not None:
        rep["loop_compute"] = {"scale": loop_scale, "rows": []}
    if tail is not None:
        rep["step_tail"] = tail
    path, _ = cal.write_spec(rep, tmp_path / name / "local.toml")
    return path


def test_spec_carries_the_factor_and_the_predictor_scales_compute_by_it(tmp_path):
    plain = _spec(tmp_path, "plain", None)
    looped = _spec(tmp_path, "looped", {1: 1.05, 2: 1.2})
    c = load_system(looped).calibration
    assert dict(c.loop_compute_scale) == pytest.approx({1: 1.05, 2: 1.2})
    # exactly the measured sharing; 1 elsewhere (not extrapolated), and 1 without a measurement
    assert c.loop_compute_for(2) == pytest.approx(1.2) and c.loop_compute_for(4) == 1.0
    assert c.loop_compute_for(1.5) == 1.0 and load_system(plain).calibration.loop_compute_for(2) == 1.0
    assert "loop_compute" in (looped.read_text())   # with its source line

    def pred(path, ranks):
        return predict(load_config(model="resnet20", batch=16 * ranks, optimizer="sgd", epochs=1, system=str(path),
                                   nodes=1, ranks_per_node=ranks)).to_dict()["breakdown"]

    for ranks, f in ((1, 1.05), (2, 1.2)):
        a, b = pred(plain, ranks), pred(looped, ranks)
        assert b["forward_s"] == pytest.approx(f * a["forward_s"], rel=1e-9)
        assert b["backward_s"] == pytest.approx(f * a["backward_s"], rel=1e-9)
        assert b["optimizer_s"] == pytest.approx(a["optimizer_s"], rel=1e-9)   # only compute changes


def test_the_step_tail_scales_compute_and_optimizer(tmp_path):
    plain = _spec(tmp_path, "plain", None)
    tailed = _spec(tmp_path, "tailed", {2: 1.1}, tail={1: 1.04, 2: 1.05})
    c = load_system(tailed).calibration
    assert dict(c.step_tail) == pytest.approx({1: 1.04, 2: 1.05}) and c.step_tail_for(4) == 1.0
    assert load_system(plain).calibration.step_tail_for(2) == 1.0

    def pred(path, ranks):
        return predict(load_config(model="resnet20", batch=16 * ranks, optimizer="sgd", epochs=1, system=str(path),
                                   nodes=1, ranks_per_node=ranks)).to_dict()["breakdown"]

    for ranks, comp, opt in ((1, 1.04, 1.04), (2, 1.1 * 1.05, 1.05)):
        a, b = pred(plain, ranks), pred(tailed, ranks)
        assert b["compute_s"] == pytest.approx(comp * a["compute_s"], rel=1e-9)
        assert b["optimizer_s"] == pytest.approx(opt * a["optimizer_s"], rel=1e-9)
        assert b["comm_total_s"] == pytest.approx(a["comm_total_s"], rel=1e-9)   # measured collectives: as they are
    path = _spec(tmp_path, "low", None, tail={1: 1.0})
    table = "[calibration.step_tail]\nranks_1 = 1.0"
    assert table in path.read_text()
    path.write_text(path.read_text().replace(table, "[calibration.step_tail]\nranks_1 = 0.9"))
    with pytest.raises(SpecError, match=r"field 'calibration.step_tail.ranks_1' = 0.9: must be >= 1"):
        load_system(path)


def test_a_factor_out_of_range_is_one_line_spec_error(tmp_path):
    path = _spec(tmp_path, "bad", {2: 1.2})
    path.write_text(path.read_text().replace("ranks_2 = 1.2", "ranks_2 = -1.0", 1))
    with pytest.raises(SpecError, match=r"field 'calibration.loop_compute.ranks_2' = -1.0: must be > 0"):
        load_system(path)


def test_the_full_plans_loop_reference_is_at_the_matrixs_operating_points():
    """The loop factor is measured where the full matrix runs: the reference model's per-rank batch lies
    within the per-rank batches the matrix runs that model at, at every rank count, and is benchmarked."""
    from validation.matrix import full_matrix

    model, per_rank = cal.FULL.loop_reference
    assert per_rank in cal.FULL.model_batches[model]
    for k in cal.FULL.compute_ranks:
        at_k = [p.batch // p.ranks for p in full_matrix() if p.model == model and p.ranks == k]
        assert at_k and min(at_k) <= per_rank <= max(at_k), (k, at_k)
    assert cal.QUICK.loop_reference[1] in cal.QUICK.model_batches[cal.QUICK.loop_reference[0]]


def test_the_emulated_cluster_spec_carries_the_loop_factors_at_ranks_times_hosts(tmp_path, monkeypatch):
    """executor.cluster.spec: H emulated hosts with k ranks each are k * H ranks on this machine's CPU, so
    the emulated spec's in-loop compute factor, step tail and jitter at k are the base's at k * H (a value
    at a rank count that is not a multiple of H has no host equivalent and is left out)."""
    from executor.cluster.plan import ClusterConfig
    from executor.cluster.spec import write_spec

    base = _spec(tmp_path, "base", {1: 1.05, 2: 1.2, 3: 1.3, 4: 1.1}, tail={1: 1.04, 2: 1.07, 4: 1.06},
                 jitter={1: 0.15, 2: 0.11, 4: 0.1})
    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path / "systems"))
    monkeypatch.setenv("TTT_LOCAL_SPEC", str(base))
    write_spec(tmp_path / "systems", ClusterConfig(hosts=2, link_gbps=1, latency_us=100), "local",
               measured={"rate_Bps": 0.9e9 / 8, "latency_s": 300e-6, "hosts": [0, 1], "pings": 10})
    b, e = load_system(base).calibration, load_system("emulated").calibration
    assert dict(e.loop_compute_scale) == pytest.approx({1: 1.2, 2: 1.1})
    assert dict(e.step_tail) == pytest.approx({1: 1.07, 2: 1.06})
    assert dict(e.jitter_cv) == pytest.approx({1: 0.11, 2: 0.1}) and dict(b.jitter_cv)[1] == pytest.approx(0.15)
    assert "calibration.loop_compute.ranks_1" in (tmp_path / "systems" / "emulated.toml").read_text()

    def compute(system, ranks, nodes):
        return predict(load_config(model="resnet20", batch=32 * ranks, optimizer="sgd", epochs=1, system=system,
                                   nodes=nodes, ranks_per_node=ranks // nodes)).to_dict()["breakdown"]["compute_s"]

    # the same loop with one rank per emulated host is priced like two ranks sharing the base's CPU
    assert compute("emulated", 2, 2) == pytest.approx(compute(str(base), 2, 1), rel=1e-6)

    # and, like them, its compute is already the slowest of the two (jitter 0.11 at 2): no wait is added for
    # the slowest host, where two real nodes of one rank each would wait for the larger of two draws
    assert e.nodes_per_machine == 2 and b.nodes_per_machine == 1

    def wait(system, ranks, nodes):
        return predict(load_config(model="resnet20", batch=32 * ranks, optimizer="sgd", epochs=1, system=system,
                                   nodes=nodes, ranks_per_node=ranks // nodes)).to_dict()["breakdown"]["sync_wait_s"]

    assert wait("emulated", 2, 2) == pytest.approx(0.0, abs=1e-12) == wait(str(base), 2, 1)

    # K-FAC: the base's 2-rank measurement (factor 0.2 s, exchange 0.03 s, inversion 0.015 s per refresh) is
    # the emulated one rank per host's; the exchange is not copied (shared memory, not this network)
    ek = e.kfac[1]
    assert set(e.kfac) == {1} and (ek.model, ek.per_rank_batch) == (b.kfac[2].model, b.kfac[2].per_rank_batch)
    assert (ek.factor_s, ek.exchange_s, ek.inversion_s) == pytest.approx((0.2, 0.0, 0.015))

    def kfac(system, nodes):
        cfg = load_config(model="resnet20", batch=32, optimizer="kfac", epochs=1, system=system, nodes=nodes,
                          ranks_per_node=2 // nodes, optimizer_options={"refresh_interval": 5})
        return predict(cfg).to_dict()["details"]["optimizer"]

    d, local = kfac("emulated", 2), kfac(str(base), 1)
    assert d["factor_compute_s_per_refresh"] + d["bn_fisher_s_per_refresh"] == pytest.approx(0.2)
    assert d["inversion_s_per_refresh"] == pytest.approx(0.015)
    assert local["exchange_s_per_refresh"] == pytest.approx(0.03)   # the base's own reference, scaled
    assert d["exchange_scale"] == 1.0 and local["exchange_scale"] != 1.0   # emulated: the network model's own
