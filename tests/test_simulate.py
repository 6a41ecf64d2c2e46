"""Tests of the discrete-event simulator (perfmodel.simulate, perfmodel.sim): equivalence with the analytic
model, the flow network against the analytic collective profiles and closed-form max-min fair shares,
variability against the expected maximum of N draws (numerical integral), determinism, contention,
tails, the Chrome trace, and the command line."""
from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import integrate, stats

from hardware.catalog import load_system
from hardware.errors import ConfigError
from perfmodel.cli.main import main
from perfmodel.collectives import ALGORITHMS
from perfmodel.config import load_config
from perfmodel.network import collective_profile, reduce_gamma_s_per_B
from perfmodel.predict import predict
from perfmodel.sim.flows import collective_plan, max_min_rates, slowest_flow_gap
from perfmodel.sim.variability import Variability
from perfmodel.simulate import simulate, tail_vs_ranks

CONTRACT_KEYS = ("time_to_train_s", "epochs", "iterations", "iteration_s", "images_per_s", "scaling_efficiency")
BREAKDOWN_KEYS = ("compute_s", "comm_total_s", "comm_exposed_s", "optimizer_s", "io_s")


def _cfg(system, nodes, batch, optimizer="sgd", overlap=True, bucket_mb=25.0, allreduce=None, rpn=None, epochs=1.0):
    return load_config(None, system=system, nodes=nodes, batch=batch, optimizer=optimizer, overlap=overlap,
                       bucket_bytes=bucket_mb * 1e6, allreduce=allreduce, ranks_per_node=rpn, epochs=epochs)


# ---------------------------------------------------------------------------------------------------------
# equivalence with the analytic model (no jitter, no background, one bucket in flight)
# ---------------------------------------------------------------------------------------------------------
GRID = [
    # system, nodes, global batch, optimizer, overlap, bucket MB, allreduce, ranks per node
    ("big-basin-p100", 1, 256, "sgd", True, 25.0, None, None),
    ("big-basin-p100", 4, 1024, "kfac", True, 25.0, None, None),
    ("big-basin-p100", 16, 2048, "lars", False, 4.0, None, None),
    ("dgx1-v100", 2, 512, "sgd", False, 25.0, None, None),
    ("dgx1-v100", 8, 2048, "kfac", True, 4.0, None, None),
    ("dgx1-v100", 4, 1024, "sgd", True, 25.0, "hierarchical", None),
    ("dgx1-v100", 64, 16384, "sgd", True, 25.0, None, None),
    ("stampede2-knl", 1, 64, "kfac", True, 25.0, None, None),
    ("stampede2-knl", 8, 512, "sgd", False, 25.0, "ring", None),
    ("stampede2-knl", 16, 1024, "lars", True, 4.0, None, None),
    ("stampede2-knl", 64, 4096, "sgd", False, 25.0, None, None),
    ("marenostrum4", 4, 512, "sgd", True, 4.0, None, None),
    ("marenostrum4", 2, 256, "lars", True, 25.0, None, 4),      # two ranks per socket: shared-memory copies
    ("marenostrum4", 32, 2048, "kfac", False, 25.0, None, None),
    ("tsubame3", 8, 1024, "lars", True, 25.0, None, None),
    ("tsubame3", 2, 256, "sgd", True, 4.0, "torus2d", None),
]


@pytest.mark.parametrize("network", ["flows", "auto"])
@pytest.mark.parametrize("system,nodes,batch,opt,overlap,bucket_mb,allreduce,rpn", GRID)
def test_simulation_equals_analytic_without_variability(system, nodes, batch, opt, overlap, bucket_mb, allreduce,
                                                         rpn, network):
    cfg = _cfg(system, nodes, batch, opt, overlap, bucket_mb, allreduce, rpn)
    pred = predict(cfg)
    # 10 iterations = one K-FAC refresh interval (the analytic model amortises refreshes at 1/10)
    res = simulate(cfg, iterations=10, network=network, prediction=pred)
    assert res.iteration_s == pytest.approx(pred.iteration_s, rel=0.01)
    assert res.iteration_s == pytest.approx(pred.iteration_s, rel=1e-9)  # in fact exact up to rounding
    for key in BREAKDOWN_KEYS:
        assert res.breakdown[key] == pytest.approx(pred.breakdown[key], rel=1e-6, abs=1e-12), key
    for key in ("training_s", "eval_s", "startup_s"):
        assert res.run_breakdown[key] == pytest.approx(pred.run_breakdown[key], rel=1e-6, abs=1e-12), key
    assert res.time_to_train_s == pytest.approx(pred.time_to_train_s, rel=1e-6)
    assert res.scaling_efficiency == pytest.approx(pred.scaling_efficiency, rel=1e-6)
    if opt != "kfac":  # without refreshes every iteration is the same
        assert res.iteration_p50_s == pytest.approx(pred.iteration_s, rel=1e-9)
        assert res.iteration_p99_s == pytest.approx(pred.iteration_s, rel=1e-9)
    else:              # iteration 0 refreshes the factors, the other nine do not
        s = np.array(res.iteration_samples_s)
        assert s[0] > s[1] and np.allclose(s[1:], s[1])
    assert res.breakdown["sync_wait_s"] == 0.0
    if network == "flows" and pred.ranks > 1:
        assert res.simulation["network"]["model"] == "flows"
        assert res.simulation["network"]["max_concurrent_groups"] == 1


