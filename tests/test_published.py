"""Tests of the published-results validation (validation/published.py), the calibration of the devices'
efficiency curves on published single-node rows (validation/calibrate_published.py,
scripts/calibrate_published.py) and ``perfmodel validate --published``.

Bounds stated here (measured when the calibration was written, predictor of the same commit):
- every calibration row is reproduced by the stored catalog within 1 % (measured: max 0.011 %);
- median |error| over the validation rows of published_results.csv: 11.5 % (10 rows) -> asserted < 15 %;
  over both files (with published_extra.csv, 13 rows): 12.5 % -> asserted < 15 % (slow test);
- max |error| over published_results.csv validation rows: 20.0 % (Bae et al. AlexNet on 4 KNL) -> < 25 %.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from hardware.catalog import load_device, load_system
from hardware.specs import EfficiencyCurve, FrozenMap
from perfmodel.cli.main import main
from validation import calibrate_published as cp
from validation.published import (
    COLUMNS, PUBLISHED_CSV, PUBLISHED_EXTRA_CSV, PublishedRow, RowSelector, RowSkipped, load_published,
    map_optimizer, map_system, parse_epochs, plan_row, predict_plan, timed_rows,
)

ROOT = Path(__file__).resolve().parents[1]
MEDIAN_BOUND_CSV_PCT = 15.0
MAX_BOUND_CSV_PCT = 25.0
MEDIAN_BOUND_ALL_PCT = 15.0

#: which published row calibrates which device curve (the documented plan)
EXPECTED_CALIBRATION = {
    "published_results.csv:1": "p100-sxm2 fp32",       # Goyal et al., 1 Big Basin server (8 P100)
    "published_results.csv:74": "v100-sxm2 fp16",      # MLPerf v0.6, 1x DGX-1
    "published_results.csv:73": "v100-sxm3 fp16",      # MLPerf v0.6, 1x DGX-2
    "published_results.csv:88": "xeon-8180 fp32",      # MLPerf v0.5 Intel, 1 node x 2 sockets
    "published_results.csv:58": "xeon-phi-7250 fp32",  # Bae et al., 4 KNL (documented exception)
}


def run_cli(argv, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def check_report():
    return cp.check()


@pytest.fixture(scope="module")
def csv_result():
    """``perfmodel validate --published --csv published_results.csv --json`` (fast: no 1000+-node rows)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["validate", "--published", "--csv", str(PUBLISHED_CSV), "--json"])
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue())


# ---- calibration ---------------------------------------------------------------------------------------
def test_check_path_reproduces_every_calibration_row_within_1pct(check_report):
    assert check_report["ok"], check_report["problems"]
    assert {r["row"]: r["calibrates"] for r in check_report["rows"]} == EXPECTED_CALIBRATION
    for r in check_report["rows"]:
        assert abs(r["error_pct"]) <= 1.0, r
        assert math.isfinite(r["predicted"]) and r["predicted"] > 0


