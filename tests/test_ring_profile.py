"""The measured ring-step profile of a network (``[network.ring_profile]``, the emulated cluster's link
calibration on 3 or more hosts): the spec round trip and its checks, and the collective models pricing the
steps that are a shift (some flow ``a -> b`` without ``b -> a``) at that measurement (perfmodel.network).

Known answers: the ring allreduce on the ``p`` measured hosts is exactly its ``2 (p - 1)`` measured ring
steps of ``n / p`` bytes plus its ``(p - 1)`` reductions of ``n / p`` bytes; algorithms made of exchanges
(recursive doubling, halving-doubling) and the ring on 2 hosts (an exchange) do not use the table.
"""
from __future__ import annotations

import dataclasses

import pytest

from executor.cluster.measure import link_problems
from executor.cluster.plan import ClusterConfig
from hardware.catalog import load_system
from hardware.errors import SpecError
from perfmodel.network import collective_profile, reduce_gamma_s_per_B
from tests.test_exchange_profile import rewrite_table

RATE, LAT = 1.1e8, 0.0248            # the exchange profile's fitted line: 24.8 ms + n / 110 MB/s
SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]


def _line(n: float) -> float:
    return LAT + n / RATE


def _ring_step(n: float) -> float:
    """A made-up ring step: 3 ms under the exchange line at 64 KiB, 1 ms over it at 16 MiB (log-linear)."""
    import math
    return _line(n) - 3e-3 + 4e-3 * (math.log2(n / (64 << 10)) / 8)


def _emulated(tmp_path, monkeypatch, ring=True, hosts=4):
    from executor.cluster.spec import write_spec

    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path))
    monkeypatch.setenv("TTT_LOCAL_SPEC", "")
    monkeypatch.setenv("TTT_CACHE_DIR", "")
    measured = {"rate_Bps": RATE, "latency_s": LAT, "hosts": [0, 1], "pairs": [[0, 1], [2, 3]],
                "sizes": SIZES, "times_s": [_line(n) for n in SIZES]}
    if ring:
        measured.update(ring_sizes=SIZES, ring_times_s=[_ring_step(n) for n in SIZES])
    write_spec(tmp_path, ClusterConfig(hosts=hosts, link_gbps=1, latency_us=5000), "local", measured=measured)
    return load_system("emulated")


def _without_ring(s):
    return dataclasses.replace(s, network=dataclasses.replace(s.network, ring_profile=()))


def test_the_spec_carries_the_ring_profile(tmp_path, monkeypatch):
    s = _emulated(tmp_path, monkeypatch)
    assert [b for b, _ in s.network.ring_profile] == SIZES
    assert [t for _, t in s.network.ring_profile] == pytest.approx([_ring_step(n) for n in SIZES], rel=1e-5)
    assert "ring step" in s.sources["network.ring_profile.seconds"]
    assert "0 -> 1 -> ... -> 3 -> 0" in s.sources["network.ring_profile.seconds"]
    # a measurement without ring steps (2 hosts, or an older one): no table
    assert _emulated(tmp_path, monkeypatch, ring=False).network.ring_profile == ()


@pytest.mark.parametrize("n", [1 << 20, 3 << 20, 16 << 20, 64 << 20])
def test_the_ring_allreduce_costs_its_measured_steps_plus_its_reductions(tmp_path, monkeypatch, n):
    s = _emulated(tmp_path, monkeypatch)
    p = 4
    m = n / p
    # 3 MiB: 768 KiB steps, between measured sizes, where the model interpolates the residual from the step's
    # graph price (24.8 ms + m / 110 MB/s on this single switch) in log size: this table's residual is
    # log-linear, so the interpolation is exact
    step = _ring_step(m)
    reductions = (p - 1) * m * reduce_gamma_s_per_B(s)
    got = float(collective_profile(s, p, 1, "ring").time_s(n))
    assert got == pytest.approx(2 * (p - 1) * step + reductions, rel=1e-5)   # the spec's 6 digits


@pytest.mark.parametrize("algorithm", ["recursive_doubling", "halving_doubling"])
def test_exchange_algorithms_do_not_use_the_ring_profile(tmp_path, monkeypatch, algorithm):
    s = _emulated(tmp_path, monkeypatch)
    for n in (1 << 20, 16 << 20):
        assert float(collective_profile(s, 4, 1, algorithm).time_s(n)) == \
            pytest.approx(float(collective_profile(_without_ring(s), 4, 1, algorithm).time_s(n)), rel=1e-12)
    # the ring itself does
    assert float(collective_profile(s, 4, 1, "ring").time_s(1 << 20)) != \
        pytest.approx(float(collective_profile(_without_ring(s), 4, 1, "ring").time_s(1 << 20)), rel=1e-3)


def test_a_ring_on_two_hosts_is_an_exchange(tmp_path, monkeypatch):
    s = _emulated(tmp_path, monkeypatch)
    assert float(collective_profile(s, 2, 1, "ring").time_s(4 << 20)) == \
        pytest.approx(float(collective_profile(_without_ring(s), 2, 1, "ring").time_s(4 << 20)), rel=1e-12)