PLAN_CASES = [("big-basin-p100", 4, 8), ("dgx1-v100", 2, 8), ("stampede2-knl", 16, 1), ("marenostrum4", 4, 2),
              ("marenostrum4", 2, 4), ("tsubame3", 8, 4)]


@pytest.mark.parametrize("system,nodes,rpn", PLAN_CASES)
def test_flows_alone_reproduce_collective_profile(system, nodes, rpn):
    """A collective alone on the flow network takes the analytic profile's alpha + beta n, for every algorithm
    and operation with a step pattern, over message sizes from 1 kB to 1 GB."""
    s = load_system(system)
    for name, alg in ALGORITHMS.items():
        for op in sorted(alg.step_ops):
            plan = collective_plan(s, nodes, rpn, name, op)
            prof = collective_profile(s, nodes, rpn, name, op)
            for n in (1e3, 1e6, 25e6, 1e9):
                assert plan.alone_time_s(n) == pytest.approx(float(prof.time_s(n)), rel=1e-6), (name, op, n)


def test_slowest_flow_gap_documented():
    """The per-step bound (max latency + bytes * max load/bw, what profile and simulator charge) equals the
    slowest single flow for the symmetric cases and exceeds it by a few percent at most on DGX-1 (there the
    largest-latency flows are two-hop NVLink paths and the most loaded ones the inter-node NIC flows)."""
    for system, nodes, rpn in [("big-basin-p100", 4, 8), ("stampede2-knl", 16, 1), ("marenostrum4", 4, 2),
                               ("tsubame3", 8, 4)]:
        s = load_system(system)
        for name in ("ring", "halving_doubling", "recursive_doubling", "hierarchical", "double_binary_tree"):
            for n in (1e3, 25e6):
                assert slowest_flow_gap(s, nodes, rpn, name, n) == pytest.approx(0.0, abs=1e-9), (system, name)
    dgx = load_system("dgx1-v100")
    for name in ("halving_doubling", "recursive_doubling"):
        assert slowest_flow_gap(dgx, 8, 8, name, 25e6) == pytest.approx(0.0, abs=1e-9)
    ring_gap = slowest_flow_gap(dgx, 8, 8, "ring", 25e6)
    assert 0.0 < ring_gap < 0.05


# ---------------------------------------------------------------------------------------------------------
# the flow network: max-min fair sharing
# ---------------------------------------------------------------------------------------------------------
def test_max_min_rates_closed_forms():
    bw = np.array([1.0, 3.0, 10.0])
    one = lambda *links: (np.array(links), np.ones(len(links)))  # noqa: E731
    # two flows on one link share it equally
    assert max_min_rates([one(2), one(2)], bw) == pytest.approx([5.0, 5.0])
    # a flow alone gets its bottleneck
    assert max_min_rates([one(0, 1)], bw) == pytest.approx([1.0])
    # classic: f1 crosses links 0 (cap 1) and 1 (cap 3), f2 only link 1 -> f1 = 1, f2 takes the rest, 2
    assert max_min_rates([one(0, 1), one(1)], bw) == pytest.approx([1.0, 2.0])
    # loads: a group with 2 flows on link 2 shares it with a group of 1 flow: rates 10/3 each flow
    g2 = (np.array([2]), np.array([2.0]))
    assert max_min_rates([g2, one(2)], bw) == pytest.approx([10 / 3, 10 / 3])
    # background: demand below the fair share is served in full, above it capped at the fair share
    mask = np.array([False, False, True])
    assert max_min_rates([one(2)], bw, mask, 2.0) == pytest.approx([8.0])
    assert max_min_rates([one(2)], bw, mask, 20.0) == pytest.approx([5.0])
    assert max_min_rates([one(0)], bw, mask, 20.0) == pytest.approx([1.0])  # no background on link 0


