"""executor.speed_probe.start_together: the ranks on several nodes start their speed probes at one instant of
the wall clock that rank 0 announces after a barrier, far enough ahead for the announcement to reach them
(twice rank 0's barrier time, within the bounds). A fake clock and communicator give the known answers; a
real two-rank MPI job checks that the ranks wake within a millisecond of each other."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from executor.speed_probe import START_LEAD_MAX_S, START_LEAD_MIN_S, start_together


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


class _Comm:
    """Rank ``rank``; its barrier takes ``barrier_s`` on the fake clock; ``bcast`` delivers ``announce`` (the
    root's value for rank 0) after ``delivery_s``."""

    def __init__(self, clock, rank, barrier_s, delivery_s=0.0, announce=None):
        self.clock, self.rank, self.barrier_s, self.delivery_s, self.announce = clock, rank, barrier_s, delivery_s, announce

    def Get_rank(self):
        return self.rank

    def Barrier(self):
        self.clock.now += self.barrier_s

    def bcast(self, value, root=0):
        self.clock.now += self.delivery_s
        return value if self.rank == root else self.announce


def test_rank_0_announces_twice_its_barrier_time_ahead_within_the_bounds():
    for barrier_s, lead in ((0.02, 0.04), (0.0001, START_LEAD_MIN_S), (1.0, START_LEAD_MAX_S)):
        clock = _Clock()
        slept = start_together(_Comm(clock, 0, barrier_s), clock=clock, sleep=clock.sleep)
        assert slept == pytest.approx(lead)
        assert clock.now == pytest.approx(100.0 + barrier_s + lead)


def test_other_ranks_sleep_until_the_announced_instant_or_not_at_all_if_it_passed():
    clock = _Clock()
    slept = start_together(_Comm(clock, 1, 0.01, delivery_s=0.005, announce=100.05), clock=clock, sleep=clock.sleep)
    assert slept == pytest.approx(0.035) and clock.now == pytest.approx(100.05)
    clock = _Clock()
    assert start_together(_Comm(clock, 2, 0.01, delivery_s=0.1, announce=100.05), clock=clock, sleep=clock.sleep) == 0.0
    assert clock.now == pytest.approx(100.11)


_PROGRAM = """
import json, sys, time
from mpi4py import MPI
from executor.speed_probe import start_together
comm = MPI.COMM_WORLD
if comm.Get_rank() == 1:
    time.sleep(0.05)            # arrives late at the barrier
woke = []
for _ in range(5):
    start_together(comm)
    woke.append(time.time())
    time.sleep(0.01 * comm.Get_rank())   # leave apart
allw = comm.gather(woke, root=0)
if comm.Get_rank() == 0:
    json.dump(allw, open(sys.argv[1], "w"))
"""


def test_two_ranks_wake_together(tmp_path):
    from executor.launch import find_mpiexec

    prog = tmp_path / "prog.py"
    prog.write_text(_PROGRAM)
    out = tmp_path / "woke.json"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([find_mpiexec(), "-n", "2", sys.executable, str(prog), str(out)], check=True, timeout=120,
                   env=env, capture_output=True)
    a, b = json.loads(out.read_text())
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.002   # one clock: they wake within the sleep's precision
