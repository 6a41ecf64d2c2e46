"""Throughput of the sweep engine: configurations evaluated per second, cold and warm, with 1 and 2 workers.

The grid (default): ResNet-50/ImageNet on stampede2-knl, dgx1-v100 and big-basin-p100; nodes 1..512 (powers
of two; node counts above a system's size are reported as infeasible rows and counted separately); 64 global
batches (1024 * k, k = 1..64, divisible by every rank count of the grid); optimizers sgd, lars, kfac;
allreduce ring, halving_doubling, auto; epochs from the convergence model (default target).

Runs, per worker count:

- ``cold``: collective profiles and topology graphs not cached (``perfmodel.network``'s in-memory caches
  and the optimizer-cost memo cleared, its on-disk profile cache pointed at an empty temporary folder for
  the whole benchmark; a fresh :class:`~perfmodel.sweep.WorkerPool`). The first pricing of a large node
  count builds and routes the topology graph: seconds per (system, node count, algorithm).
- ``warm``: the same grid again (profiles cached, optimizer costs memoised: the steady state of repeated
  sweeps and of ``plan``).
- ``warm-new-batches``: profiles cached but a grid of 64 batches never seen before (optimizer costs of the
  new per-device batches computed afresh: K-FAC's model takes milliseconds per per-device batch).

Prints a table and one JSON line (``{"bench": "predict_throughput", ...}``). The design target is at least
10,000 configurations per second warm on a 2-core machine.

Usage::

    python benchmarks/bench_predict_throughput.py [--quick] [--workers 1,2] [--json]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perfmodel import network  # noqa: E402
from perfmodel.config import load_config  # noqa: E402
from perfmodel.sweep import SweepGrid, WorkerPool, optimizer_cost_memo, run_sweep  # noqa: E402

SYSTEMS = ("stampede2-knl", "dgx1-v100", "big-basin-p100")
OPTIMIZERS = ("sgd", "lars", "kfac")
ALGORITHMS = ("ring", "halving_doubling", "auto")


def make_grid(quick: bool, offset: int = 0) -> SweepGrid:
    """The benchmark grid; ``offset`` shifts the batch values (a grid of batches not seen before)."""
    nb = 16 if quick else 64
    max_nodes = 64 if quick else 512
    batches = tuple(1024 * (k + offset) for k in range(1, nb + 1))
    nodes = tuple(2 ** i for i in range(max_nodes.bit_length()))
    return SweepGrid(base=load_config(None, model="resnet50"), systems=SYSTEMS, nodes=nodes, batches=batches,
                     optimizers=OPTIMIZERS, algorithms=ALGORITHMS)


def clear_caches() -> None:
    """Forget topology graphs, collective profiles (in memory and in the benchmark's on-disk cache folder)
    and memoised optimizer costs (this process)."""
    network.cluster_graph.cache_clear()
    network.collective_profile.cache_clear()
    optimizer_cost_memo.clear()
    folder = os.environ.get("TTT_CACHE_DIR")
    if folder and os.path.basename(folder).startswith("bench-ttt-cache-"):
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))


def measure(grid: SweepGrid, executor, workers: int) -> dict:
    """Wall-clock throughput; with one worker (in-process) also per CPU-second of this process, which a
    busy machine does not distort."""
    c0, t0 = time.process_time(), time.perf_counter()
    res = run_sweep(grid, workers=workers, executor=executor, progress=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"configs": res.n, "evaluated": res.evaluated, "seconds": dt, "configs_per_s": res.n / dt,
           "evaluated_per_s": res.evaluated / dt}
    if executor is None:
        out.update(cpu_seconds=cpu, configs_per_cpu_s=res.n / cpu)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller grid (16 batches, nodes up to 64)")
    ap.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    args = ap.parse_args(argv)
    # cold means cold: an empty on-disk profile cache for this run (worker processes inherit the variable)
    cache_dir = tempfile.mkdtemp(prefix="bench-ttt-cache-")
    os.environ["TTT_CACHE_DIR"] = cache_dir
    try:
        return _run(args)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    worker_counts = [int(w) for w in args.workers.split(",")]
    grid, fresh = make_grid(args.quick), make_grid(args.quick, offset=64)

    results = []
    for w in worker_counts:
        clear_caches()
        pool = WorkerPool(w) if w > 1 else None   # workers fork with cold caches, kept across the runs
        try:
            for label, g in (("cold", grid), ("warm", grid), ("warm-new-batches", fresh)):
                r = measure(g, pool, w)
                r.update(workers=w, run=label)
                results.append(r)
        finally:
            if pool is not None:
                pool.shutdown()

    if not args.json:
        print(f"grid: {len(SYSTEMS)} systems x nodes 1..{max(grid.nodes)} x {len(grid.batches)} batches x "
              f"{len(OPTIMIZERS)} optimizers x {len(ALGORITHMS)} algorithms = {results[0]['configs']} "
              f"configurations ({results[0]['evaluated']} evaluated, the rest infeasible node counts); "
              f"{os.cpu_count()} CPUs")
        print(f"{'workers':>7}  {'run':<17} {'seconds':>8} {'configs/s':>10} {'evaluated/s':>12} "
              f"{'configs/CPU-s':>14}")
        for r in results:
            per_cpu = f"{r['configs_per_cpu_s']:14,.0f}" if "configs_per_cpu_s" in r else f"{'-':>14}"
            print(f"{r['workers']:>7}  {r['run']:<17} {r['seconds']:8.2f} {r['configs_per_s']:10,.0f} "
                  f"{r['evaluated_per_s']:12,.0f} {per_cpu}")
    warm = max(r["configs_per_s"] for r in results if r["run"] == "warm")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    line = {"bench": "predict_throughput", "quick": args.quick, "cpus": os.cpu_count(),
            "configs": results[0]["configs"], "evaluated": results[0]["evaluated"],
            "best_warm_configs_per_s": round(warm), "target_configs_per_s": 10000,
            "meets_target": warm >= 10000, "load_average_1min": load,
            "runs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in results]}
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