def test_background_traffic_increases_communication():
    cfg = _cfg("big-basin-p100", 4, 1024)
    comm = [simulate(cfg, iterations=5, background_gbps=bg).breakdown["comm_total_s"] for bg in (0.0, 10.0, 30.0)]
    assert comm[0] < comm[1] < comm[2]
    # one rank per node, ring: every step's bottleneck is a node's 100 Gb/s link to its leaf switch, shared
    # with the background -> the network term of the ring's cost scales by 100 / (100 - X) while X is below
    # the fair share (50), and by 2 once the background demands more; latency and reduction are unchanged
    knl = _cfg("stampede2-knl", 8, 512, allreduce="ring", overlap=False)   # spans not stretched by compute
    base = simulate(knl, iterations=2)
    s = load_system("stampede2-knl")
    prof, gamma_part = collective_profile(s, 8, 1, "ring"), 7 / 8 * reduce_gamma_s_per_B(s)
    sizes = np.array(base.details["bucket_bytes"])

    def expected(f):
        return np.sum(prof.alpha_s + (prof.beta_s_per_B - gamma_part) * sizes * f + gamma_part * sizes)

    for bg, f in ((10.0, 100 / 90), (40.0, 100 / 60), (1000.0, 2.0)):
        got = simulate(knl, iterations=2, background_gbps=bg).breakdown["comm_total_s"]
        assert got == pytest.approx(expected(f), rel=1e-6), bg
    assert base.breakdown["comm_total_s"] == pytest.approx(expected(1.0), rel=1e-9)


def test_two_buckets_in_flight_contend():
    cfg = _cfg("dgx1-v100", 8, 2048, "lars", overlap=False)
    one = simulate(cfg, iterations=3)
    two = simulate(cfg, iterations=3, max_inflight_buckets=2)
    assert two.simulation["network"]["max_concurrent_groups"] == 2
    # each collective is slower when it shares the links with another ...
    assert two.breakdown["comm_total_s"] > one.breakdown["comm_total_s"] * 1.05
    # ... but never slower than the sum of the buckets run one after the other (latencies overlap)
    assert two.breakdown["comm_exposed_s"] <= one.breakdown["comm_exposed_s"] * (1 + 1e-9)


# ---------------------------------------------------------------------------------------------------------
# variability: the expected maximum of N draws
# ---------------------------------------------------------------------------------------------------------
def _expected_max(cdf, pdf, n, lo, hi):
    """E[max of n iid] = integral of x n f(x) F(x)^(n-1) over [lo, hi] (scipy quad)."""
    val, _ = integrate.quad(lambda x: x * n * pdf(x) * cdf(x) ** (n - 1), lo, hi, limit=400, points=[1.0])
    return val


@pytest.mark.parametrize("system,nodes,cv", [("big-basin-p100", 1, 0.1), ("dgx1-v100", 64, 0.05)])
def test_mean_iteration_matches_expected_max_of_normal_draws(system, nodes, cv):
    """8 ranks draw every factor; 512 ranks draw the maximum directly (inverse CDF of U^(1/N)). With overlap
    off the iteration is ``M * compute + const``, so its mean across seeds estimates E[M]."""
    cfg = _cfg(system, nodes, 32 * 8 * nodes, overlap=False)
    pred = predict(cfg)
    compute = pred.breakdown["compute_s"]
    const = pred.iteration_s - compute
    var = Variability("normal", cv)
    samples = np.concatenate([np.array(simulate(cfg, seed=s, iterations=250, jitter=var,
                                                prediction=pred).iteration_samples_s) for s in range(8)])
    m = (samples - const) / compute
    n = pred.ranks
    d = stats.norm(1.0, cv)
    expected = _expected_max(d.cdf, d.pdf, n, 1 - 10 * cv, 1 + 10 * cv)
    se = m.std() / math.sqrt(m.size)
    assert abs(m.mean() - expected) < 4 * se + 1e-9
    assert m.mean() == pytest.approx(expected, rel=2e-3)
    assert var.expected_max(n) == pytest.approx(expected, rel=1e-6)