def test_script_check_exit_code(capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("calibrate_published_script", ROOT / "scripts" / "calibrate_published.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, capsys.readouterr().out
    assert "OK" in capsys.readouterr().out


def test_stored_values_are_the_fit_with_4_significant_digits(check_report):
    for res in check_report["results"]:
        curve = load_device(res["device"]).efficiency_for(res["precision"])
        assert curve.eff_max == res["eff_max"] == float(f"{res['eff_max_exact']:.4g}")
        assert 0 < curve.eff_max <= 1
        assert curve.batch_half == res["batch_half_images"]
        src = load_device(res["device"]).sources[f"efficiency.{res['precision']}.eff_max"]
        assert "scripts/calibrate_published.py" in src
        if not res["derived_from"]:
            assert "calibrated by" in src and res["rows"][0].split(":")[0] in src


def test_calibration_uses_single_node_rows_except_the_documented_knl_row():
    rows = load_published()
    pairs = cp.calibration_rows(rows)
    assert {r.row_id: label for r, label in pairs} == EXPECTED_CALIBRATION
    multi = [(r, label) for r, label in pairs if plan_row(r).nodes != 1]
    assert [(r.row_id, label) for r, label in multi] == [("published_results.csv:58", "xeon-phi-7250 fp32")]
    knl_target = next(t for t in cp.CALIBRATION_PLAN if t.device == "xeon-phi-7250")
    assert "no single-node KNL row" in knl_target.exception
    assert all(not t.exception for t in cp.CALIBRATION_PLAN if t.device != "xeon-phi-7250")
    assert multi[0][0].images_per_s == 316 and multi[0][0].nodes == 4
    # the source string says so plainly
    assert "EXCEPTION" in load_device("xeon-phi-7250").sources["efficiency.fp32.eff_max"]


def test_fit_refuses_an_undocumented_multi_node_row():
    target = cp.CalibrationTarget(
        "p100-sxm2", "fp32",
        (RowSelector("Goyal et al. 2017", "NVIDIA Tesla P100 (32 Big Basin servers, 50 Gbit Ethernet, Mellanox "
                     "ConnectX-4, Wedge100 switches)", 8192),), why="test")
    with cp.TrialCatalog() as cat, pytest.raises(cp.CalibrationError, match="multi-node"):
        cp.fit_target(target, load_published(), cat)


def _fake_row(batch: int, **kw) -> PublishedRow:
    base = dict(file="synthetic.csv", line=1, paper="Synthetic", model="ResNet-50",
                hardware="NVIDIA Tesla P100 (Big Basin)", device_count=8, nodes=1, global_batch=str(batch),
                optimizer="SGD", epochs="1", top1=None, time_to_train_s=None, images_per_s=None, notes="", source="")
    base.update(kw)
    return PublishedRow(**base)


def test_two_row_fit_recovers_a_known_curve():
    true_eff, true_bh = 0.55, 24.0
    with cp.TrialCatalog() as cat:
        plans = []
        for i, batch in enumerate((128, 512)):  # 16 and 64 images per GPU on one 8-GPU server
            probe = plan_row(_fake_row(batch, line=i + 1, images_per_s=1.0))
            ips, _, _ = predict_plan(probe, cat.system_path("big-basin-p100", "fp32", true_eff, true_bh))
            plans.append(plan_row(_fake_row(batch, line=i + 1, images_per_s=ips)))
        eff, bh = cp.fit_two_rows(plans[0], plans[1], "fp32", cat)
    assert eff == pytest.approx(true_eff, rel=0.01)
    assert bh == pytest.approx(true_bh, rel=0.03)


def test_two_row_fit_rejects_the_dgx2_pair_and_says_why():
    """Why v100-sxm3 keeps batch_half: v0.6 (208/GPU) is faster per image than v0.5 (256/GPU)."""
    rows = load_published()
    a = plan_row(RowSelector("MLPerf Training v0.6 (Jul 2019) - NVIDIA", "NVIDIA V100-SXM3-32GB (1x DGX-2)", 3328).find(rows))
    b = plan_row(RowSelector("MLPerf Training v0.5 - nvidia", "NVIDIA V100-SXM3-32GB (1x DGX-2)", 4096).find(rows))
    with cp.TrialCatalog() as cat, pytest.raises(cp.CalibrationError, match="not consistent"):
        cp.fit_two_rows(a, b, "fp16", cat)


def test_one_row_fit_reports_an_unreachable_row():
    impossible = plan_row(_fake_row(256, time_to_train_s=1000.0, epochs="90"))  # 8 P100 in 17 minutes
    with cp.TrialCatalog() as cat, pytest.raises(cp.CalibrationError, match="cannot be reproduced"):
        cp.fit_one_row(impossible, "fp32", 8.0, cat)


def test_one_row_fit_is_exact_on_a_synthetic_row():
    with cp.TrialCatalog() as cat:
        probe = plan_row(_fake_row(256, time_to_train_s=1.0, epochs="90"))
        t, _, _ = predict_plan(probe, cat.system_path("big-basin-p100", "fp32", 0.3, 8.0))
        row = plan_row(_fake_row(256, time_to_train_s=t, epochs="90"))
        assert cp.fit_one_row(row, "fp32", 8.0, cat) == pytest.approx(0.3, rel=1e-5)


def test_render_device_changes_only_the_efficiency_lines_and_sources():
    path = ROOT / "hardware" / "data" / "devices" / "v100-sxm2.toml"
    old = path.read_text()
    new = cp.render_device(old, "fp16", 0.1234, 16, {"efficiency.fp16.eff_max": 'test "quoted" source'})
    changed = [(a, b) for a, b in zip(old.splitlines(), new.splitlines()) if a != b]
    assert len(old.splitlines()) == len(new.splitlines())
    assert [b for _, b in changed] == ["eff_max = 0.1234", "batch_half_images = 16",
                                       '"efficiency.fp16.eff_max" = "test \\"quoted\\" source"']
    import tomllib
    data = tomllib.loads(new)
    assert data["efficiency"]["fp16"] == {"eff_max": 0.1234, "batch_half_images": 16}
    assert data["efficiency"]["fp32"] == tomllib.loads(old)["efficiency"]["fp32"]
    with pytest.raises(Exception, match="no such line"):
        cp.render_device(old, "bf16", 0.5)


def test_check_detects_a_stored_value_that_differs_from_the_fit(check_report, monkeypatch):
    frozen = [cp.FitResult(r["device"], r["precision"], r["eff_max"], r["batch_half_images"], r["eff_max_exact"],
                           tuple(r["fitted"]), tuple(r["rows"]), r["sources"], r["derived_from"])
              for r in check_report["results"]]
    monkeypatch.setattr(cp, "fit_all", lambda rows=None: frozen)
    real = cp.load_device

    def tampered(dev_id, *a, **kw):
        d = real(dev_id, *a, **kw)
        if dev_id == "p100-sxm2":
            d = dataclasses.replace(d, efficiency=FrozenMap({**d.efficiency, "fp32": EfficiencyCurve(0.40, 8.0)}))
        return d
    monkeypatch.setattr(cp, "load_device", tampered)
    rep = cp.check()
    assert not rep["ok"]
    assert any("p100-sxm2 fp32: stored eff_max 0.4" in p for p in rep["problems"])


# ---- mapping --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hardware, system", [
    ("NVIDIA Tesla P100 (Big Basin server, NVLink)", "big-basin-p100"),
    ("NVIDIA Tesla P100 (44 Big Basin servers)", "big-basin-p100"),
    ("NVIDIA V100-SXM2-16GB (1x DGX-1)", "dgx1-v100"),
    ("NVIDIA V100-SXM3-32GB (1x DGX-2)", "dgx2-v100"),
    ("NVIDIA V100-SXM3-32GB-H (1x DGX-2H)", "dgx2-v100"),
    ("Intel Xeon Platinum 8160 (Stampede2 SKX)", "stampede2-skx"),
    ("Intel Xeon Platinum 8180 (1 node x 2 sockets; Intel Caffe)", "intel-8180-10gbe"),
    ("Intel Xeon Phi 7250 KNL testbed (data in memory, no disk I/O)", "stampede2-knl"),
    ("Intel Xeon Phi 7250 (KNL)", "stampede2-knl"),
])
def test_hardware_strings_map_to_catalog_systems(hardware, system):
    got, note = map_system(hardware)
    assert got == system
    load_system(got)  # the catalog file exists and validates (every number sourced)
    if "DGX-2H" in hardware:
        assert "not modelled separately" in note