def test_the_disk_cache_keeps_the_ring_steps(tmp_path, monkeypatch):
    s = _emulated(tmp_path, monkeypatch)
    monkeypatch.setenv("TTT_CACHE_DIR", str(tmp_path / "cache"))
    collective_profile.cache_clear()
    first = float(collective_profile(s, 4, 1, "ring").time_s(1 << 20))
    assert list((tmp_path / "cache").glob("*.json"))
    collective_profile.cache_clear()
    second = collective_profile(s, 4, 1, "ring")      # read back from the disk cache
    assert second.ring_steps and float(second.time_s(1 << 20)) == pytest.approx(first, rel=1e-12)
    collective_profile.cache_clear()


@pytest.mark.parametrize("edit, field", [
    ('seconds = [0.02, 0.03]', "ring_profile.seconds"),                       # one time per size
    ('bytes = [2048, 1024]\nseconds = [0.02, 0.03]', "ring_profile.bytes"),   # increasing
])
def test_a_bad_ring_profile_is_one_clear_error(tmp_path, monkeypatch, edit, field):
    s = _emulated(tmp_path, monkeypatch)
    rewrite_table(s.source_file, "network.ring_profile", edit)
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        load_system(s.source_file)


def test_link_problems_checks_the_ring_steps_too():
    doc = {"rate_Bps": RATE, "sizes": SIZES, "times_s": [_line(n) for n in SIZES]}
    assert link_problems(doc, 1.2e8) == []
    bad = dict(doc, ring_sizes=SIZES, ring_times_s=[_line(n) for n in SIZES])
    bad["ring_times_s"][2] = 1.2 * bad["ring_times_s"][3]   # 1 MiB ring steps slower than the 4 MiB ones
    problems = link_problems(bad, 1.2e8)
    assert len(problems) == 1 and problems[0].startswith("ring steps of 1024 KiB")


def test_the_bring_up_measurement_times_ring_steps_on_three_ranks(tmp_path):
    """executor.cluster.measure's program under a plain mpiexec (shared memory, no namespaces): with the ring
    of 3 ranks it reports a ring step per size beside the pairwise exchanges, every one a positive time that
    grows with the size, and the spec lines carry it."""
    import json
    import os
    import subprocess
    import sys

    from executor.cluster.spec import exchange_profile_lines
    from executor.launch import find_mpiexec

    out = tmp_path / "link.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([find_mpiexec(), "-n", "3", sys.executable, "-m", "executor.cluster.measure", str(out),
                    "[[0, 1]]", "[0, 1, 2]"], check=True, timeout=240, env=env, capture_output=True)
    doc = json.loads(out.read_text())
    assert doc["ring_sizes"] == doc["sizes"] and len(doc["ring_times_s"]) == len(doc["sizes"])
    assert all(t > 0 for t in doc["ring_times_s"])
    assert doc["ring_times_s"][-1] > doc["ring_times_s"][0]    # 16 MiB against 64 KiB
    lines, src = exchange_profile_lines(ClusterConfig(hosts=3, link_gbps=1, latency_us=100), doc)
    assert "[network.ring_profile]" in lines and "network.ring_profile.seconds" in src
    # two ranks: no ring (a ring of two is an exchange)
    out2 = tmp_path / "link2.json"
    subprocess.run([find_mpiexec(), "-n", "2", sys.executable, "-m", "executor.cluster.measure", str(out2),
                    "[[0, 1]]", "[0, 1]"], check=True, timeout=240, env=env, capture_output=True)
    assert "ring_sizes" not in json.loads(out2.read_text())


class _SkewedComm:
    """A stand-in for an MPI communicator whose peer leaves every barrier ``skew_s`` late: the first
    ``Sendrecv`` after a barrier waits that long, every other one takes ``step_s``. Records the sizes."""

    def __init__(self, skew_s: float, step_s: float):
        self.skew_s, self.step_s, self.after_barrier, self.sizes = skew_s, step_s, False, []

    def Barrier(self):
        self.after_barrier = True

    def Sendrecv(self, send, dest, sendtag, recv, source, recvtag):
        import time

        time.sleep(self.skew_s if self.after_barrier else self.step_s)
        self.after_barrier = False
        self.sizes.append(send.nbytes)

    def allreduce(self, value, op=None):
        return value


def test_the_link_calibration_times_steps_in_step_and_interleaves_the_sizes():
    """The barrier's skew does not enter the timed steps (an untimed step follows each barrier): with a peer
    50 ms late out of every barrier and 5 ms steps, every timed block gives about 5 ms per step (timed from
    the barrier: (50 + 2 x 5) / 2 = 30 ms at 2 steps per block). The sizes alternate round by round, and the
    first round is warm-up."""
    from executor.cluster.measure import MAX_ROUNDS, _step_times

    comm = _SkewedComm(skew_s=0.05, step_s=0.005)
    sizes = (2 << 20, 4 << 20)                      # 2 steps per block each (about 4 MiB per block, at least 2)
    times = _step_times(comm, 1, 1, sizes=sizes)
    assert set(times) == set(sizes)
    for n in sizes:
        assert len(times[n]) == MAX_ROUNDS - 1      # 5 ms steps never reach the timed total: every round ran
        assert all(0.004 < t < 0.02 for t in times[n]), (n, times[n])   # not 30 ms
    # per round: one untimed step and 2 timed ones of 2 MiB, then the same of 4 MiB
    assert comm.sizes[:6] == [2 << 20] * 3 + [4 << 20] * 3
    assert comm.sizes[6:12] == comm.sizes[:6]