def test_direct_max_sampling_with_stragglers_and_lognormal():
    """The directly sampled maximum (binomial straggler count, order statistics) against the numerical
    integral of the mixture's CDF."""
    n, cv, p, slow = 1000, 0.08, 0.002, 1.5
    var = Variability("lognormal", cv, p, slow)
    sigma = math.sqrt(math.log1p(cv * cv))
    ln = stats.lognorm(s=sigma, scale=math.exp(-sigma * sigma / 2))
    cdf = lambda x: (1 - p) * ln.cdf(x) + p * ln.cdf(x / slow)  # noqa: E731
    expected, _ = integrate.quad(lambda x: 1 - cdf(x) ** n, 0, 5, limit=400, points=[1.0, 1.3, slow, 2.0])
    draws = var.sample_max(np.random.default_rng(7), n, 200_000)
    assert draws.mean() == pytest.approx(expected, abs=4 * draws.std() / math.sqrt(draws.size))
    # the direct sampler against per-rank draws (small n so both are cheap)
    rng = np.random.default_rng(3)
    explicit = var.sample(rng, (20_000, 50)).max(axis=1)
    direct = var.sample_max(rng, 50, 20_000)
    se = math.hypot(explicit.std(), direct.std()) / math.sqrt(20_000)
    assert direct.mean() == pytest.approx(explicit.mean(), abs=4 * se)
    assert np.quantile(direct, 0.99) == pytest.approx(np.quantile(explicit, 0.99), rel=0.02)


def test_variability_input_checks():
    for kw in (dict(cv=-0.1, distribution="normal"), dict(straggler_prob=1.5), dict(straggler_slowdown=0.5),
               dict(distribution="cauchy"), dict(cv=float("nan"), distribution="normal"),
               dict(cv=0.1, distribution="none")):
        with pytest.raises(ConfigError):
            Variability(**kw)
    cfg = _cfg("big-basin-p100", 1, 256)
    for kw in (dict(iterations=0), dict(seed=-1), dict(background_gbps=-1.0), dict(max_inflight_buckets=0),
               dict(network="packets")):
        with pytest.raises(ConfigError):
            simulate(cfg, **kw)


# ---------------------------------------------------------------------------------------------------------
# determinism, tails, K-FAC refreshes
# ---------------------------------------------------------------------------------------------------------
def test_same_seed_same_output_different_seed_different_output():
    cfg = _cfg("big-basin-p100", 4, 1024, "kfac")
    var = Variability("lognormal", 0.05, 0.01, 2.0)

    def dump(seed):
        return json.dumps(simulate(cfg, seed=seed, iterations=20, jitter=var).to_dict(), sort_keys=True)

    a, b, c = dump(11), dump(11), dump(12)
    assert a == b
    assert a != c


def test_p99_grows_with_ranks():
    cfg = _cfg("big-basin-p100", 1, 256)
    var = Variability("normal", 0.05)
    rows = tail_vs_ranks(cfg, [8, 32, 256], seed=0, iterations=2000, jitter=var)
    assert [r["ranks"] for r in rows] == [8, 32, 256]
    excess = [r["p99_excess_s"] for r in rows]
    assert excess[0] < excess[1] < excess[2]
    assert all(r["iteration_p99_s"] > r["iteration_p50_s"] for r in rows)
    emax = [r["expected_max_factor"] for r in rows]
    assert emax[0] < emax[1] < emax[2]
    # the p99 factor of the slowest rank follows the closed form F^-1(0.99^(1/N)) of the maximum
    for r in rows:
        pred = predict(cfg.replace(nodes=r["nodes"], batch=32 * r["ranks"]))
        compute = pred.breakdown["compute_s"]
        # overlap is on: the exposed communication shrinks when compute stretches, so use bounds
        lo = var.quantile_max(r["ranks"], 0.99) * compute
        assert r["iteration_p99_s"] >= lo * 0.99
        assert r["iteration_p99_s"] <= lo * 1.01 + (pred.iteration_s - compute)
    with pytest.raises(ConfigError):
        tail_vs_ranks(cfg, [12])


def test_kfac_refreshes_are_periodic_events():
    cfg = _cfg("big-basin-p100", 4, 1024, "kfac")
    res = simulate(cfg, iterations=20)
    assert res.simulation["kfac_refreshes"] == 2
    s = np.array(res.iteration_samples_s)
    d = res.prediction.details["optimizer"]
    assert s[0] == pytest.approx(s[10]) and s[1] == pytest.approx(s[9])
    assert s[0] - s[1] == pytest.approx(d["per_refresh_s"], rel=1e-6)
    assert res.iteration_p99_s > res.iteration_p50_s


