"""End-to-end tests of ``perfmodel run``: real MPI + PyTorch runs at 1, 2 and 4 ranks, the measurement file,
identical parameters on every rank, and faults (a rank that raises or is killed ends the job quickly with
the rank named, and leaves no half-written output)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from executor.launch import RunFailed, launch
from perfmodel.cli.main import main
from perfmodel.config import load_config

pytestmark = pytest.mark.mpi

CONTRACT = ("iteration_s", "images_per_s", "breakdown", "iteration_p50_s", "iteration_p99_s", "config_hash",
            "records", "software", "machine")
BREAKDOWN = ("compute_s", "comm_total_s", "comm_exposed_s", "optimizer_s", "io_s")


def _check_measurement(m: dict, ranks: int, iterations: int, warmup: int) -> None:
    for key in CONTRACT:
        assert key in m, key
    for key in BREAKDOWN:
        assert m["breakdown"][key] >= 0.0, key
    assert m["ranks"] == ranks and len(m["records"]) == ranks
    assert all(len(r) == iterations + warmup for r in m["records"])
    assert [rec["warmup"] for rec in m["records"][0]] == [True] * warmup + [False] * iterations
    assert m["measured_iterations"] == iterations
    assert m["iteration_s"] > 0 and m["images_per_s"] == pytest.approx(m["config"]["batch"] / m["iteration_s"])
    # K-FAC's factor computation runs inside the forward/backward hooks; the breakdown books it as optimizer
    bd = m["breakdown"]
    assert bd["compute_s"] == pytest.approx(bd["forward_s"] + bd["backward_s"] - bd["kfac_factor_s"])
    assert (bd["kfac_factor_s"] > 0) == (m["config"]["optimizer"] == "kfac")
    if ranks > 1:
        assert m["breakdown"]["comm_total_s"] > 0
    # the parts add up to (almost) the iteration: only loop bookkeeping (microseconds) is outside them
    for rec in m["records"][0]:
        parts = (rec["data_s"] + rec["forward_s"] + rec["backward_s"] + rec["comm_wait_s"] + rec["copy_out_s"]
                 + rec["optimizer_s"])
        assert parts <= rec["iteration_s"] * (1 + 1e-9)
        # finish() is the wait for the collectives, then the averaging and copies (none with one rank)
        assert rec["comm_wait_s"] >= 0 and rec["copy_out_s"] >= 0
        assert (rec["copy_out_s"] > 0) == (ranks > 1)
        assert rec["iteration_s"] - parts < max(0.1 * rec["iteration_s"], 2e-3)
    assert "torch" in m["software"] and "mpi_library" in m["software"]


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "kfac"])
def test_cli_run_writes_measurement_and_ranks_stay_identical(tmp_path, capsys, optimizer):
    out = tmp_path / "m.json"
    cfg = load_config(model="resnet20", system="local", batch=16, optimizer=optimizer,
                      optimizer_options={"refresh_interval": 2} if optimizer == "kfac" else None)
    m = launch(cfg, 2, iterations=3, warmup_iterations=1, out=str(out), extra={"check_params": True})
    assert json.loads(out.read_text())["config_hash"] == cfg.replace(dataset="cifar10").config_hash
    _check_measurement(m, 2, 3, 1)
    digests = [[rec["param_digest"] for rec in r] for r in m["records"]]
    assert digests[0] == digests[1], "ranks hold different parameters after a step"
    assert len(set(digests[0])) == len(digests[0]), "parameters did not change between steps"


def test_cli_issue_command_resnet18(tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["run", "--model", "resnet18", "--system", "local", "--batch", "8", "--optimizer", "sgd",
               "--ranks", "2", "--iterations", "2", "--warmup-iterations", "1", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ranks"] == 2 and summary["iteration_s"] > 0
    _check_measurement(json.loads(out.read_text()), 2, 2, 1)


def test_four_ranks_and_explicit_algorithm(tmp_path):
    cfg = load_config(model="tiny", system="local", batch=16, optimizer="sgd", allreduce="halving_doubling",
                      bucket_bytes=2000.0)
    m = launch(cfg, 4, iterations=2, warmup_iterations=1, out=str(tmp_path / "m.json"), extra={"check_params": True})
    _check_measurement(m, 4, 2, 1)
    assert m["allreduce_algorithm"] == "halving_doubling"
    assert len({tuple(rec["param_digest"] for rec in r) for r in m["records"]}) == 1
    assert len(m["buckets_rank0"][0]) >= 2  # 2 KB buckets split the 6 KB of tiny's gradients


def test_single_rank_without_mpiexec_and_torch_backend(tmp_path):
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    one = launch(cfg, 1, iterations=2, warmup_iterations=0, out=str(tmp_path / "one.json"))
    assert one["launcher"] == "none" and one["breakdown"]["comm_total_s"] == 0
    gloo = launch(cfg, 2, iterations=2, warmup_iterations=1, out=str(tmp_path / "gloo.json"), backend="torch",
                  extra={"check_params": True})
    _check_measurement(gloo, 2, 2, 1)
    assert gloo["backend"] == "torch"
    assert [r["param_digest"] for r in gloo["records"][0]] == [r["param_digest"] for r in gloo["records"][1]]


def test_the_temporary_run_folder_goes_after_success_and_stays_after_a_failure(tmp_path, monkeypatch):
    """Without ``out`` the measurement is read from the job's own temporary folder, which is then removed (a
    full validation makes a hundred runs); a failed run keeps it, since the error names it for the logs."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    m = launch(cfg, 1, iterations=1, warmup_iterations=0)
    assert m["iteration_s"] > 0 and not list(tmp_path.glob("ttt-run-*"))
    with pytest.raises(RunFailed) as info:
        launch(cfg, 1, iterations=3, warmup_iterations=0, timeout_s=120,
               extra={"fault": {"rank": 0, "iteration": 1, "kind": "raise"}})
    kept = list(tmp_path.glob("ttt-run-*"))
    assert len(kept) == 1 and str(kept[0]) in str(info.value) and (kept[0] / "spec.json").is_file()


