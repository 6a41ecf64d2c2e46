"""The backward time an overlapped bucket collective takes on a CPU host: fitted from a pair of loop-reference
runs with large and small buckets (executor.calibrate.fit_overlap_collective), carried by the calibrated spec
(hardware.specs.Calibration.overlap_collective_for) and added by the predictor once per bucket launched while
backward runs (perfmodel.predict.iteration_model)."""
from __future__ import annotations

import json

import pytest

import executor.calibrate as cal
from hardware.catalog import load_system
from hardware.errors import SpecError
from perfmodel.config import load_config
from perfmodel.predict import predict
from perfmodel.simulate import simulate
from test_loop_compute import _doc   # tests/ is on sys.path


def _run(ranks: int, compute_s: float, probe_s: float | None, buckets: int) -> dict:
    return {"model": "resnet20", "batch": 8, "ranks": ranks, "iterations": 20, "compute_s": compute_s,
            "iteration_s": compute_s * 1.1, "speed_probe_s": probe_s, "buckets": buckets,
            "bucket_mb": 25.0 if buckets == 1 else 0.25}


def _session(k: int, large: dict, small: dict | None, probe_ref: float = 8e-3) -> dict:
    s = {"plan": "full", "compute": {k: [_doc(0.05, probe_ref)]}, "allreduce": {}, "loop": {k: large}}
    if small is not None:
        s["loop_overlap"] = {k: small}
    return s


def test_cost_by_known_answer_with_speed_normalisation():
    # the large-bucket run at the benchmark's host speed; the small-bucket run with 4 buckets (3 launched
    # during backward, 3 more than the large run's 0) took 30 ms more work while the host ran 1.25 x slower
    large = _run(4, 0.30, 8e-3, 1)
    small = _run(4, (0.30 + 0.030) * 1.25, 10e-3, 4)
    fit = cal.fit_overlap_collective([_session(4, large, small)])
    assert fit["seconds"][4] == pytest.approx(0.010)
    row = fit["rows"][0]
    assert (row["ranks"], row["large_buckets"], row["small_buckets"]) == (4, 1, 4)
    # without probes nothing is normalised
    fit = cal.fit_overlap_collective([_session(4, _run(4, 0.30, None, 1), _run(4, 0.33, None, 4))])
    assert fit["seconds"][4] == pytest.approx(0.010)


def test_median_over_sessions_and_never_negative():
    def s(extra_s):
        return _session(2, _run(2, 0.2, None, 1), _run(2, 0.2 + 3 * extra_s, None, 4))

    assert cal.fit_overlap_collective([s(0.001), s(0.009), s(0.002)])["seconds"][2] == pytest.approx(0.002)
    # faster with small buckets (the host's noise): no cost, not a negative one
    assert cal.fit_overlap_collective([s(-0.002)])["seconds"][2] == 0.0


def test_no_pair_no_cost():
    assert cal.fit_overlap_collective([_session(2, _run(2, 0.2, None, 1), None)]) == {"seconds": {}, "rows": []}
    # a small-bucket run without more buckets than the large one measures nothing
    same = _session(2, _run(2, 0.2, None, 1), _run(2, 0.25, None, 1))
    assert cal.fit_overlap_collective([same]) == {"seconds": {}, "rows": []}


def test_raw_sessions_keep_the_overlap_runs_with_integer_rank_keys():
    raw = {"plan": "full", "compute": {"2": [{}]}, "allreduce": {}, "loop_overlap": {"2": _run(2, 0.2, None, 4)}}
    n = cal.normalise_raw(json.loads(json.dumps(raw)))
    assert set(n["loop_overlap"]) == {2} and n["loop_overlap"][2]["buckets"] == 4


