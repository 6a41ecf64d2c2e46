"""Allreduce and iteration predictions against measurements on the emulated cluster, over a matrix of
networks: hosts, link rates, per-link latencies, single switch and an oversubscribed two-level tree.

    sudo .venv/bin/python benchmarks/bench_emulated.py [--hosts 2,4] [--rates 0.5,1,5] [--latencies 100,1000]
        [--two-level] [--algorithms ring,recursive_doubling,halving_doubling] [--sizes 1M,4M,16M]
        [--iterations-model resnet20 --batches 32,128 [--iterations-optimizers sgd,kfac] [--iterations 20]]
        [--repeats 3] [--base-system local] [--quick] [--json]
        [--out FILE.json [--append]]

For every network of the matrix: ``cluster up`` (with the link calibration of executor/cluster/measure.py),
:func:`validation.emulated.bench_vs_predict` with one rank per host, optionally
:func:`validation.emulated.iterations_vs_predict`, ``cluster down``. Prints one line per (network,
algorithm, size) with measured and predicted times and the error, a summary (mean and max absolute error
for messages of 1 MiB and above, and of the iterations) and, with ``--out``, everything as JSON.

The userspace switch's lateness over the allreduce benchmark and over the iteration runs is recorded per
network (``switch_allreduce``, ``switch_iterations``: :func:`executor.cluster.switch.lateness_between`): how
long after they were due it wrote its frames. Under bulk traffic it is always late, the Python loop being
the bottleneck (the 14 networks of 2026-12-07 22:48: 151 us to 1.4 ms on average during the allreduce
benchmarks, 29-63 % of the frames over 100 us; 33-80 us and 1-17 % during ResNet-20's iterations); the link
calibration runs under the same load and absorbs that. What it shows is a network whose switch was much later than the
others', or than in an earlier run of the same network.

Networks whose measured link rate (every host exchanging at once) is below 80 % of the configured payload
rate are "saturated": this machine's CPU cannot emulate them (cluster up warns); their errors are reported
separately, not in the headline. Each allreduce row also shows the error with the reduction cost measured
by ``perfmodel calibrate`` in place of the model's ``3 / memory bandwidth`` (a what-if, diagnostic only).

Needs root (network namespaces). Uses its own state folder and system registry (temporary folders), so it
never touches a cluster or a spec the user has; the networks are brought down even when a step fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _sizes(text: str) -> list[int]:
    from executor.bench_allreduce import parse_bytes

    return [parse_bytes(x.strip(), "sizes") for x in text.split(",") if x.strip()]


#: the switch rewrites its stats file every second (executor.cluster.switch)
STATS_PERIOD_S = 1.0


def _switch_stats() -> dict | None:
    """The running switch's counters, fresh (read after one stats period), or None (kernel engine)."""
    from executor.cluster import status

    time.sleep(STATS_PERIOD_S + 0.1)
    return status().get("switch_stats")


def _say_lateness(say, what: str, late: dict | None) -> None:
    if late and late["frames"]:
        say(f"   switch during the {what}: {late['frames']} frames, late by {late['late_mean_s'] * 1e6:.0f} us on "
            f"average, {100 * late['late_over_100us_share']:.1f} % later than 100 us")


def networks(args) -> list[dict]:
    """The matrix: every (hosts, rate, latency) on one switch, plus two-level trees of 4 hosts, 2 per switch,
    with uplinks of the link rate (2:1 oversubscribed)."""
    out = []
    for hosts in args.hosts:
        for rate in args.rates:
            for lat in args.latencies:
                out.append(dict(hosts=hosts, link_gbps=rate, latency_us=lat))
    if args.two_level:
        for rate in args.rates:
            for lat in args.latencies:
                out.append(dict(hosts=4, link_gbps=rate, latency_us=lat, topology="two-level", hosts_per_switch=2,
                                uplink_gbps=rate))
    return out


