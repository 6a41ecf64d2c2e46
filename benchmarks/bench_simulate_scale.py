"""Scale benchmark of the discrete-event simulator: ResNet-50 iterations at 1,024 and 8,192 ranks.

Cases (fp32, SGD, 32 images per GPU, buckets 25 MB, auto allreduce):

- 1,024 ranks: the catalog's ``dgx1-v100``, 128 nodes x 8 V100;
- 8,192 ranks: ``benchmarks/systems/dgx1-v100-1024.toml``, the same DGX-1 nodes and EDR fat tree, 1,024 nodes.

For each case the script separates

- **setup** (one-off, cached): building the topology graph, routing every flow of every candidate algorithm
  and the analytic collective profiles -- i.e. the cold ``predict`` of the configuration, which the
  simulator reuses. It is dominated by route computation in :mod:`hardware.topology.routing` and grows with
  the number of flows (halving-doubling at 8,192 ranks has 26 steps of 8,192 flows). The script points the
  on-disk profile cache of :mod:`perfmodel.network` at a fresh folder so that this is a true cold start, and
  also reports the setup of a later process, which finds the profiles on disk (``setup_disk_cache``);
- **simulation**: ``simulate(cfg)`` once the caches are warm, with compute jitter and stragglers on
  (normal jitter cv 0.05, stragglers p = 0.001 x 1.5): one iteration, and a 50-iteration run;
- optionally (default on; ``--no-flows`` skips it) the same with 10 Gb/s of background traffic on every
  inter-node link, which runs every collective as flows with max-min fair sharing: its one-off setup (the
  per-step link loads of the chosen algorithms) and its simulation time.

Wall time and CPU time (``time.process_time``) are both printed: on a shared machine the wall time includes
waiting for a core. The last line is one JSON object with every number.

Usage::

    python benchmarks/bench_simulate_scale.py [--iterations 50] [--no-flows] [--only 1024|8192] [--warm-disk-cache]
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if "--warm-disk-cache" not in sys.argv:  # before perfmodel reads it: a cold start unless asked otherwise
    os.environ["TTT_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-simulate-cache-")
    atexit.register(shutil.rmtree, os.environ["TTT_CACHE_DIR"], ignore_errors=True)

from perfmodel import network  # noqa: E402
from perfmodel.config import load_config  # noqa: E402
from perfmodel.predict import predict  # noqa: E402
from perfmodel.sim.variability import Variability  # noqa: E402
from perfmodel.simulate import simulate  # noqa: E402

CASES = {
    1024: ("dgx1-v100", 128),
    8192: (str(ROOT / "benchmarks" / "systems" / "dgx1-v100-1024.toml"), 1024),
}
PER_GPU_BATCH = 32
JITTER = Variability.from_options(0.05, "normal", straggler_prob=0.001, straggler_slowdown=1.5)


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def run_case(ranks: int, iterations: int, flows: bool) -> dict:
    system, nodes = CASES[ranks]
    cfg = load_config(None, model="resnet50", system=system, nodes=nodes, batch=PER_GPU_BATCH * ranks, epochs=90.0)
    row: dict = {"ranks": ranks, "system": Path(system).stem, "nodes": nodes, "global_batch": cfg.batch}
    pred, w, c = _timed(lambda: predict(cfg))
    row.update(setup_wall_s=w, setup_cpu_s=c, analytic_iteration_s=pred.iteration_s,
               bucket_algorithms=sorted(set(pred.details["bucket_algorithms"])))
    res1, w, c = _timed(lambda: simulate(cfg, iterations=1, jitter=JITTER, seed=1))
    row.update(sim_1_iteration_wall_s=w, sim_1_iteration_cpu_s=c)
    res, w, c = _timed(lambda: simulate(cfg, iterations=iterations, jitter=JITTER, seed=1))
    row.update(sim_iterations=iterations, sim_wall_s=w, sim_cpu_s=c, sim_wall_per_iteration_s=w / iterations,
               iteration_mean_s=res.iteration_s, iteration_p50_s=res.iteration_p50_s,
               iteration_p99_s=res.iteration_p99_s, mean_max_factor=res.simulation["mean_max_factor"],
               expected_max_factor=res.simulation["expected_max_factor"])
    if flows:
        kw = dict(iterations=iterations, jitter=JITTER, seed=1, background_gbps=10.0)
        _, w, c = _timed(lambda: simulate(cfg, **{**kw, "iterations": 1}))
        row.update(flows_setup_wall_s=w, flows_setup_cpu_s=c)
        resf, w, c = _timed(lambda: simulate(cfg, **kw))
        row.update(flows_sim_wall_s=w, flows_sim_cpu_s=c, flows_iteration_mean_s=resf.iteration_s,
                   flows_comm_total_s=resf.breakdown["comm_total_s"], comm_total_s=res.breakdown["comm_total_s"])
    # a later process: empty in-memory caches, profiles on disk
    network.collective_profile.cache_clear()
    network.cluster_graph.cache_clear()
    _, w, c = _timed(lambda: predict(cfg))
    row.update(setup_disk_cache_wall_s=w, setup_disk_cache_cpu_s=c)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--no-flows", action="store_true", help="skip the background-traffic (flow-level) runs")
    ap.add_argument("--only", type=int, choices=sorted(CASES), help="run one case")
    ap.add_argument("--warm-disk-cache", action="store_true",
                    help="use the user's on-disk profile cache instead of a fresh one (setup is then not cold)")
    args = ap.parse_args(argv)
    rows = []
    for ranks in ([args.only] if args.only else sorted(CASES)):
        print(f"--- {ranks} ranks ...", flush=True)
        row = run_case(ranks, args.iterations, not args.no_flows)
        rows.append(row)
        print(f"  setup (topology + routes + analytic profiles; cached, one-off): {row['setup_wall_s']:.2f} s wall, "
              f"{row['setup_cpu_s']:.2f} s CPU", flush=True)
        print(f"  setup of a later process (profiles from the on-disk cache): {row['setup_disk_cache_wall_s']:.2f} s "
              f"wall, {row['setup_disk_cache_cpu_s']:.2f} s CPU")
        print(f"  simulate 1 iteration:            {row['sim_1_iteration_wall_s']:.3f} s wall, "
              f"{row['sim_1_iteration_cpu_s']:.3f} s CPU")
        print(f"  simulate {args.iterations} iterations:          {row['sim_wall_s']:.3f} s wall, "
              f"{row['sim_cpu_s']:.3f} s CPU ({row['sim_wall_per_iteration_s'] * 1e3:.1f} ms/iteration)")
        print(f"  iteration mean {row['iteration_mean_s'] * 1e3:.1f} ms, p50 {row['iteration_p50_s'] * 1e3:.1f} ms, "
              f"p99 {row['iteration_p99_s'] * 1e3:.1f} ms (analytic {row['analytic_iteration_s'] * 1e3:.1f} ms; "
              f"slowest-rank factor {row['mean_max_factor']:.3f}, expected {row['expected_max_factor']:.3f})")
        if "flows_sim_wall_s" in row:
            print(f"  flow-level, 10 Gb/s background: setup (per-step link loads; one-off) "
                  f"{row['flows_setup_wall_s']:.2f} s wall; simulate {args.iterations} iterations "
                  f"{row['flows_sim_wall_s']:.3f} s wall, {row['flows_sim_cpu_s']:.3f} s CPU; comm per iteration "
                  f"{row['comm_total_s'] * 1e3:.2f} -> {row['flows_comm_total_s'] * 1e3:.2f} ms")
    print(json.dumps({"benchmark": "simulate_scale", "cases": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
