"""The launcher's one-line diagnosis of a failed job: which rank, and why (executor.launch)."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from executor.launch import _DeathWatch, _diagnose

BANNER = ("=" * 20 + "\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n=   PID {pid} RUNNING AT vm\n"
          "=   EXIT CODE: 9\n=   CLEANING UP REMAINING PROCESSES\n" + "=" * 20 + "\n"
          "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n")


def _pid_files(run_dir, pids):
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    for rank, pid in enumerate(pids):
        (run_dir / "pids" / f"rank-{rank}.pid").write_text(str(pid))


def test_a_rank_report_wins(tmp_path):
    _pid_files(tmp_path, [100, 101])
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "rank-1.txt").write_text("rank 1: ValueError: injected fault\n")
    msg = _diagnose(tmp_path, BANNER.format(pid=100), 1, first_dead=(0, 100))
    assert msg == "rank 1 failed: ValueError: injected fault"


def test_the_banner_names_the_rank_by_its_pid(tmp_path):
    _pid_files(tmp_path, [100, 101])
    msg = _diagnose(tmp_path, BANNER.format(pid=101), 9)
    assert msg == "rank 1 (pid 101 on vm) died: Killed (signal 9)"
    # the rank seen dying first agrees with the banner: the banner's line
    assert _diagnose(tmp_path, BANNER.format(pid=101), 9, first_dead=(1, 101)) == msg


def test_the_first_death_overrides_a_banner_that_names_a_rank_stopped_after_it(tmp_path):
    _pid_files(tmp_path, [100, 101])
    msg = _diagnose(tmp_path, BANNER.format(pid=100), 9, first_dead=(1, 101))
    assert msg.startswith("rank 1 (pid 101) died first") and "signal 9" in msg and "\n" not in msg


def _watch_stand_ins(tmp_path, kills: dict[int, float], clean: tuple[int, ...] = ()):
    """Two stand-in ranks and a stand-in launcher that ends after 1.5 s. Rank r is SIGKILLed after
    ``kills[r]`` seconds; a rank in ``clean`` leaves its .done mark and exits by itself after 0.3 s.
    Returns (the watch after the wait, the ranks' PIDs)."""
    ranks = [subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({0.3 if r in clean else 60})"])
             for r in range(2)]
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        _pid_files(tmp_path, [p.pid for p in ranks])
        for r in clean:
            (tmp_path / "pids" / f"rank-{r}.done").touch()
        for r, delay in kills.items():
            threading.Thread(target=lambda p=ranks[r], d=delay: (time.sleep(d), p.send_signal(signal.SIGKILL))).start()
        watch = _DeathWatch(tmp_path, 2)
        assert watch.wait(job, timeout_s=30) == 0
        return watch, [p.pid for p in ranks]
    finally:
        for p in (*ranks, job):
            p.kill()
            p.wait()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds (os.pidfd_open)")
def test_death_watch_names_the_rank_that_died_first(tmp_path):
    watch, pids = _watch_stand_ins(tmp_path, {1: 0.5, 0: 0.8})   # rank 1 dies, 0.3 s later rank 0
    assert watch.first == (1, pids[1])


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds (os.pidfd_open)")
def test_a_clean_exit_is_not_the_first_death(tmp_path):
    watch, pids = _watch_stand_ins(tmp_path, {1: 0.8}, clean=(0,))   # rank 0 ends cleanly first
    assert watch.first == (1, pids[1])


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds (os.pidfd_open)")
def test_death_watch_keeps_the_deadline(tmp_path):
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watch = _DeathWatch(tmp_path, 2)   # no rank ever writes its PID file
        start = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            watch.wait(job, timeout_s=0.5)
        assert 0.4 < time.monotonic() - start < 5
        assert watch.first is None
    finally:
        job.kill()
        job.wait()
