"""The noise-floor control of the validation loop (validation.control): a perfect model's error from a
reference run, where the control runs happen in the matrix, that they are resumable, and the report line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import validation.loop as loop
from validation.control import CONTROL_POINT, control_error, load_controls, summarise_controls
from validation.matrix import Point, full_matrix, quick_matrix


def test_control_error_known_answers():
    ref = {"iteration_s": 0.100, "speed_probe_s": 0.005}
    # the host is 20 % slower and the run 20 % slower: a perfect prediction once scaled
    e = control_error(ref, {"iteration_s": 0.120, "speed_probe_s": 0.006})
    assert e["speed_factor"] == pytest.approx(1.2)
    assert e["error_pct"] == pytest.approx(0.0, abs=1e-9)
    assert e["error_raw_pct"] == pytest.approx(100 * (0.100 - 0.120) / 0.120)
    # probe unchanged, run 10 % faster: the prediction is 100/90 too slow
    e = control_error(ref, {"iteration_s": 0.090, "speed_probe_s": 0.005})
    assert e["error_pct"] == pytest.approx(100 * (0.100 - 0.090) / 0.090)
    # no probe: only the raw error
    e = control_error({"iteration_s": 0.1}, {"iteration_s": 0.125, "speed_probe_s": 0.006})
    assert e["speed_factor"] is None and e["error_pct"] is None and e["error_raw_pct"] == pytest.approx(-20.0)


def test_summary_statistics():
    ref = {"iteration_s": 0.1, "speed_probe_s": 0.005, "point_id": "p"}
    runs = [{"name": "after-002", "iteration_s": 0.1, "speed_probe_s": 0.0055},    # +10 %
            {"name": "after-004", "iteration_s": 0.125, "speed_probe_s": 0.005}]   # -20 %
    s = summarise_controls(ref, runs)
    assert s["count"] == 2 and s["point"] == "p"
    assert s["mape"] == pytest.approx(15.0) and s["max_ape"] == pytest.approx(20.0) and s["bias"] == pytest.approx(-5.0)
    assert s["mape_raw"] == pytest.approx(10.0) and s["bias_raw"] == pytest.approx(-10.0)
    assert [r["name"] for r in s["runs"]] == ["after-002", "after-004"]
    assert summarise_controls(None, runs) is None and summarise_controls(ref, []) is None


def test_the_control_point_is_an_ordinary_point_of_the_matrices():
    assert CONTROL_POINT.id in {p.id for p in quick_matrix()}
    # in the full matrix: same model, rank count and run length as its ResNet-20 SGD points at 2 ranks
    like = [p for p in full_matrix() if (p.model, p.ranks, p.optimizer) == ("resnet20", 2, "sgd")]
    assert like and all(p.iterations == CONTROL_POINT.iterations for p in like)


def _fake_loop(monkeypatch, measured: list[str], probe_of=None):
    """run_matrix with the runs replaced: every run is recorded in ``measured`` by point id, and the
    control's iteration time grows by 1 ms per call while its probe stays put (``probe_of(n)``: the probe of
    the n-th run of a point, default 5 ms)."""
    def fake_run(point, system, timeout_s):
        measured.append(point.id)
        n = sum(1 for m in measured if m == point.id)
        it = 0.1 + 0.001 * (n - 1)
        return {"iteration_s": it, "speed_probe_s": probe_of(n) if probe_of else 0.005, "iteration_times_s": [it]}

    def fake_compare_point(point, meas, **kw):
        return {"id": point.id, "measurement": meas}

    monkeypatch.setattr(loop, "_run_once", fake_run)
    monkeypatch.setattr(loop, "compare_point", fake_compare_point)
    monkeypatch.setattr(loop, "summary_of", lambda results: {"configs": len(results)})


def test_control_runs_between_points_and_is_resumable(tmp_path, monkeypatch):
    points = [Point("resnet20", 1, 16 * k) for k in range(1, 6)]   # five 1-rank points
    measured: list[str] = []
    _fake_loop(monkeypatch, measured)
    s = loop.run_matrix(points, tmp_path, control=CONTROL_POINT, control_every=2)
    cid = CONTROL_POINT.id
    # reference first, then a control after points 2 and 4 and after the last (5)
    assert measured[0] == cid and measured.count(cid) == 4 and s["configs"] == 5
    assert [measured[i] == cid for i in range(len(measured))] == [True, False, False, True, False, False, True,
                                                                 False, True]
    names = sorted(p.stem for p in (tmp_path / "control").glob("*.json"))
    assert names == ["after-002", "after-004", "after-005", "reference"]
    ref, runs = load_controls(tmp_path)
    assert ref["point_id"] == cid and [r["name"] for r in runs] == ["after-002", "after-004", "after-005"]
    nf = s["noise_floor"]
    # the later runs took 101, 102, 103 ms with an unchanged probe: the reference's 100 ms is 1-3 % fast
    assert nf["count"] == 3
    assert [r["error_pct"] for r in nf["runs"]] == pytest.approx([100 * (0.1 - t) / t for t in (0.101, 0.102, 0.103)])
    # a second call measures nothing again
    measured.clear()
    again = loop.run_matrix(points, tmp_path, control=CONTROL_POINT, control_every=2)
    assert measured == [] and again["noise_floor"]["mape"] == pytest.approx(nf["mape"])


def test_controls_in_passes_are_combined_like_the_points_runs(tmp_path, monkeypatch):
    points = [Point("resnet20", 1, 16 * k) for k in range(1, 4)]   # three 1-rank points
    measured: list[str] = []
    _fake_loop(monkeypatch, measured)
    s = loop.run_matrix(points, tmp_path, repeats=2, control=CONTROL_POINT, control_every=2)
    cid = CONTROL_POINT.id
    # per pass: a reference, then a control after point 2 and after the last (3)
    names = sorted(p.stem for p in (tmp_path / "control").glob("*.json"))
    assert names == ["after-002", "after-002-pass-2", "after-003", "after-003-pass-2", "reference",
                     "reference-pass-2"]
    assert measured.count(cid) == 6 and all(measured.count(p.id) == 2 for p in points)
    # control runs 1..6 took 100..105 ms at one probe: references 100 and 103 ms (geometric mean), the
    # place "after-002" runs 101 and 104 (the lower median, 101 ms), "after-003" 102 and 105 (102 ms)
    ref, runs = load_controls(tmp_path)
    assert ref["runs"] == 2 and ref["iteration_s"] == pytest.approx((0.1 * 0.103) ** 0.5)
    nf = s["noise_floor"]
    assert nf["count"] == 2 and [r["runs"] for r in nf["runs"]] == [2, 2]
    r0 = ref["iteration_s"]
    assert [r["measured_s"] for r in nf["runs"]] == pytest.approx([0.101, 0.102])
    assert [r["error_pct"] for r in nf["runs"]] == pytest.approx([100 * (r0 - t) / t for t in (0.101, 0.102)])


def test_without_a_control_nothing_extra_runs(tmp_path, monkeypatch):
    measured: list[str] = []
    _fake_loop(monkeypatch, measured)
    s = loop.run_matrix([Point("resnet20", 1, 16)], tmp_path)
    assert measured == [Point("resnet20", 1, 16).id] and "noise_floor" not in s
    assert not (tmp_path / "control").exists()


def test_report_states_the_noise_floor(tmp_path):
    from validation.report import write_report
    from test_report import synthetic_results   # tests/ is on sys.path (pytest rootdir-less test modules)
    from validation.loop import summary_of

    results = synthetic_results()
    ref = {"iteration_s": 0.1, "speed_probe_s": 0.005, "point_id": CONTROL_POINT.id}
    runs = [{"name": "after-004", "iteration_s": 0.1, "speed_probe_s": 0.0055},
            {"name": "after-008", "iteration_s": 0.125, "speed_probe_s": 0.005}]
    s = dict(summary_of(results), noise_floor=summarise_controls(ref, runs))
    paths = write_report(tmp_path, results, s)
    md = Path(paths["markdown"]).read_text(encoding="utf-8")
    head = md.split("## 2.")[0]
    assert "Noise floor (control)" in head and CONTROL_POINT.id in head
    assert "mean |error| of 15.0 %" in head and "max of 20.0 %" in head
    html = Path(paths["html"]).read_text(encoding="utf-8")
    assert "noise floor: perfect model" in html
    json.dumps(s)   # the summary stays JSON