# ---------------------------------------------------------------------------------------------------------
# trace
# ---------------------------------------------------------------------------------------------------------
def _check_trace(path):
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    assert events
    xs = [e for e in events if e["ph"] == "X"]
    meta = [e for e in events if e["ph"] == "M"]
    assert xs and meta
    last: dict = defaultdict(lambda: (-1.0, 0.0))
    for e in xs:
        for key in ("name", "ph", "ts", "dur", "pid", "tid"):
            assert key in e
        assert e["ts"] >= 0 and e["dur"] > 0
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        ts0, end0 = last[(e["pid"], e["tid"])]
        assert e["ts"] >= ts0                      # monotone per track
        assert e["ts"] >= end0 - 1e-6              # and no overlap
        last[(e["pid"], e["tid"])] = (e["ts"], e["ts"] + e["dur"])
    names = {e["args"]["name"] for e in meta if e["name"] == "process_name"}
    return data, xs, names


def test_trace_is_chrome_json_with_monotone_tracks(tmp_path):
    path = tmp_path / "trace.json"
    cfg = _cfg("big-basin-p100", 1, 256, "kfac")
    res = simulate(cfg, iterations=12, jitter=Variability("normal", 0.05), trace_path=path)
    assert res.simulation["representation"] == "explicit"
    data, xs, names = _check_trace(path)
    assert {f"rank {r}" for r in range(8)} <= names and "network (collectives)" in names
    assert data["otherData"]["ranks"] == 8
    cats = {e["cat"] for e in xs}
    assert {"compute", "comm", "wait", "optimizer", "eval"} <= cats
    buckets = {e["tid"] for e in xs if e["pid"] == 0 and e["name"].startswith("allreduce bucket")}
    assert len(buckets) == res.details["buckets"]
    assert any(e["name"] == "K-FAC inversion" for e in xs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]  # atomic: no temporary left


def test_trace_representative_ranks(tmp_path):
    path = tmp_path / "t.json"
    simulate(_cfg("big-basin-p100", 4, 1024), iterations=4, jitter=Variability("normal", 0.05),
             background_gbps=5.0, trace_path=path)
    _, xs, names = _check_trace(path)
    assert "slowest rank (max of N factors)" in names and "median rank" in names
    assert any(e["name"] == "wait for slowest rank" for e in xs)


# ---------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------
def test_cli_json_contract(capsys):
    argv = ["--system", "big-basin-p100", "--nodes", "4", "--batch", "1024", "--epochs", "1", "--json"]
    assert main(["simulate", *argv]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (*CONTRACT_KEYS, "iteration_p50_s", "iteration_p99_s", "breakdown"):
        assert key in out, key
    for key in BREAKDOWN_KEYS:
        assert key in out["breakdown"], key
    assert main(["predict", *argv]) == 0
    analytic = json.loads(capsys.readouterr().out)
    assert out["iteration_s"] == pytest.approx(analytic["iteration_s"], rel=0.01)
    assert out["time_to_train_s"] == pytest.approx(analytic["time_to_train_s"], rel=0.01)
    assert out["method"] == "simulation"


def test_cli_text_trace_and_tail(capsys, tmp_path):
    path = tmp_path / "cli.json"
    rc = main(["simulate", "--system", "big-basin-p100", "--nodes", "2", "--batch", "512", "--epochs", "1",
               "--jitter-cv", "0.05", "--straggler-prob", "0.01", "--straggler-slowdown", "2", "--iterations", "10",
               "--seed", "4", "--trace", str(path), "--tail-ranks", "8,16"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "p99" in out and "tail vs ranks" in out and path.exists()
    _check_trace(path)


@pytest.mark.parametrize("flags", [["--jitter-cv", "-0.1"], ["--straggler-prob", "1.5"],
                                   ["--straggler-slowdown", "0.5"], ["--iterations", "0"],
                                   ["--background-gbps", "-1"], ["--max-inflight-buckets", "0"],
                                   ["--tail-ranks", "12"], ["--jitter-cv", "abc"], ["--network", "packets"]])
def test_cli_bad_flags_exit_2_with_one_line(capsys, flags):
    rc = main(["simulate", "--system", "big-basin-p100", "--nodes", "1", "--batch", "256", "--epochs", "1", *flags])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("perfmodel: error:") and err.count("\n") == 1
