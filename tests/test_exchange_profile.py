"""The measured exchange profile of a network (``[network.exchange_profile]``, the emulated cluster's link
calibration): the spec round trip and its checks, and the collective models adding, per inter-node step,
the measurement's residual from the fitted line at that step's message size (perfmodel.network).

Known answers: ring allreduce on ``p`` hosts has ``2 (p - 1)`` inter-node steps of ``n / p`` bytes, recursive
doubling ``log2 p`` steps of ``n``, halving-doubling ``2 log2 p`` steps of ``n / 2, n / 4, ...`` (each size
twice); with a table whose residual is a constant ``r`` every algorithm gains exactly ``steps x r``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from executor.cluster.plan import ClusterConfig
from hardware.catalog import load_system
from hardware.errors import SpecError
from perfmodel.network import collective_profile, exchange_residual_s

RATE, LAT = 1.1e8, 0.0248            # the fitted line: 24.8 ms + n / 110 MB/s
SIZES = [256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20]


def _line(n: float) -> float:
    return LAT + n / RATE


def _emulated(tmp_path, monkeypatch, times, hosts=4):
    from executor.cluster.spec import write_spec

    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path))
    monkeypatch.setenv("TTT_LOCAL_SPEC", "")
    monkeypatch.setenv("TTT_CACHE_DIR", "")
    measured = {"rate_Bps": RATE, "latency_s": LAT, "hosts": [0, 1], "pairs": [[0, 1], [2, 3]],
                "sizes": SIZES, "times_s": times}
    write_spec(tmp_path, ClusterConfig(hosts=hosts, link_gbps=1, latency_us=5000), "local", measured=measured)
    return load_system("emulated")


def test_the_spec_carries_the_measured_profile(tmp_path, monkeypatch):
    times = [_line(n) - 4e-3 for n in SIZES]
    s = _emulated(tmp_path, monkeypatch, times)
    assert [b for b, _ in s.network.exchange_profile] == SIZES
    assert [t for _, t in s.network.exchange_profile] == pytest.approx(times, rel=1e-5)
    assert "per size" in s.sources["network.exchange_profile.seconds"]
    assert [r for _, r in exchange_residual_s(s.network)] == pytest.approx([-4e-3] * 6, abs=2e-7)
    # without per-size times (an older measurement): no table, a purely linear spec
    s0 = _emulated(tmp_path, monkeypatch, [])
    assert s0.network.exchange_profile == () and exchange_residual_s(s0.network) == ()


def rewrite_table(path, table: str, edit: str) -> None:
    """Replace the body of ``[table]`` in the spec file ``path`` by ``edit`` (its ``bytes`` line kept when
    ``edit`` has none)."""
    text = open(path, encoding="utf-8").read()
    head, rest = text.split(f"[{table}]\n", 1)
    body, tail = rest.split("\n\n", 1)
    if "bytes" not in edit:
        edit = body.splitlines()[0] + "\n" + edit
    open(path, "w", encoding="utf-8").write(head + f"[{table}]\n" + edit + "\n\n" + tail)


@pytest.mark.parametrize("edit, field", [
    ('seconds = [0.02, 0.03]', "exchange_profile.seconds"),                 # one time per size
    ('bytes = [1024]\nseconds = [0.02]', "exchange_profile.bytes"),           # at least two sizes
    ('bytes = [2048, 1024]\nseconds = [0.02, 0.03]', "exchange_profile.bytes"),  # increasing
    ('bytes = [1024, 2048]\nseconds = [0.02, -1.0]', "exchange_profile.seconds"),  # positive times
])
def test_a_bad_profile_is_one_clear_error(tmp_path, monkeypatch, edit, field):
    s = _emulated(tmp_path, monkeypatch, [_line(n) for n in SIZES])
    rewrite_table(s.source_file, "network.exchange_profile", edit)
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        load_system(s.source_file)


@pytest.mark.parametrize("algorithm, steps", [("ring", 6), ("recursive_doubling", 2), ("halving_doubling", 4)])
def test_a_constant_residual_adds_it_once_per_inter_node_step(tmp_path, monkeypatch, algorithm, steps):
    s = _emulated(tmp_path, monkeypatch, [_line(n) + 3e-3 for n in SIZES])
    flat = dataclasses.replace(s, network=dataclasses.replace(s.network, exchange_profile=()))
    for n in (1 << 20, 16 << 20, 1 << 10):
        with_table = float(collective_profile(s, 4, 1, algorithm).time_s(n))
        without = float(collective_profile(flat, 4, 1, algorithm).time_s(n))
        assert with_table - without == pytest.approx(steps * 3e-3, rel=1e-4)


def test_the_residual_is_read_at_each_steps_message_size(tmp_path, monkeypatch):
    # residual -1 ms at 256 KiB rising to +4 ms at 8 MiB, 1 ms per doubling: residual(m) = (log2(m / 256K) - 1) ms
    times = [_line(n) + (k - 1) * 1e-3 for k, n in enumerate(SIZES)]
    s = _emulated(tmp_path, monkeypatch, times)
    flat = dataclasses.replace(s, network=dataclasses.replace(s.network, exchange_profile=()))

    def resid(m):
        return (min(max(math.log2(m / (256 << 10)), 0.0), 5.0) - 1.0) * 1e-3

    def extra(alg, n):
        return float(collective_profile(s, 4, 1, alg).time_s(n) - collective_profile(flat, 4, 1, alg).time_s(n))

    n = 4 << 20
    assert extra("ring", n) == pytest.approx(6 * resid(n / 4), rel=1e-4)                      # 1 MiB chunks: +1 ms
    assert extra("recursive_doubling", n) == pytest.approx(2 * resid(n), rel=1e-4)            # 4 MiB: +3 ms
    assert extra("halving_doubling", n) == pytest.approx(2 * (resid(n / 2) + resid(n / 4)), rel=1e-4)
    # between measured sizes: interpolated in log size (3 MiB: +2.585 ms); outside them: the end values
    assert extra("recursive_doubling", 3 << 20) == pytest.approx(2 * resid(3 << 20), rel=1e-4)
    assert extra("recursive_doubling", 64 << 20) == pytest.approx(2 * 4e-3, rel=1e-4)
    assert extra("ring", 256) == pytest.approx(6 * -1e-3, rel=1e-4)
    np.testing.assert_allclose(collective_profile(s, 4, 1, "ring").time_s(np.array([n, n])), extra("ring", n)
                               + float(collective_profile(flat, 4, 1, "ring").time_s(n)), rtol=1e-9)


def test_ranks_on_one_host_exchange_without_the_residual(tmp_path, monkeypatch):
    s = _emulated(tmp_path, monkeypatch, [_line(n) + 3e-3 for n in SIZES])
    flat = dataclasses.replace(s, network=dataclasses.replace(s.network, exchange_profile=()))
    # 2 ranks on one host: shared memory only, nothing crosses the network
    assert float(collective_profile(s, 1, 2, "ring").time_s(1 << 20)) == \
        pytest.approx(float(collective_profile(flat, 1, 2, "ring").time_s(1 << 20)))


def test_the_offline_what_if_rescores_a_result_file(tmp_path, monkeypatch, capsys):
    """benchmarks/emulated_profile_whatif.py: a measured ring allreduce exactly as the profile prices it is
    0 % with the profile and off by the residual without it; a network without per-size times is skipped."""
    import importlib.util
    import json
    from pathlib import Path

    monkeypatch.setenv("TTT_LOCAL_SPEC", "")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "emulated_profile_whatif.py"
    spec = importlib.util.spec_from_file_location("emulated_profile_whatif", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = _emulated(tmp_path / "a", monkeypatch, [_line(n) + 3e-3 for n in SIZES])
    t = float(collective_profile(s, 4, 1, "ring").time_s(4 << 20))
    net = {"hosts": 4, "link_gbps": 1.0, "latency_us": 5000.0}
    link = {"latency_s": LAT, "rate_Bps": RATE, "sizes": SIZES, "times_s": [_line(n) + 3e-3 for n in SIZES]}
    rows = [{"algorithm": "ring", "bytes": 4 << 20, "ranks": 4, "measured_s": t},
            {"algorithm": "ring", "bytes": 64 << 10, "ranks": 4, "measured_s": 1.0}]   # below 1 MiB: not scored
    doc = {"summary": {}, "results": [{"network": net, "measured_link": link, "allreduce": rows},
                                      {"network": net, "measured_link": {"latency_s": LAT, "rate_Bps": RATE},
                                       "allreduce": rows, "description": "old"}]}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert mod.main([str(tmp_path / "r.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["with_profile"]["count"] == 1 and out["with_profile"]["max_abs_pct"] == pytest.approx(0.0, abs=1e-6)
    assert out["without_profile"]["max_abs_pct"] == pytest.approx(100 * 6 * 3e-3 / t, rel=1e-4)
    assert out["skipped_networks"] == ["old"]
    assert "iterations" not in out
    # --iterations: a training iteration measured exactly as the current model predicts it is 0 % (no probe:
    # unscaled), and one measured 10 % faster is +11.1 %
    it = {"model": "resnet20", "batch": 64, "ranks": 4, "nodes": 4, "ranks_per_node": 1, "algorithm": "ring",
          "optimizer": "sgd", "optimizer_options": {}, "speed_probe_s": None}
    _emulated(tmp_path / "b", monkeypatch, [_line(n) + 3e-3 for n in SIZES])   # the same spec, registered again
    _, raw = mod._iteration_prediction(it)
    doc["results"][0]["iterations"] = [{**it, "measured_s": raw}, {**it, "measured_s": 0.9 * raw}]
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert mod.main([str(tmp_path / "r.json"), "--iterations", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["iterations"]["count"] == 2 and out["iterations"]["within_10pct"] == 1
    assert out["iterations"]["max_abs_pct"] == pytest.approx(100 / 9, rel=1e-6)
    assert mod.main([str(tmp_path / "missing.json")]) == 2
    assert "results = " in capsys.readouterr().err
