"""Tests of the sweep engine (perfmodel/sweep.py), capacity planning (perfmodel/plan.py), their plots
(perfmodel/plots.py) and commands (``perfmodel sweep``, ``perfmodel plan``).

What is checked:
- sweep rows equal ``predict()`` of the same configuration (1e-9 relative) for sampled points, with the
  convergence model and with fixed epochs, global and per-device batches, in-process and in a process pool;
- points that cannot run are rows with a status and a reason (indivisible batch, more nodes than the
  system has), never an exception; whole-sweep input errors raise ConfigError;
- the CSV has the documented header, is written atomically (a failed write leaves the old file and no
  temporary file), and the progress bar is silent when stderr is not a terminal;
- planning on a hand-checkable synthetic grid (cheapest meeting a deadline, fastest within a budget,
  Pareto front) and, on random grids, the front against a brute-force dominance check;
- deadline parsing (30min, 2h, 90s, 1h30m, seconds) and one-line exit-2 errors for malformed ones;
- the commands in-process (JSON, CSV, PNG plots) and once through a real ``mpiexec -n 2`` MPI pool.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import perfmodel.predict as predict_mod
from hardware.errors import ConfigError
from perfmodel.cli.main import main
from perfmodel.config import load_config
from perfmodel.optimizers import optimizer_cost
from perfmodel.plan import (cheapest_meeting_deadline, fastest_within_budget, make_plan, pareto_front,
                            parse_budget, parse_duration)
from perfmodel.predict import predict
from perfmodel.sweep import (SWEEP_COLUMNS, SweepGrid, parse_int_list, powers_of_two, run_sweep,
                             time_to_train_arrays)

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SCALARS = ("time_to_train_s", "epochs", "iterations", "iteration_s", "images_per_s", "scaling_efficiency")
BREAKDOWN = ("compute_s", "comm_total_s", "comm_exposed_s", "optimizer_s", "io_s")


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _assert_row_equals_predict(row: dict, base) -> None:
    cfg = base.replace(system=row["system"], nodes=row["nodes"], batch=row["global_batch"],
                       optimizer=row["optimizer"], allreduce=row["allreduce"], precision=row["precision"])
    p = predict(cfg).to_dict()
    for k in SCALARS:
        assert _rel(row[k], p[k]) <= 1e-9, (k, row[k], p[k])
    for k in BREAKDOWN:
        assert _rel(row[k], p["breakdown"][k]) <= 1e-9 or row[k] == p["breakdown"][k] == 0.0, k
    assert row["per_device_batch"] == p["per_device_batch"] and row["ranks"] == p["ranks"]
    assert row["node_hours"] == pytest.approx(row["nodes"] * p["time_to_train_s"] / 3600, rel=1e-9)


@pytest.fixture(scope="module")
def grid():
    return SweepGrid(base=load_config(None), systems=("big-basin-p100", "stampede2-knl"), nodes=(1, 2, 4, 64),
                     batches=(256, 1000, 2048), optimizers=("sgd", "kfac"), algorithms=("ring", "auto"))


@pytest.fixture(scope="module")
def swept(grid):
    return run_sweep(grid, workers=1, progress=False)


# ---------------------------------------------------------------------------------------------------------
# sweep == predict
def test_sweep_rows_equal_predict_for_sampled_points(grid, swept):
    rows = swept.rows()
    assert len(rows) == swept.n == 2 * 4 * 3 * 2 * 2
    ok = [r for r in rows if r["status"] == "ok"]
    rng = np.random.default_rng(7)
    picks = [ok[i] for i in rng.choice(len(ok), size=6, replace=False)]
    # always include a multi-node K-FAC point and a one-node point
    picks += [next(r for r in ok if r["optimizer"] == "kfac" and r["nodes"] == 4 and r["system"] == "stampede2-knl"),
              next(r for r in ok if r["nodes"] == 1)]
    for row in picks:
        _assert_row_equals_predict(row, grid.base)


def test_sweep_with_fixed_epochs_and_per_device_batch_equals_predict():
    base = load_config(None, epochs=37.5)
    g = SweepGrid(base=base, systems=("dgx1-v100",), nodes=(1, 2, 8), per_device_batches=(32, 96),
                  optimizers=("lars",), algorithms=("halving_doubling",))
    res = run_sweep(g, workers=1, progress=False)
    rows = res.rows()
    assert [r["global_batch"] for r in rows] == [256, 768, 512, 1536, 2048, 6144]
    assert all(r["status"] == "ok" and r["epochs"] == 37.5 for r in rows)
    for row in (rows[1], rows[4]):
        _assert_row_equals_predict(row, base)


def test_time_to_train_arrays_closed_form():
    out = time_to_train_arrays(iteration_s=[0.5], forward_s=[0.1], micro_batch=[10], accumulation_steps=[2],
                               global_batch=[100], per_device_batch=[20], epochs=[2.5], nodes=5, ranks_per_node=1,
                               train_images=1001, val_images=99, eval_every_epochs=1.0, startup_s=3.0,
                               ref_iteration_s=[0.4])
    # 11 iterations per epoch; ceil(2.5 * 11) = 28 iterations; 2 evaluations of ceil(99/5) = 20 images
    # at 0.1 / 20 s per image; scaling = (100/0.5) / (5 * 20 / 0.4)
    assert out["iterations"][0] == 28
    assert out["eval_s"][0] == pytest.approx(2 * 20 * 0.005)
    assert out["time_to_train_s"][0] == pytest.approx(28 * 0.5 + 0.2 + 3.0)
    assert out["scaling_efficiency"][0] == pytest.approx(200 / 250)


def test_memo_is_uninstalled_and_changes_nothing(swept):
    assert predict_mod.optimizer_cost is optimizer_cost


def test_process_pool_gives_the_same_rows(grid, swept):
    small = SweepGrid(base=grid.base, systems=("big-basin-p100",), nodes=(1, 2, 4), batches=(256, 2048),
                      optimizers=("sgd", "kfac"), algorithms=("ring", "auto"))
    one = run_sweep(small, workers=1, progress=False).rows()
    two = run_sweep(small, workers=2, progress=False).rows()
    assert one == two


# ---------------------------------------------------------------------------------------------------------
# rows that cannot run
def test_indivisible_and_infeasible_points_are_rows_with_reasons(swept):
    rows = swept.rows()
    indiv = [r for r in rows if r["status"] == "indivisible"]
    assert indiv and all(r["global_batch"] == 1000 for r in indiv)
    assert all("not divisible" in r["reason"] and r["time_to_train_s"] is None for r in indiv)
    # 1000 = 8 * 125 is divisible by one KNL node's single rank and by 8 ranks, not by 16 or 32
    knl_1000 = {r["nodes"]: r["status"] for r in rows if r["system"] == "stampede2-knl" and r["global_batch"] == 1000}
    assert knl_1000 == {1: "ok", 2: "ok", 4: "ok", 64: "indivisible"}
    infeasible = [r for r in rows if r["status"] == "infeasible"]
    assert infeasible and all(r["system"] == "big-basin-p100" and r["nodes"] == 64 for r in infeasible)
    assert "only 44 nodes" in infeasible[0]["reason"]
    assert swept.status_counts()["ok"] == swept.evaluated


def test_point_the_model_rejects_is_an_invalid_row():
    # the KNL spec has no fp16 efficiency curve: its fp16 points are rows with that reason, the rest run
    g = SweepGrid(base=load_config(None, epochs=1.0), systems=("stampede2-knl", "dgx1-v100"), nodes=(1,),
                  batches=(256,), precisions=("fp32", "fp16"))
    rows = run_sweep(g, workers=1, progress=False).rows()
    by = {(r["system"], r["precision"]): r for r in rows}
    assert by[("stampede2-knl", "fp16")]["status"] == "invalid"
    assert "efficiency curve for fp16" in by[("stampede2-knl", "fp16")]["reason"]
    assert [by[k]["status"] for k in (("stampede2-knl", "fp32"), ("dgx1-v100", "fp32"), ("dgx1-v100", "fp16"))] \
        == ["ok"] * 3
    assert by[("dgx1-v100", "fp16")]["iteration_s"] < by[("dgx1-v100", "fp32")]["iteration_s"]


def test_whole_sweep_input_errors_raise():
    base = load_config(None)
    with pytest.raises(ConfigError, match="allreduce"):
        SweepGrid(base=base, algorithms=("no-such-algorithm",))
    with pytest.raises(ConfigError, match="optimizer"):
        SweepGrid(base=base, optimizers=("adam",))
    with pytest.raises(ConfigError, match="target_top1"):
        run_sweep(SweepGrid(base=load_config(None, target_top1=99.0), nodes=(1,)), workers=1, progress=False)
    kfac = load_config(None, optimizer="kfac", optimizer_options={"no_such_option": 1})
    with pytest.raises(ConfigError, match="optimizer_options.no_such_option"):
        run_sweep(SweepGrid(base=kfac, nodes=(1,)), workers=1, progress=False)


def test_parse_int_list_forms_and_errors():
    assert parse_int_list("1-64x2", "--nodes", "nodes") == powers_of_two(64) == (1, 2, 4, 8, 16, 32, 64)
    assert parse_int_list("8-32+8,1,2", "--nodes", "nodes") == (1, 2, 8, 16, 24, 32)
    assert parse_int_list("3-5", "--nodes", "nodes") == (3, 4, 5)
    for bad in ("", "1,,2", "0", "a", "8-2", "1-8x1", "1.5"):
        with pytest.raises(ConfigError, match="--nodes: field 'nodes'"):
            parse_int_list(bad, "--nodes", "nodes")


# ---------------------------------------------------------------------------------------------------------
# CSV and progress
def test_csv_has_header_and_is_written_atomically(swept, tmp_path, monkeypatch):
    out = tmp_path / "sweep.csv"
    swept.to_csv(out)
    with open(out, newline="") as fh:
        data = list(csv.reader(fh))
    assert tuple(data[0]) == SWEEP_COLUMNS
    assert len(data) == swept.n + 1
    status = [dict(zip(data[0], r))["status"] for r in data[1:]]
    assert status == list(swept.columns["status"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv"]
    # a write that fails before the rename leaves the previous file intact and no temporary file behind
    before = out.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        swept.to_csv(out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv"]


def test_progress_bar_is_silent_when_stderr_is_not_a_terminal(grid, capfd):
    run_sweep(SweepGrid(base=grid.base, nodes=(1, 2), batches=(256,)), workers=1)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


# ---------------------------------------------------------------------------------------------------------
# planning
H = 3600.0
SYNTHETIC = [  # name, nodes, hours -> node-hours = nodes * hours
    ("A", 1, 10.0),   # 10 node-h
    ("B", 2, 6.0),    # 12
    ("C", 4, 2.0),    # 8   cheapest overall
    ("D", 8, 1.5),    # 12
    ("E", 16, 1.0),   # 16  fastest overall
    ("F", 4, 3.0),    # 12  dominated by C
]


def _synthetic_rows():
    rows = [{"name": n, "system": "s", "nodes": k, "global_batch": 256, "time_to_train_s": h * H,
             "node_hours": k * h, "status": "ok"} for n, k, h in SYNTHETIC]
    rows.append({"name": "X", "system": "s", "nodes": 1, "global_batch": 7, "time_to_train_s": None,
                 "node_hours": None, "status": "indivisible"})
    rows.append({"name": "Y", "system": "s", "nodes": 1, "global_batch": 8, "time_to_train_s": 60.0,
                 "node_hours": 0.01, "status": "infeasible"})   # must be ignored although "better"
    return rows


@pytest.mark.parametrize("deadline_h, expected", [(2.5, "C"), (2.0, "C"), (1.2, "E"), (12, "C"), (1.0, "E")])
def test_cheapest_meeting_deadline_known_answers(deadline_h, expected):
    row, reason = cheapest_meeting_deadline(_synthetic_rows(), deadline_h * H)
    assert row["name"] == expected and reason is None


@pytest.mark.parametrize("budget, expected", [(12, "D"), (9, "C"), (16, "E"), (100, "E"), (10, "C")])
def test_fastest_within_budget_known_answers(budget, expected):
    row, reason = fastest_within_budget(_synthetic_rows(), budget)
    assert row["name"] == expected and reason is None


def test_no_answer_gives_reason():
    row, reason = cheapest_meeting_deadline(_synthetic_rows(), 0.5 * H)
    assert row is None and "no configuration meets the deadline" in reason and "1h 00m 00s" in reason
    row, reason = fastest_within_budget(_synthetic_rows(), 5)
    assert row is None and "8 node-hours" in reason
    plan = make_plan(_synthetic_rows(), deadline_s=60.0, budget_node_hours=5)
    assert plan["cheapest_meeting_deadline"] is None and plan["fastest_within_budget"] is None
    assert set(plan["reasons"]) == {"cheapest_meeting_deadline", "fastest_within_budget"} and plan["reason"]


def test_pareto_front_known_answer():
    front = pareto_front(_synthetic_rows())
    assert [r["name"] for r in front] == ["E", "D", "C"]
    plan = make_plan(_synthetic_rows(), deadline_s=2.5 * H, budget_node_hours=12)
    assert plan["cheapest_meeting_deadline"]["name"] == "C" and plan["fastest_within_budget"]["name"] == "D"
    assert [r["name"] for r in plan["pareto_front"]] == ["E", "D", "C"]
    assert plan["configs"] == 8 and plan["feasible"] == 6 and plan["reason"] is None


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_is_exactly_the_non_dominated_set(seed):
    rng = np.random.default_rng(seed)
    n = 60
    t = rng.choice(np.arange(1, 15), size=n).astype(float)   # small ranges force ties
    nh = rng.choice(np.arange(1, 15), size=n).astype(float)
    rows = [{"i": i, "time_to_train_s": t[i], "node_hours": nh[i], "status": "ok"} for i in range(n)]

    def dominated(i):
        return any(t[j] <= t[i] and nh[j] <= nh[i] and (t[j] < t[i] or nh[j] < nh[i]) for j in range(n))
    front = pareto_front(rows)
    assert {r["i"] for r in front} == {i for i in range(n) if not dominated(i)}
    fastest = min(range(n), key=lambda i: (t[i], nh[i]))
    cheapest = min(range(n), key=lambda i: (nh[i], t[i]))
    ids = {r["i"] for r in front}
    assert fastest in ids and cheapest in ids
    assert [r["time_to_train_s"] for r in front] == sorted(r["time_to_train_s"] for r in front)


@pytest.mark.parametrize("text, seconds", [("30min", 1800), ("2h", 7200), ("90s", 90), ("1h30m", 5400),
                                           ("5400", 5400), ("1.5h", 5400), ("2d 4h", 187200), (" 45 m ", 2700),
                                           (600, 600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1h1h", "-5", "0", "0s", "1h30x", "h", "30 min ago", "1e3"])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError, match="--deadline: field 'deadline'"):
        parse_duration(text)


def test_parse_budget_rejects():
    assert parse_budget("12.5") == 12.5
    for bad in ("x", "0", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="budget_node_hours"):
            parse_budget(bad)


@pytest.mark.parametrize("deadline", ["soon", "1h30x", "-2h"])
def test_plan_bad_deadline_is_one_line_exit_2(deadline, capsys):
    rc = main(["plan", "--system", "big-basin-p100", f"--deadline={deadline}"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("perfmodel: error: --deadline: field 'deadline'")


def test_plan_command_json(capsys):
    argv = ["plan", "--system", "big-basin-p100", "--nodes", "1,2,4,8", "--per-device-batch", "32,128",
            "--epochs", "90", "--workers", "1", "--quiet", "--json"]
    assert main(argv + ["--deadline", "1h30m", "--budget-node-hours", "1e9"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["deadline_s"] == 5400 and plan["configs"] == 8 and plan["feasible"] == 8
    front, fastest = plan["pareto_front"], plan["fastest_within_budget"]
    assert fastest == min(front, key=lambda r: r["time_to_train_s"])   # unlimited budget: the global fastest
    assert fastest["nodes"] == 8
    # nothing trains ResNet-50 for 90 epochs in 90 minutes on 8 P100 nodes: null with a reason, exit 0
    assert plan["cheapest_meeting_deadline"] is None and "no configuration meets" in plan["reason"]
    assert main(argv + ["--deadline", "1d"]) == 0
    plan = json.loads(capsys.readouterr().out)
    best = plan["cheapest_meeting_deadline"]
    assert best["time_to_train_s"] <= 86400
    assert best["node_hours"] == min(r["node_hours"] for r in front if r["time_to_train_s"] <= 86400)


# ---------------------------------------------------------------------------------------------------------
# the sweep command
def test_sweep_command_json_in_process(capsys):
    argv = ["sweep", "--system", "big-basin-p100", "--nodes", "1,2,4", "--batch", "256,512", "--epochs", "90",
            "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert captured.err == ""
    assert [(r["nodes"], r["global_batch"]) for r in rows] == [(n, b) for n in (1, 2, 4) for b in (256, 512)]
    assert all(r["status"] == "ok" and r["epochs"] == 90 and set(SWEEP_COLUMNS) <= set(r) for r in rows)
    assert all(r["node_hours"] == pytest.approx(r["nodes"] * r["time_to_train_s"] / 3600) for r in rows)
    # strong scaling: at a fixed global batch, more nodes train faster
    for b in (256, 512):
        times = [r["time_to_train_s"] for r in rows if r["global_batch"] == b]
        assert times == sorted(times, reverse=True)


def test_sweep_command_csv_and_plots(tmp_path, capsys):
    out, plots = tmp_path / "s.csv", tmp_path / "plots"
    argv = ["sweep", "--system", "big-basin-p100", "--nodes", "1-4", "--batch", "256,512", "--epochs", "90",
            "--optimizers", "sgd,lars", "--out", str(out), "--plot", str(plots)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "wrote 16 rows" in text and "indivisible" in text      # 3 nodes x 8 ranks does not divide 256
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 16
    for name in ("scaling.png", "breakdown.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_sweep_command_bad_list_is_one_line_exit_2(capsys):
    assert main(["sweep", "--nodes", "1,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--nodes: field 'nodes'" in err[0]


# ---------------------------------------------------------------------------------------------------------
# MPI pool
# mpi4py.futures re-runs the main module on the worker ranks (as "__worker__"), so it must call main() only
# under ``__name__ == "__main__"``: a guarded script always works; ``-m perfmodel`` (the documented form)
# needs perfmodel/__main__.py to be guarded the same way (it is).
_SCRIPT = 'import sys\nfrom perfmodel.cli.main import main\nif __name__ == "__main__":\n    sys.exit(main(sys.argv[1:]))\n'


@pytest.mark.mpi
@pytest.mark.parametrize("launcher", ["script", "-m perfmodel"])
def test_sweep_on_an_mpi_pool_matches_in_process(launcher, capsys, tmp_path):
    mpiexec = Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        pytest.skip("mpiexec not installed next to the interpreter")
    args = ["sweep", "--system", "big-basin-p100", "--nodes", "1,2", "--batch", "256,512", "--epochs", "90",
            "--optimizers", "sgd,kfac", "--json", "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = tmp_path / "perfmodel_main.py"
    script.write_text(_SCRIPT)
    launch = [str(script)] if launcher == "script" else ["-m", "perfmodel"]
    proc = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "-m", "mpi4py.futures", *launch,
                           *args, "--mpi"], capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mpi_rows = json.loads(proc.stdout)
    assert main(args + ["--workers", "1"]) == 0
    local_rows = json.loads(capsys.readouterr().out)
    assert len(mpi_rows) == 8
    for a, b in zip(mpi_rows, local_rows):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
               {k: v for k, v in b.items() if not isinstance(v, float)}
        for k, v in a.items():
            if isinstance(v, float):
                assert math.isclose(v, b[k], rel_tol=1e-12), k