@pytest.mark.parametrize("hardware, reason", [
    ("Google TPU v3 pod", "no catalog system: Google TPU"),
    ("Google TPU v3 (2048 cores = 1024 chips)", "no catalog system: Google TPU"),
    ("NVIDIA M40", "no catalog system: NVIDIA M40"),
    ("NVIDIA Tesla P40", "no catalog system: NVIDIA P40"),
    ("x86 CPUs (Intel Xeon / Xeon Phi; systems not named in abstract)", "system not identified"),
    ("", "hardware not given"),
])
def test_unmappable_hardware_is_skipped_with_a_reason(hardware, reason):
    with pytest.raises(RowSkipped, match=reason):
        map_system(hardware)


def test_row_plans_of_known_rows():
    rows = load_published()

    def find(paper, hardware, batch, **kw):
        return plan_row(RowSelector(paper, hardware, batch, **kw).find(rows))

    intel = find("MLPerf Training v0.5 - intel", "Intel Xeon Platinum 8180 (1 node x 2 sockets; Intel Caffe)", 128)
    assert (intel.system, intel.nodes, intel.ranks_per_node, intel.precision, intel.epochs) == \
        ("intel-8180-10gbe", 1, 4, "fp32", 62.0)
    assert intel.stated_eval_s_per_epoch == 1200.0 and intel.quantity == "time_to_train_s"
    dgx1 = find("MLPerf Training v0.6 (Jul 2019) - NVIDIA", "NVIDIA V100-SXM2-16GB (1x DGX-1)", 1664)
    assert (dgx1.system, dgx1.precision, dgx1.optimizer, dgx1.epochs, dgx1.model) == \
        ("dgx1-v100", "fp16", "lars", 58.0, "resnet50")
    goyal44 = find("Goyal et al. 2017", "NVIDIA Tesla P100 (44 Big Basin servers)", 11264)
    assert (goyal44.quantity, goyal44.published, goyal44.nodes, goyal44.precision) == \
        ("images_per_s", 42706.0, 44, "fp32")
    cod = find("Codreanu, Podareanu, Saletore 2017 (arXiv 1711.04291) [authors code repo]",
               "Intel Xeon Platinum 8160 (Stampede2 SKX)", 4096)
    assert (cod.system, cod.nodes, cod.ranks_per_node, cod.epochs, cod.scope) == \
        ("stampede2-skx", 64, None, 72.0, "multi-node")
    r101 = find("Goyal et al. 2017", "NVIDIA Tesla P100 (Big Basin)", 8192, model="ResNet-101")
    assert r101.model == "resnet101" and r101.published == 5550


