"""Calibration sessions: several measurements of this host, apart in time, merged into one fit
(executor.calibrate.combine_sessions / fit_calibration, validation.run.SessionCalibration), and the loop
that measures first and predicts after the last run (validation.loop.run_matrix)."""
from __future__ import annotations

import json
import math

import pytest

import validation.loop as loop
from executor.calibrate import combine_sessions, normalise_raw
from hardware.errors import ConfigError
from perfmodel.cli.main import main
from validation.matrix import Point
from validation.run import SessionCalibration, session_starts


def test_floats_merge_by_the_geometric_mean_and_names_stay():
    a = {"model": "resnet20", "batch": 8, "step_s": 1.0, "probe_s": 0.01, "flag": True}
    b = {"model": "resnet20", "batch": 8, "step_s": 4.0, "probe_s": 0.04, "flag": False}
    m = combine_sessions([a, b])
    assert m["step_s"] == pytest.approx(2.0) and m["probe_s"] == pytest.approx(0.02)
    assert (m["model"], m["batch"], m["flag"]) == ("resnet20", 8, True)
    # the ratio of two times (a step over its probe) is the geometric mean of the sessions' ratios
    c = {**a, "step_s": 3.0, "probe_s": 0.02}
    m3 = combine_sessions([a, b, c])
    ratios = [r["step_s"] / r["probe_s"] for r in (a, b, c)]
    assert m3["step_s"] / m3["probe_s"] == pytest.approx(math.prod(ratios) ** (1 / 3))
    # a zero or negative value cannot take a geometric mean: the arithmetic mean
    assert combine_sessions([0.0, 2.0]) == pytest.approx(1.0)


def test_rows_are_matched_by_their_names_not_their_order():
    s1 = [{"algorithm": "ring", "ranks": 2, "nbytes": 1024, "time_s": 1e-4},
          {"algorithm": "ring", "ranks": 2, "nbytes": 4096, "time_s": 4e-4}]
    s2 = [{"algorithm": "ring", "ranks": 2, "nbytes": 4096, "time_s": 9e-4},
          {"algorithm": "ring", "ranks": 2, "nbytes": 1024, "time_s": 1e-4},
          {"algorithm": "mpi", "ranks": 2, "nbytes": 1024, "time_s": 5e-5}]   # only in the second session
    m = {(r["algorithm"], r["nbytes"]): r["time_s"] for r in combine_sessions([s1, s2])}
    assert m == pytest.approx({("ring", 1024): 1e-4, ("ring", 4096): 6e-4, ("mpi", 1024): 5e-5})
    # nested documents: dicts key by key, equal-length number lists item by item
    doc = combine_sessions([{"gemm": {"flops": 1e9, "n": 512}, "v": [1.0, 9.0]},
                            {"gemm": {"flops": 4e9, "n": 512}, "v": [4.0, 1.0]}])
    assert doc == {"gemm": {"flops": pytest.approx(2e9), "n": 512}, "v": [pytest.approx(2.0), pytest.approx(3.0)]}


def test_one_session_is_itself():
    doc = {"models": [{"model": "tiny", "batch": 2, "step_s": 0.3}], "gemm": {"flops": 7.0}}
    assert combine_sessions([doc]) == doc


def test_a_raw_document_is_checked_and_its_rank_keys_restored():
    raw = {"plan": "quick", "compute": {"1": [{}], "2": [{}]}, "allreduce": {"2": {}}}
    n = normalise_raw(json.loads(json.dumps(raw)))
    assert set(n["compute"]) == {1, 2} and set(n["allreduce"]) == {2}
    with pytest.raises(ConfigError, match="calibration session"):
        normalise_raw({"compute": {}})
    with pytest.raises(ConfigError, match="nothing to merge"):
        combine_sessions([])


def test_session_starts_spread_over_the_matrix():
    assert session_starts(1, 1) == [0]
    assert session_starts(3, 3) == [0, 1, 2]
    assert session_starts(6, 3) == [0, 2, 4]