def test_speed_probe_is_recorded_outside_the_timed_iteration(tmp_path):
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    m = launch(cfg, 2, iterations=3, warmup_iterations=1, out=str(tmp_path / "m.json"),
               extra={"speed_probe": True, "check_params": True})
    _check_measurement(m, 2, 3, 1)   # the parts still add up to the iteration: the probe is outside it
    probes = [[rec["probe_s"] for rec in r] for r in m["records"]]
    assert all(p > 0 for r in probes for p in r)
    slowest = sorted(max(r[i] for r in probes) for i in range(1, 4))   # measured iterations only
    assert m["speed_probe"]["median_s"] == pytest.approx(slowest[1])
    assert m["speed_probe"]["typical_s"] == pytest.approx((slowest[0] + slowest[1]) / 2)   # fastest half's median
    assert m["speed_probe"]["model"] == "tiny" and "maximum over ranks" in m["speed_probe"]["statistic"]
    # the cold sample of each pair is kept beside the warm one (the statistic), with its own typical value
    colds = [[rec["probe_cold_s"] for rec in r] for r in m["records"]]
    cold_slowest = sorted(max(r[i] for r in colds) for i in range(1, 4))
    assert m["speed_probe"]["cold_typical_s"] == pytest.approx((cold_slowest[0] + cold_slowest[1]) / 2)
    assert len({tuple(rec["param_digest"] for rec in r) for r in m["records"]}) == 1   # training unaffected
    plain = launch(cfg, 1, iterations=1, warmup_iterations=0, out=str(tmp_path / "p.json"))
    assert "speed_probe" not in plain and "probe_s" not in plain["records"][0][0]