def test_the_full_plan_measures_it_with_several_buckets_and_the_quick_plan_does_not(tmp_path):
    """The full plan's small-bucket reference splits the reference model's gradients into several buckets
    (a pair with one bucket each would measure nothing); the quick plan skips it for its time budget."""
    model, per_rank = cal.FULL.loop_reference
    path = _spec(tmp_path, "plain", None)

    def buckets(mb):
        return predict(load_config(model=model, batch=2 * per_rank, optimizer="sgd", epochs=1, system=str(path),
                                   nodes=1, ranks_per_node=2, bucket_bytes=mb * 1e6)).details["buckets"]

    assert buckets(25.0) == 1 and buckets(cal.FULL.overlap_reference_bucket_mb) >= 3
    assert cal.QUICK.overlap_reference_bucket_mb is None


def _spec(tmp_path, name: str, seconds: dict | None):
    from test_bench_calibrate import fake_report

    rep = fake_report()
    if seconds is not None:
        rep["overlap_collective"] = {"seconds": seconds, "rows": []}
    path, _ = cal.write_spec(rep, tmp_path / name / "local.toml")
    return path


def _cfg(path, ranks: int, bucket_mb: float, overlap: bool = True):
    return load_config(model="resnet20", batch=32 * ranks, optimizer="sgd", epochs=1, system=str(path), nodes=1,
                       ranks_per_node=ranks, bucket_bytes=bucket_mb * 1e6, overlap=overlap)


def test_the_predictor_adds_the_cost_per_bucket_launched_during_backward(tmp_path):
    plain, costed = _spec(tmp_path, "plain", None), _spec(tmp_path, "costed", {2: 0.004})
    c = load_system(costed).calibration
    assert dict(c.overlap_collective_s) == pytest.approx({2: 0.004})
    assert c.overlap_collective_for(2) == pytest.approx(0.004) and c.overlap_collective_for(4) == 0.0
    assert c.overlap_collective_for(1.5) == 0.0 and load_system(plain).calibration.overlap_collective_for(2) == 0.0
    assert "[calibration.overlap_collective_ms]\nranks_2 = 4" in costed.read_text()

    a, b = predict(_cfg(plain, 2, 0.25)), predict(_cfg(costed, 2, 0.25))
    n = b.details["buckets"]
    assert n > 1
    ba, bb = a.to_dict()["breakdown"], b.to_dict()["breakdown"]
    assert bb["backward_s"] - ba["backward_s"] == pytest.approx(0.004 * (n - 1), rel=1e-9)
    assert bb["forward_s"] == pytest.approx(ba["forward_s"], rel=1e-12)
    assert bb["optimizer_s"] == pytest.approx(ba["optimizer_s"], rel=1e-12)
    # the simulation sees the same longer backward
    sa, sb = simulate(_cfg(plain, 2, 0.25), seed=0, iterations=20), simulate(_cfg(costed, 2, 0.25), seed=0, iterations=20)
    assert sb.breakdown["backward_s"] - sa.breakdown["backward_s"] == pytest.approx(0.004 * (n - 1), rel=1e-6)
    # overlap off, one bucket, or a sharing without a measurement: nothing added
    for cfg_a, cfg_b in ((_cfg(plain, 2, 0.25, overlap=False), _cfg(costed, 2, 0.25, overlap=False)),
                         (_cfg(plain, 2, 25.0), _cfg(costed, 2, 25.0)),
                         (_cfg(plain, 4, 0.25), _cfg(costed, 4, 0.25))):
        assert predict(cfg_b).iteration_s == pytest.approx(predict(cfg_a).iteration_s, rel=1e-12)


def test_a_negative_cost_is_one_line_spec_error(tmp_path):
    path = _spec(tmp_path, "bad", {2: 0.004})
    path.write_text(path.read_text().replace("[calibration.overlap_collective_ms]\nranks_2 = 4",
                                             "[calibration.overlap_collective_ms]\nranks_2 = -4"))
    with pytest.raises(SpecError, match=r"field 'calibration.overlap_collective_ms.ranks_2' = -4.0: must be >= 0"):
        load_system(path)
