"""Cold pricing of collectives on large topologies: the routing engine behind ``collective_profile``.

Cases (every algorithm ``auto`` considers, allreduce, spread routing, on-disk profile cache off):

- ``knl-2048``: stampede2-knl, 2,048 nodes x 1 rank (oversubscribed 2-level fat tree, 28 nodes per leaf,
  20 uplinks) -- the ``perfmodel predict --system stampede2-knl --nodes 2048`` configuration;
- ``dgx1-1024``: dgx1-v100, 128 nodes x 8 GPUs = 1,024 ranks (4 NICs per node);
- ``dgx1-8192``: benchmarks/systems/dgx1-v100-1024.toml, 1,024 nodes x 8 GPUs = 8,192 ranks (the scale case of
  ``bench_simulate_scale.py``).

For each case the script reports, in one process with every in-memory cache cleared first:

- ``graph``: building the cluster graph (``perfmodel.network.cluster_graph``);
- ``profiles``: the cold profiles of all candidates (``collective_profile``; the routing engine's index and
  tables, every step of every algorithm, a pattern shared by several steps priced once);
- ``step``: the public API on one halving-doubling step (distance ``ranks / 2``, every flow crossing the
  network): ``link_loads`` + ``max_flow_time`` on the list of ``(src, dst)`` endpoint pairs, cold (fresh
  index) and warm;
- with ``--reference``: the same profiles with the per-flow implementation the engine replaced (the verbatim
  copy kept in tests/test_routing_speed.py), and the largest relative difference between the two (the
  engine must agree to 1e-12). The reference takes ~25 s (knl-2048) and ~40 s (dgx1-8192) of CPU.

Wall and CPU (process) seconds are both printed: on a shared 2-core machine the wall time includes waiting for
a core. The last line is one JSON object with every number.

Usage::

    python benchmarks/bench_routing.py [--only knl-2048|dgx1-1024|dgx1-8192] [--reference]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ["TTT_CACHE_DIR"] = ""  # on-disk profile cache off: every profile is computed here

from hardware.catalog import load_system  # noqa: E402
from hardware.topology import clear_routes, link_loads, max_flow_time  # noqa: E402
from perfmodel import network  # noqa: E402
from perfmodel.collectives import AUTO_CANDIDATES  # noqa: E402

CASES = {
    "knl-2048": ("stampede2-knl", 2048, 1),
    "dgx1-1024": ("dgx1-v100", 128, 8),
    "dgx1-8192": (str(ROOT / "benchmarks" / "systems" / "dgx1-v100-1024.toml"), 1024, 8),
}


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _reference():
    """The per-flow implementation kept (verbatim) in tests/test_routing_speed.py."""
    spec = importlib.util.spec_from_file_location("_routing_reference", ROOT / "tests" / "test_routing_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.REF


def _fresh() -> None:
    network.collective_profile.cache_clear()
    network.cluster_graph.cache_clear()


def run_case(name: str, reference) -> dict:
    system_name, nodes, rpn = CASES[name]
    system = load_system(system_name)
    p = nodes * rpn
    row: dict = {"case": name, "system": system.id, "nodes": nodes, "ranks": p}
    _fresh()
    G, w, c = _timed(lambda: network.cluster_graph(system, nodes))
    row.update(graph_wall_s=w, graph_cpu_s=c)

    def profiles():
        return {a: network.collective_profile(system, nodes, rpn, a) for a in AUTO_CANDIDATES}

    profs, w, c = _timed(profiles)
    row.update(profiles_wall_s=w, profiles_cpu_s=c)

    eps = network.rank_endpoints(system, nodes, rpn)
    flows = [(eps[i], eps[i ^ (p // 2)]) for i in range(p)]
    clear_routes(G)

    def step():
        return link_loads(G, flows), max_flow_time(G, flows, 0.0), max_flow_time(G, flows, 1e12)

    _, w, c = _timed(step)
    row.update(step_cold_wall_s=w, step_cold_cpu_s=c)
    _, w, c = _timed(step)
    row.update(step_warm_wall_s=w, step_warm_cpu_s=c, step_flows=len(flows))

    if reference is not None:
        network.cluster_graph.cache_clear()
        network.cluster_graph(system, nodes)

        def ref_profiles():
            return {a: reference.compute_profile(system, nodes, rpn, a, "allreduce") for a in AUTO_CANDIDATES}

        refs, w, c = _timed(ref_profiles)
        diff = 0.0
        for a, ref in refs.items():
            for x, y in ((profs[a].alpha_s, ref.alpha_s), (profs[a].beta_s_per_B, ref.beta_s_per_B)):
                diff = max(diff, abs(x - y) / abs(y) if y else abs(x))
        row.update(reference_profiles_wall_s=w, reference_profiles_cpu_s=c, max_relative_difference=diff)
    _fresh()
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CASES), help="run one case")
    ap.add_argument("--reference", action="store_true",
                    help="also time the per-flow implementation the engine replaced (slow) and compare")
    args = ap.parse_args(argv)
    reference = _reference() if args.reference else None
    rows = []
    for name in ([args.only] if args.only else list(CASES)):
        print(f"--- {name} ...", flush=True)
        row = run_case(name, reference)
        rows.append(row)
        print(f"  cluster graph:                      {row['graph_wall_s']:.3f} s wall, {row['graph_cpu_s']:.3f} s CPU")
        print(f"  profiles of {len(AUTO_CANDIDATES)} algorithms (cold):     {row['profiles_wall_s']:.3f} s wall, "
              f"{row['profiles_cpu_s']:.3f} s CPU")
        print(f"  one step, {row['step_flows']} flows, public API: cold {row['step_cold_wall_s']:.3f} s wall "
              f"({row['step_cold_cpu_s']:.3f} s CPU), warm {row['step_warm_wall_s']:.3f} s wall "
              f"({row['step_warm_cpu_s']:.3f} s CPU)")
        if reference is not None:
            speedup = row["reference_profiles_cpu_s"] / max(row["profiles_cpu_s"], 1e-9)
            print(f"  reference per-flow profiles:        {row['reference_profiles_wall_s']:.3f} s wall, "
                  f"{row['reference_profiles_cpu_s']:.3f} s CPU (x{speedup:.0f} the engine's CPU); "
                  f"largest relative difference {row['max_relative_difference']:.1e}", flush=True)
    print(json.dumps({"benchmark": "routing", "cases": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