def test_speed_probe_leaves_the_global_generator_alone():
    import torch

    from executor.speed_probe import SpeedProbe

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    probe = SpeedProbe()
    assert torch.equal(torch.rand(3), expected)
    assert 0 < probe.sample() < 5.0


def test_trace_files_are_chrome_traces(tmp_path):
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    launch(cfg, 2, iterations=2, warmup_iterations=0, out=str(tmp_path / "m.json"), trace_dir=str(tmp_path / "tr"))
    for rank in (0, 1):
        trace = json.loads((tmp_path / "tr" / f"trace-rank{rank}.json").read_text())
        events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
        assert {e["name"] for e in events} >= {"forward", "backward", "optimizer", "allreduce bucket 0"}
        for tid in {e["tid"] for e in events}:
            ts = [e["ts"] for e in events if e["tid"] == tid]
            assert ts == sorted(ts) and all(e["dur"] >= 0 for e in events)


@pytest.mark.parametrize("kind", ["raise", "kill"])
def test_failing_rank_ends_the_job_quickly_and_names_it(tmp_path, kind):
    out = tmp_path / "m.json"
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        launch(cfg, 2, iterations=50, warmup_iterations=0, out=str(out), timeout_s=120,
               extra={"fault": {"rank": 1, "iteration": 2, "kind": kind}})
    assert time.monotonic() - start < 60
    msg = str(info.value)
    assert "rank 1" in msg and "\n" not in msg
    assert ("injected fault" in msg) if kind == "raise" else ("signal 9" in msg or "Killed" in msg)
    assert not out.exists()
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written temporary file either


def test_killing_a_rank_from_outside_ends_the_cli_within_60s(tmp_path):
    """The issue's fault test: a rank killed mid-run (SIGKILL from outside) ends `perfmodel run`."""
    run_dir, out = tmp_path / "run", tmp_path / "m.json"
    code = (
        "import sys; from perfmodel.config import load_config; from executor.launch import launch, RunFailed\n"
        "cfg = load_config(model='tiny', system='local', batch=8, optimizer='sgd')\n"
        f"try:\n    launch(cfg, 2, iterations=100000, warmup_iterations=0, out={str(out)!r}, run_dir={str(run_dir)!r})\n"
        "except RunFailed as e:\n    print(e, file=sys.stderr); sys.exit(3)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    pid_file = run_dir / "pids" / "rank-1.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None, "rank 1 never started"
        time.sleep(0.2)
    time.sleep(3.0)  # well inside the training loop
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 60
    assert proc.returncode == 3
    assert "rank 1" in err and ("signal 9" in err or "Killed" in err)
    assert not out.exists()


def test_bad_run_input_is_one_line_exit_2(capsys):
    assert main(["run", "--model", "tiny", "--batch", "9", "--ranks", "2", "--system", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.batch" in err[0]
    assert main(["run", "--model", "tiny", "--batch", "8", "--ranks", "0", "--system", "local"]) == 2
    assert "ranks" in capsys.readouterr().err


def test_hostfile_launch(tmp_path):
    """Multi-host launch path: an MPICH hydra host file (here naming this host, so no ssh is needed)."""
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("localhost:2\n")
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    m = launch(cfg, 2, iterations=1, warmup_iterations=0, out=str(tmp_path / "m.json"), hostfile=str(hosts))
    assert m["ranks"] == 2 and m["launcher"] == "mpiexec"
    with pytest.raises(Exception, match="hostfile"):
        launch(cfg, 2, iterations=1, hostfile=str(tmp_path / "missing.txt"))


@pytest.mark.skipif(__import__("shutil").which("srun") is None,
                    reason="Slurm's srun is not installed on this machine; the srun path needs a Slurm allocation")
def test_srun_launch(tmp_path):  # pragma: no cover - only where Slurm exists
    cfg = load_config(model="tiny", system="local", batch=8, optimizer="sgd")
    m = launch(cfg, 2, iterations=1, warmup_iterations=0, out=str(tmp_path / "m.json"), launcher="srun")
    assert m["ranks"] == 2