def test_parse_epochs_and_optimizer_mapping():
    assert parse_epochs("90") == 90 and parse_epochs("72/76") == 74 and parse_epochs("61/62/63") == 62
    assert parse_epochs("90-120") is None and parse_epochs("85+5") is None and parse_epochs("") is None
    assert map_optimizer('LARS (logged opt_name "lars")')[0] == "lars"
    assert map_optimizer("distributed K-FAC (natural gradient)")[0] == "kfac"
    assert map_optimizer("SGD Nesterov momentum 0.9")[0] == "sgd"
    assert map_optimizer("RMSprop warm-up -> momentum SGD")[1]  # says it is an approximation


def test_extra_csv_has_the_reference_columns_and_cites_papers_md():
    with open(PUBLISHED_EXTRA_CSV, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    with open(PUBLISHED_CSV, newline="") as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == COLUMNS
    assert len(rows) == 3
    for r in rows:
        assert r["source"].startswith("PAPERS.md section 2")
        assert float(r["time_to_train_s"]) > 0 and r["epochs"] and r["global_batch"] and r["nodes"]
    assert {(r["model"], r["time_to_train_s"]) for r in rows} == {("ResNet-50", "1200"), ("ResNet-50", "840"),
                                                                 ("AlexNet", "660")}


# ---- perfmodel validate --published -----------------------------------------------------------------------
def _check_result(res, files):
    for key in ("rows", "median_abs_error_pct", "max_abs_error_pct", "calibration", "skipped", "count"):
        assert key in res
    timed = {r.row_id for r in timed_rows(load_published(files))}
    predicted = {r["row"] for r in res["rows"]}
    skipped = {s["row"] for s in res["skipped"]}
    assert predicted | skipped == timed and not predicted & skipped  # every timed row accounted for
    assert all(s["reason"] for s in res["skipped"])
    for r in res["rows"]:
        for key in ("paper", "model", "system", "nodes", "batch", "quantity", "published_s", "predicted_s",
                    "error_pct", "role"):
            assert key in r
        assert math.isfinite(r["error_pct"])
        if r["quantity"] == "time_to_train_s":
            pub, pred = r["published_s"], r["predicted_s"]
        else:
            pub, pred = r["published_images_per_s"], r["predicted_images_per_s"]
            assert r["published_s"] is None and r["predicted_s"] is None
        assert math.isfinite(pred) and pred > 0
        assert r["error_pct"] == pytest.approx(100 * (pred - pub) / pub)
    val = [abs(r["error_pct"]) for r in res["rows"] if r["role"] == "validation"]
    assert res["count"] == len(val)
    assert res["max_abs_error_pct"] == pytest.approx(max(val))
    cal = [r for r in res["rows"] if r["role"] == "calibration"]
    assert {r["row"] for r in cal} == set(EXPECTED_CALIBRATION)
    assert res["calibration"]["count"] == 5 and res["calibration"]["max_abs_error_pct"] <= 1.0
    return val


def test_validate_published_json_on_the_reference_csv(csv_result):
    val = _check_result(csv_result, [PUBLISHED_CSV])
    assert len(val) == 10
    assert csv_result["median_abs_error_pct"] < MEDIAN_BOUND_CSV_PCT
    assert csv_result["max_abs_error_pct"] < MAX_BOUND_CSV_PCT
    reasons = {s["row"]: s["reason"] for s in csv_result["skipped"]}
    assert reasons["published_results.csv:53"].startswith("no catalog system: Google TPU")  # Ying et al.
    assert reasons["published_results.csv:32"].startswith("no catalog system: NVIDIA M40")  # You et al. baseline
    by = {r["row"]: r for r in csv_result["rows"]}
    assert by["published_results.csv:88"]["eval_s"] == 62 * 1200.0  # stated CPU evaluation, not the model's
    assert by["published_results.csv:2"]["scope"] == "multi-node"


def test_validate_published_table_output(capsys):
    rc, out, err = run_cli(["validate", "--published", "--csv", PUBLISHED_CSV], capsys)
    assert rc == 0, err
    assert "validation rows: 10, median |error|" in out
    assert "skipped timed rows (14):" in out and "no catalog system: Google TPU" in out
    assert "calibration" in out and "big-basin-p100" in out


def test_validate_flag_conflicts_are_one_line_errors(capsys):
    rc, out, err = run_cli(["validate", "--repeats", "0", "--out", "/nonexistent/x"], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--repeats" in err
    rc, _, err = run_cli(["validate", "--published", "--quick"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_validate_published_json_all_files(capsys):
    rc, out, err = run_cli(["validate", "--published", "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    val = _check_result(res, [PUBLISHED_CSV, PUBLISHED_EXTRA_CSV])
    assert len(val) == 13
    assert res["median_abs_error_pct"] < MEDIAN_BOUND_ALL_PCT
    assert {r["row"] for r in res["rows"]} >= {"published_extra.csv:1", "published_extra.csv:2", "published_extra.csv:3"}