def test_none_values_and_repeated_names():
    assert combine_sessions([None, None]) is None
    assert combine_sessions([{"t": None}, {"t": 2.0}, {"t": 8.0}]) == {"t": pytest.approx(4.0)}
    # two rows with the same names in one session stay two rows, matched by their order
    rows = combine_sessions([[{"x": 1.0}, {"x": 4.0}], [{"x": 4.0}, {"x": 1.0}]])
    assert [r["x"] for r in rows] == [pytest.approx(2.0), pytest.approx(2.0)]


def test_earlier_sessions_of_another_plan_or_host_fail_before_measuring(monkeypatch):
    import executor.calibrate as cal

    monkeypatch.setattr(cal, "measure_calibration", lambda *a, **k: pytest.fail("measured"))
    raw = {"plan": "quick", "host": "elsewhere", "compute": {}, "allreduce": {}}
    with pytest.raises(ConfigError, match="earlier session plan"):
        cal.calibrate(cal.FULL, earlier=[raw])
    with pytest.raises(ConfigError, match="earlier session host"):
        cal.calibrate(cal.QUICK, earlier=[raw])


def test_merge_option_rejects_a_file_without_sessions(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"kind": "calibration"}))
    assert main(["calibrate", "--quick", "--out", str(tmp_path / "x.toml"), "--merge", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--merge" in err and "raw_sessions" in err and "\n" not in err
    assert not (tmp_path / "x.toml").exists()   # nothing measured or written


def _fake_calibration(monkeypatch, calls: list[str]):
    """measure_calibration, fit_calibration and write_spec replaced: a session is a date, a fit records
    which sessions it saw."""
    import executor.calibrate as cal

    measured = []

    def measure(plan, progress=None, timeout_s=900.0):
        calls.append("measure")
        measured.append(1)
        return {"plan": plan.name, "date": f"d{len(measured)}", "compute": {}, "allreduce": {}}

    def fit(plan, sessions, progress=None):
        calls.append("fit:" + ",".join(s["date"] for s in sessions))
        return {"sessions": len(sessions), "session_dates": [s["date"] for s in sessions], "raw_sessions": sessions}

    def write_spec(report, out):
        out.write_text("# fake\n")
        return out, out

    monkeypatch.setattr(cal, "measure_calibration", measure)
    monkeypatch.setattr(cal, "fit_calibration", fit)
    monkeypatch.setattr(cal, "write_spec", write_spec)
    monkeypatch.setattr("validation.run.reusable_calibration", lambda spec: None)


def test_sessions_are_stored_reused_and_fitted_together(tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_calibration(monkeypatch, calls)
    (tmp_path / "calibration").mkdir()
    cal = SessionCalibration(tmp_path, quick=False, say=lambda m: None, sessions=3)
    assert cal.ensure(1) == tmp_path / "calibration" / "local.toml"
    assert calls == ["measure", "fit:d1"]
    cal.ensure(1)                      # nothing new: neither measured nor fitted again
    assert calls == ["measure", "fit:d1"]
    cal.ensure(2)
    assert calls[2:] == ["measure", "fit:d1,d2"]
    report = json.loads((tmp_path / "calibration" / "report.json").read_text())
    assert report["session_dates"] == ["d1", "d2"] and "raw_sessions" not in report
    # a new object on the same folder (a resumed validation) measures only the missing third session
    calls.clear()
    again = SessionCalibration(tmp_path, quick=False, say=lambda m: None, sessions=3)
    again.ensure(3, before_pass=2)
    assert calls == ["measure", "fit:d1,d2,d3"]
    assert sorted(p.name for p in (tmp_path / "calibration").glob("session-*.json")) == \
        ["session-1.json", "session-2.json", "session-3.json"]
    # resumed once more from the start: the fit to all three sessions is kept, nothing is refitted
    calls.clear()
    for j in (1, 2, 3):
        again.ensure(j)
    assert calls == [] and again.fitted_dates() == ["d1", "d2", "d3"]
    assert again.measured_before() == [None, None, 2]
    # a spec whose report is missing (interrupted between the two writes) is fitted again
    (tmp_path / "calibration" / "report.json").unlink()
    again.ensure(1)
    assert calls == ["fit:d1"]


def _fake_runs(monkeypatch, events, times=None):
    """run_matrix with the runs and predictions replaced; ``times[(id, n)]`` = (iteration, probe) of the
    n-th run (1-based) of a point (default 0.1 s, 5 ms)."""
    count: dict[str, int] = {}

    def fake_run(point, system, timeout_s):
        count[point.id] = count.get(point.id, 0) + 1
        events.append("run " + point.id)
        it, probe = (times or {}).get((point.id, count[point.id]), (0.1, 0.005))
        return {"iteration_s": it, "speed_probe_s": probe, "iteration_times_s": [it, it], "run_wall_s": 1.0}

    def fake_compare(point, meas, system):
        events.append("predict " + point.id)
        return {"id": point.id, "measurement": meas}

    monkeypatch.setattr(loop, "_run_once", fake_run)
    monkeypatch.setattr(loop, "compare_point", fake_compare)
    monkeypatch.setattr(loop, "summary_of", lambda results: {"configs": len(results)})


def test_the_loop_measures_every_point_before_predicting_any(tmp_path, monkeypatch):
    events: list[str] = []
    _fake_runs(monkeypatch, events)
    points = [Point("resnet20", 1, 16 * k) for k in range(1, 5)]
    ids = [p.id for p in points]
    s = loop.run_matrix(points, tmp_path, before_pass=lambda r, n: events.append(f"before {r}/{n}"))
    assert s["configs"] == 4
    assert events == ["before 0/1"] + ["run " + i for i in ids] + ["predict " + i for i in ids]
    # resumed: nothing runs again, every point is predicted again (from the spec as it is now)
    events.clear()
    loop.run_matrix(points, tmp_path)
    assert events == ["predict " + i for i in ids]
    # an output folder from before measurements were stored apart: the measurement inside the record counts
    (tmp_path / "measured" / f"{ids[0]}.json").unlink()
    events.clear()
    loop.run_matrix(points, tmp_path)
    assert events == ["predict " + i for i in ids]


def test_repeats_are_passes_over_the_matrix_and_the_median_normalised_run_counts(tmp_path, monkeypatch):
    events: list[str] = []
    a, b = Point("resnet20", 1, 16), Point("resnet20", 1, 32)
    # a's runs: 100 ms at a 5 ms probe (speed-normalised 20), 150 ms at 6 ms (25), 90 ms at 4 ms (22.5): the
    # median normalised run is the third, the fastest raw one (the median raw time is run 1's). b's: 200 ms /
    # 5 ms (40), 300 ms / 5 ms (60), 260 ms / 5.2 ms (50): run 3.
    times = {(a.id, 1): (0.1, 0.005), (a.id, 2): (0.15, 0.006), (a.id, 3): (0.09, 0.004),
             (b.id, 1): (0.2, 0.005), (b.id, 2): (0.3, 0.005), (b.id, 3): (0.26, 0.0052)}
    _fake_runs(monkeypatch, events, times)
    s = loop.run_matrix([a, b], tmp_path, repeats=3, before_pass=lambda r, n: events.append(f"before {r}/{n}"))
    assert s["configs"] == 2
    assert events == ["before 0/3", "run " + a.id, "run " + b.id, "before 1/3", "run " + a.id, "run " + b.id,
                      "before 2/3", "run " + a.id, "run " + b.id, "predict " + a.id, "predict " + b.id]
    ma = json.loads((tmp_path / "measured" / f"{a.id}.json").read_text())["measurement"]
    mb = json.loads((tmp_path / "measured" / f"{b.id}.json").read_text())["measurement"]
    assert ma["selected_run"] == 2 and ma["iteration_s"] == 0.09 and ma["speed_probe_s"] == 0.004
    assert ma["repeat_iteration_s"] == [0.1, 0.15, 0.09] and ma["repeat_speed_probe_s"] == [0.005, 0.006, 0.004]
    assert mb["selected_run"] == 2 and mb["iteration_s"] == 0.26 and mb["speed_probe_s"] == 0.0052
    assert ma["run_wall_s"] == 3.0
    # spreads: raw half-range over the mean, and the same of the normalised times (20, 25, 22.5)
    assert ma["noise"]["repeat_pct"] == pytest.approx(100 * 0.03 / (0.34 / 3))
    assert ma["noise"]["repeat_normalised_pct"] == pytest.approx(100 * 2.5 / 22.5)
    assert sorted(p.name for p in (tmp_path / "runs" / a.id).iterdir()) == ["run-1.json", "run-2.json", "run-3.json"]
    # interrupted in pass 3 (b's third run and both measurements missing): only that run is taken again
    (tmp_path / "runs" / b.id / "run-3.json").unlink()
    for p in (a, b):
        (tmp_path / "measured" / f"{p.id}.json").unlink()
        (tmp_path / "points" / f"{p.id}.json").unlink()
    events.clear()
    loop.run_matrix([a, b], tmp_path, repeats=3)
    assert events == ["run " + b.id, "predict " + a.id, "predict " + b.id]


def test_a_run_is_normalised_by_its_typical_probe():
    # bimodal samples (the fast mode a little more frequent): the median lands on the slow mode's edge, the
    # typical value (median of the fastest half) on the fast mode, as the calibration's own statistic does
    m = {"speed_probe": {"median_s": 0.010, "typical_s": 0.0062}}
    assert loop.probe_statistic(m) == 0.0062
    assert loop.probe_statistic({"speed_probe": {"median_s": 0.010}}) == 0.010   # an older measurement
    assert loop.probe_statistic({}) is None


def test_combine_runs_without_probes_takes_the_median_time():
    runs = [{"iteration_s": t, "iteration_times_s": [t], "speed_probe_s": None} for t in (0.3, 0.1, 0.2)]
    m = loop.combine_runs(runs)
    assert m["iteration_s"] == 0.2 and m["selected_run"] == 2 and "repeat_normalised_pct" not in m["noise"]
    with pytest.raises(ValueError):
        loop.combine_runs([])


def test_report_states_the_calibration_sessions(tmp_path):
    from test_report import synthetic_results   # tests/ is on sys.path (pytest rootdir-less test modules)
    from validation.loop import summary_of
    from validation.report import write_report

    results = synthetic_results()
    one = write_report(tmp_path / "a", results, dict(summary_of(results), calibration={"sessions": 1}))
    assert "Calibration sessions" not in open(one["markdown"], encoding="utf-8").read()
    s = dict(summary_of(results), calibration={"sessions": 3, "dates": ["a", "b", "c"], "before_passes": [0, 1, 2]})
    md = open(write_report(tmp_path / "b", results, s)["markdown"], encoding="utf-8").read()
    head = md.split("## 2.")[0]
    assert "**Calibration sessions:** the calibration was measured 3 times, before passes 1, 2, 3" in head
    assert "Compute inside the executor's loop" not in head   # no loop reference measured: no note
    assert "Typical and mean times" not in head
    s["calibration"]["loop_compute"] = {"4": 0.98, "1": 1.02, "2": 1.118}
    s["calibration"]["step_tail"] = {"1": 1.07, "2": 1.05}
    s["calibration"]["loop_reference"] = {"model": "resnet20", "per_rank_batch": 32}
    head = open(write_report(tmp_path / "c", results, s)["markdown"], encoding="utf-8").read().split("## 2.")[0]
    assert "factor (here 1.020 at 1 rank, 1.118 at 2 ranks, 0.980 at 4 ranks)" in head
    assert "(resnet20 at 32 images per rank, SGD, 25 MB buckets)" in head
    assert "**Typical and mean times:**" in head and "(here 1.070 at 1 rank, 1.050 at 2 ranks;" in head


def test_session_calibration_reports_the_fitted_factors(tmp_path):
    sc = SessionCalibration(tmp_path, quick=True, say=lambda m: None)
    assert sc.factors() == {"loop_compute": {}, "step_tail": {}}   # nothing fitted yet
    sc.folder.mkdir()
    (sc.folder / "report.json").write_text(json.dumps({"loop_compute": {"scale": {"1": 1.01, "2": 1.15}},
                                                       "step_tail": {"1": 1.06}}))
    assert sc.factors() == {"loop_compute": {"1": 1.01, "2": 1.15}, "step_tail": {"1": 1.06}}
    rows = [{"session": 1, "ranks": 1, "model": "resnet20", "batch": 32, "ratio": 1.01}]
    (sc.folder / "report.json").write_text(json.dumps({"loop_compute": {"scale": {"1": 1.01}, "rows": rows}}))
    assert sc.factors()["loop_reference"] == {"model": "resnet20", "per_rank_batch": 32}