def summarize(results: list[dict], wall_s: float) -> dict:
    """Headline errors over the networks' results (saturated networks apart)."""
    from validation.emulated import error_summary

    ok = [e for e in results if not e.get("saturated")]
    sat = [e for e in results if e.get("saturated")]
    all_rows = [r for e in ok for r in e.get("allreduce", [])]
    all_its = [r for e in ok for r in e.get("iterations", [])]
    alt_rows = [dict(r, error_pct=r["error_measured_reduction_pct"]) for r in all_rows
                if "error_measured_reduction_pct" in r]
    return {"allreduce_1MiB_and_above": error_summary(all_rows, min_bytes=1 << 20),
            "allreduce_1MiB_and_above_measured_reduction": error_summary(alt_rows, min_bytes=1 << 20),
            "iterations": error_summary(all_its),
            "iterations_by_optimizer": {o: error_summary([r for r in all_its if r.get("optimizer", "sgd") == o])
                                        for o in sorted({r.get("optimizer", "sgd") for r in all_its})},
            "iterations_unscaled": error_summary([dict(r, error_pct=r["error_raw_pct"]) for r in all_its
                                                  if r.get("error_raw_pct") is not None]),
            "saturated_allreduce_1MiB_and_above": error_summary(
                [r for e in sat for r in e.get("allreduce", [])], min_bytes=1 << 20),
            "saturated_networks": [e["description"] for e in sat], "networks": len(results),
            "failed": sum(1 for e in results if "error" in e), "wall_s": wall_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=_ints, default=[2, 4])
    ap.add_argument("--rates", type=_floats, default=[0.5, 1.0, 5.0], help="link rates, Gbit/s")
    ap.add_argument("--latencies", type=_floats, default=[100.0, 1000.0], help="per-link one-way delays, us")
    ap.add_argument("--two-level", action=argparse.BooleanOptionalAction, default=True,
                    help="also 4 hosts on a 2:1 oversubscribed two-level tree (default on)")
    ap.add_argument("--algorithms", default="ring,recursive_doubling,halving_doubling")
    ap.add_argument("--sizes", type=_sizes, default=[1 << 20, 4 << 20, 16 << 20])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-iterations", type=int, default=10, help="timed calls per size and repeat")
    ap.add_argument("--iterations-model", default=None, help="also compare training iterations of this model")
    ap.add_argument("--batches", type=_ints, default=[32, 128], help="global batches of the iteration runs")
    ap.add_argument("--iterations-optimizers", default="sgd",
                    help="optimizers of the iteration runs, comma-separated (sgd, lars, kfac; K-FAC refreshes every "
                         "5 iterations)")
    ap.add_argument("--iterations", type=int, default=20, help="measured iterations per iteration run")
    ap.add_argument("--base-system", default="local", help="system whose CPU the hosts share (default local: the "
                    "calibrated spec when perfmodel calibrate has run)")
    ap.add_argument("--quick", action="store_true", help="2 hosts, 1 Gbit/s, 100 us, one switch; 1M,4M")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    ap.add_argument("--append", action="store_true",
                    help="with --out: add these networks to the results already in that file (summary recomputed)")
    args = ap.parse_args(argv)
    from perfmodel.optimizers import OPTIMIZERS

    bad = [o for o in args.iterations_optimizers.split(",") if o and o not in OPTIMIZERS]
    if bad:
        ap.error(f"--iterations-optimizers: unknown optimizer {bad[0]!r} (known: {', '.join(sorted(OPTIMIZERS))})")
    from validation.emulated import KFAC_OPTIONS

    period = KFAC_OPTIONS["refresh_interval"]
    if args.iterations < 1 or ("kfac" in args.iterations_optimizers.split(",") and args.iterations % period):
        ap.error(f"--iterations: {args.iterations} (must be at least 1, and with kfac a multiple of its refresh "
                 f"interval, {period})")
    if args.quick:
        args.hosts, args.rates, args.latencies, args.two_level = [2], [1.0], [100.0], False
        args.sizes = [1 << 20, 4 << 20]
    tmp = tempfile.mkdtemp(prefix="ttt-bench-emulated-")
    os.environ.setdefault("TTT_CLUSTER_DIR", os.path.join(tmp, "state"))
    os.environ.setdefault("TTT_SYSTEMS_DIR", os.path.join(tmp, "systems"))

    from executor.cluster import ClusterConfig, down, up
    from executor.cluster.switch import lateness_between
    from validation.emulated import bench_vs_predict, iterations_vs_predict

    algorithms = [a for a in args.algorithms.split(",") if a]
    say = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = []
    t_start = time.time()
    for net in networks(args):
        cfg = ClusterConfig(**net)
        say(f"== {cfg.describe()}")
        entry: dict = {"network": cfg.to_dict(), "description": cfg.describe(), "loadavg_start": os.getloadavg()}
        try:
            state = up(cfg, base_system=args.base_system)
            entry["measured_link"] = {k: state["measured"].get(k) for k in ("latency_s", "rate_Bps", "rtt_min_s",
                                                                            "sizes", "times_s", "ring_sizes",
                                                                            "ring_times_s", "attempts", "problems") if k in state["measured"]}
            before = _switch_stats()
            rows = bench_vs_predict("emulated", cfg.hosts, algorithms, args.sizes, repeats=args.repeats,
                                    max_iterations=args.max_iterations)
            entry["allreduce"] = rows
            after = _switch_stats()   # also the iteration runs' starting reading: nothing runs in between
            entry["switch_allreduce"] = lateness_between(before, after)
            ml = state["measured"]
            say(f"   link calibration: {ml['latency_s'] * 1e6:.0f} us + n / {ml['rate_Bps'] * 8 / 1e9:.3f} Gbit/s"
                + (f" (measured {ml['attempts']} times)" if ml.get("attempts", 1) > 1 else "")
                + ("  SATURATED: " + "; ".join(state["warnings"]) if state.get("warnings") else ""))
            entry["saturated"] = bool(state.get("warnings"))
            _say_lateness(say, "allreduce benchmark", entry["switch_allreduce"])
            for r in rows:
                alt = (f"  (with measured reduction: {r['error_measured_reduction_pct']:+6.1f} %)"
                       if "error_measured_reduction_pct" in r else "")
                say(f"   {r['algorithm']:<19} {r['bytes'] / 2**20:6.2f} MiB  measured {r['measured_s'] * 1e3:9.2f} ms"
                    f"  predicted {r['predicted_s'] * 1e3:9.2f} ms  error {r['error_pct']:+6.1f} %{alt}")
            if args.iterations_model:
                its = [r for opt in args.iterations_optimizers.split(",") if opt
                       for r in iterations_vs_predict("emulated", cfg.hosts, args.iterations_model, args.batches,
                                                      optimizer=opt, iterations=args.iterations)]
                entry["iterations"] = its
                entry["switch_iterations"] = lateness_between(after, _switch_stats())
                _say_lateness(say, "iteration runs", entry["switch_iterations"])
                for r in its:
                    say(f"   {r['model']} {r['optimizer']:<4} batch {r['batch']:<4} iteration measured "
                        f"{r['measured_s'] * 1e3:8.1f} ms  "
                        f"predicted {r['predicted_s'] * 1e3:8.1f} ms  error {r['error_pct']:+6.1f} %")
        except Exception as exc:  # noqa: BLE001 - report the network's failure and go on with the next
            entry["error"] = f"{type(exc).__name__}: {exc}"
            say(f"   FAILED: {entry['error']}")
        finally:
            down()
        entry["loadavg_end"] = os.getloadavg()
        say(f"   load average (1, 5, 15 min) at start {entry['loadavg_start'][0]:.1f}, at end "
            f"{entry['loadavg_end'][0]:.1f} on {os.cpu_count()} CPUs (other work on this machine disturbs the "
            "measurements)")
        results.append(entry)
    wall = time.time() - t_start
    if args.append and args.out and Path(args.out).is_file():
        before = json.loads(Path(args.out).read_text())
        results = before["results"] + results
        wall += before["summary"].get("wall_s", 0.0)
    summary = summarize(results, wall)
    shutil.rmtree(tmp, ignore_errors=True)   # its state folder and registry are empty after the last down
    doc = {"summary": summary, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        def line(label: str, a: dict) -> None:
            if a["count"]:
                w = a["worst"]
                print(f"{label}: {a['count']} points, mean |error| {a['mean_abs_pct']:.1f} %, max {a['max_abs_pct']:.1f} %"
                      + (f" ({w['algorithm']}, {w['bytes'] >> 20} MiB, {w['ranks']} ranks)" if "bytes" in w else ""))

        a, i = summary["allreduce_1MiB_and_above"], summary["iterations"]
        line("allreduce >= 1 MiB", a)
        line("allreduce >= 1 MiB, with the measured reduction cost (what-if)",
             summary["allreduce_1MiB_and_above_measured_reduction"])
        if summary["saturated_networks"]:
            line(f"saturated networks ({len(summary['saturated_networks'])}, excluded above), allreduce >= 1 MiB",
                 summary["saturated_allreduce_1MiB_and_above"])
        line("iterations (CPU work scaled to the host's speed during the run)", i)
        line("iterations, unscaled", summary["iterations_unscaled"])
        if len(summary["iterations_by_optimizer"]) > 1:
            for opt, a in summary["iterations_by_optimizer"].items():
                line(f"iterations, {opt}", a)
        print(f"{summary['networks']} networks ({summary['failed']} failed) in {summary['wall_s']:.0f} s")
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
