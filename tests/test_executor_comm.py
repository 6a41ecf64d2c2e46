"""Tests of the executor's communication layer (executor/comm, executor/mpi_utils, executor/bench_allreduce).

Every test launches MPI jobs as subprocesses (``mpiexec -n P python tests/mpi_scripts/<script>``) with a
timeout, so the pytest process never initialises MPI and a hang turns into a failure, not a stuck suite.
The scripts raise on any wrong result; under ``run_guarded`` that aborts the job (non-zero exit, the failing
check on stderr). What is checked:

* check_collectives.py at p = 2, 3, 4, 5: every allreduce algorithm (ring, recursive doubling, halving-
  doubling, hierarchical with several node sizes, inter algorithms and both variants, MPI) equals the sum of
  all ranks' inputs (regenerated on every rank from the same seeds), exactly for integer-valued float32
  and within tolerance for random floats and float64, for sizes 1 .. 4099 including sizes not divisible by
  p; results are bit-identical on every rank; ring, recursive doubling and halving-doubling send, on every
  rank, exactly the messages and bytes of perfmodel.collectives' step patterns (non-power-of-two pre/post
  steps included); the non-blocking variant (several in flight, one running at a time); ring/MPI
  reduce-scatter and all-gather with even and uneven counts (zeros included); binomial and MPI broadcast
  from several roots; torch tensors in place (p = 2);
* check_bucketer.py: gradients after backward + finish() equal the average of the per-rank gradients,
  with overlap on and off, four bucket configurations, several algorithms, two iterations; the bucket
  assignment is perfmodel.overlap.assign_buckets; the timings obey the rule; torch.distributed (gloo);
* check_guard.py: an exception on rank 1, a rank missing a barrier, an exception in the communication
  thread each end the job non-zero within 30 s with the failing rank on stderr;
* executor/bench_allreduce.py at p = 2: JSON with positive latencies and finite bus bandwidths.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.mpi

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tests" / "mpi_scripts"
PYTHON = sys.executable


def _mpiexec() -> str | None:
    local = Path(PYTHON).parent / "mpiexec"
    if local.exists():
        return str(local)
    return shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found (install the mpich wheel)")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def mpirun(n: int, args: list[str], timeout_s: float = 60.0) -> tuple[int, str, str, float]:
    """Run ``mpiexec -n n python *args`` in its own process group; (returncode, stdout, stderr, seconds).

    On timeout the whole process group (mpiexec and its ranks, all started here) is killed and the test
    fails."""
    cmd = [MPIEXEC, "-n", str(n), PYTHON, *args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd[2:])} did not finish within {timeout_s} s (hang)\nstdout:\n{out}\n"
                    f"stderr:\n{err}")
    return proc.returncode, out, err, time.monotonic() - t0


def run_ok(n: int, args: list[str], timeout_s: float = 60.0) -> str:
    rc, out, err, _ = mpirun(n, args, timeout_s)
    assert rc == 0, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    return out


@needs_mpi
def test_single_process_checks():
    """Registry names and errors, p = 1 behaviour, input checks, helper functions (MPI singleton)."""
    proc = subprocess.run([PYTHON, str(SCRIPTS / "check_local.py")], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("local OK"), proc.stdout


@needs_mpi
@pytest.mark.parametrize("p", [2, 3, 4, 5])
def test_collectives_equal_reference_sum(p):
    extra = ["--torch"] if p == 2 else []
    out = run_ok(p, [str(SCRIPTS / "check_collectives.py"), *extra], timeout_s=120)
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"collectives OK p={p} checks="), out
    assert int(line.rsplit("=", 1)[1]) >= 400 * p  # every rank ran its hundreds of checks


@needs_mpi
@pytest.mark.parametrize("p,args", [
    (2, []),
    (3, ["--algorithms", "ring,hier"]),
    (2, ["--torch-dist"]),
], ids=["mpi-p2", "mpi-p3", "gloo-p2"])
def test_bucketer_averages_gradients(p, args):
    out = run_ok(p, [str(SCRIPTS / "check_bucketer.py"), *args], timeout_s=120)
    assert f"bucketer OK p={p} configs=" in out, out


@needs_mpi
@pytest.mark.parametrize("mode,needle", [
    ("raise", "rank 1: ValueError: boom"),
    ("barrier_timeout", "rank 0: BarrierTimeout: barrier not reached"),
    ("comm_thread", "rank 1: RuntimeError: thread boom (communication thread)"),
])
def test_failing_rank_aborts_job(mode, needle):
    p = 2 if mode == "barrier_timeout" else 3  # at 2 ranks only rank 0 waits in the barrier
    rc, out, err, secs = mpirun(p, [str(SCRIPTS / "check_guard.py"), mode], timeout_s=30)
    assert rc != 0, f"job should fail\nstdout:\n{out}\nstderr:\n{err}"
    assert needle in err, err
    assert secs < 30


@needs_mpi
def test_guarded_success_exits_zero():
    out = run_ok(2, [str(SCRIPTS / "check_guard.py"), "ok"], timeout_s=30)
    assert "guard OK" in out


@needs_mpi
def test_bench_allreduce_small_sizes(tmp_path):
    dest = tmp_path / "bench.json"
    out = run_ok(2, ["-m", "executor.bench_allreduce", "--max-bytes", "1K", "--factor", "4", "--iterations", "5",
                     "--warmup", "1", "--out", str(dest)], timeout_s=60)
    doc = json.loads(out)
    assert json.loads(dest.read_text()) == doc
    assert doc["ranks"] == 2 and doc["benchmark"] == "allreduce"
    rows = doc["results"]
    algs = ["ring", "recursive_doubling", "halving_doubling", "hierarchical", "mpi"]
    assert [(r["algorithm"], r["nbytes"]) for r in rows] == [(a, n) for a in algs for n in (4, 16, 64, 256, 1024)]
    for r in rows:
        assert r["correct"] is True
        assert r["count"] * 4 == r["nbytes"] and r["iterations"] == 5 and r["warmup"] == 1
        assert 0 < r["time_min_s"] <= r["time_avg_s"] <= r["time_s"] < 1.0
        assert r["algbw_Bps"] == pytest.approx(r["nbytes"] / r["time_s"])
        # nccl-tests bus bandwidth: algbw * 2(p-1)/p = algbw at p = 2
        assert 0 < r["busbw_Bps"] < float("inf")
        assert r["busbw_Bps"] == pytest.approx(r["algbw_Bps"])


@needs_mpi
def test_bench_allreduce_table_format():
    out = run_ok(2, ["-m", "executor.bench_allreduce", "--max-bytes", "64", "--factor", "4", "--iterations", "2",
                     "--warmup", "0", "--algorithms", "ring,mpi", "--format", "table"], timeout_s=60)
    lines = out.strip().splitlines()
    assert "ring" in lines[1] and "mpi" in lines[1]
    assert [ln.split()[0] for ln in lines[2:]] == ["4", "16", "64"]
