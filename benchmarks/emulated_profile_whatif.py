"""Re-predict the allreduce rows of a ``bench_emulated.py --out`` result file offline, with and without the
measured per-size exchange profile (``[network.exchange_profile]``, :func:`perfmodel.network.exchange_residual_s`;
and the ring-step profile, ``[network.ring_profile]``, where the file has one):
how much of the error the profile removes, on the same measurements; with ``--iterations`` also its training
iterations with the current model, speed-scaled with each row's stored probe as the run did.

    .venv/bin/python benchmarks/emulated_profile_whatif.py docs/validation/emulated.json \\
        --base-system validation-out/calibration/local.toml [--iterations] [--json]

For every network of the file the emulated spec is written again from its stored link calibration (needs
``measured_link.sizes`` and ``times_s``: result files from commit bd749b0 on) into a temporary folder, and
every allreduce of 1 MiB and more (saturated networks included) is predicted twice. No root, no cluster,
no measurement: a few seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a bench_emulated.py --out file")
    ap.add_argument("--base-system", default="local", help="the base system the measurement used")
    ap.add_argument("--iterations", action="store_true",
                    help="also re-predict the training iterations (speed-scaled with their stored probes)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from hardware.errors import ToolkitError
    from validation.run import load_emulated

    try:
        doc = load_emulated(args.results)
    except ToolkitError as exc:
        print(f"error: results = {args.results!r}: {str(exc).split(': ', 2)[-1]}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="ttt-whatif-")
    os.environ["TTT_SYSTEMS_DIR"] = tmp   # the specs written here, never the user's registry
    os.environ["TTT_CACHE_DIR"] = ""
    errors: dict[str, list[float]] = {"with_profile": [], "without_profile": []}
    if args.iterations:
        errors.update(iterations=[], iterations_unscaled=[])
    try:
        skipped = _score(doc, Path(tmp), args.base_system, errors)
    finally:   # the temporary registry goes, whatever happened
        shutil.rmtree(tmp, ignore_errors=True)
    out = {k: {"count": len(v), "mean_abs_pct": statistics.mean(map(abs, v)) if v else None,
               "max_abs_pct": max(map(abs, v)) if v else None, "within_10pct": sum(abs(x) <= 10 for x in v)}
           for k, v in errors.items()}
    out["skipped_networks"] = skipped
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k in [k for k in out if k != "skipped_networks"]:
            a = out[k]
            what = "iteration rows (unsaturated networks)" if k.startswith("iterations") else "allreduce rows >= 1 MiB"
            if a["count"]:
                print(f"{k:<19} {a['count']} {what}: mean |error| {a['mean_abs_pct']:.1f} %, "
                      f"max {a['max_abs_pct']:.1f} %, {a['within_10pct']} within 10 %")
        if skipped:
            print(f"skipped (no per-size link calibration): {len(skipped)} network(s)")
    return 0


def _score(doc: dict, registry: Path, base_system: str, errors: dict[str, list[float]]) -> list[str]:
    """Append each scored row's error (%) of result document ``doc`` to ``errors`` (the keys it has: the
    allreduce with and without the profile; the iterations where ``errors`` has ``iterations``), writing
    each network's emulated spec into ``registry``; returns the descriptions of the networks skipped."""
    from executor.cluster.hydra import placement
    from executor.cluster.measure import exchange_pairs
    from executor.cluster.plan import ClusterConfig
    from executor.cluster.spec import write_spec
    from hardware.catalog import load_system
    from perfmodel.network import collective_profile

    skipped = []
    for entry in doc["results"]:
        ml = dict(entry.get("measured_link") or {})
        if not ml.get("sizes") or not entry.get("allreduce"):
            skipped.append(entry.get("description", "?"))
            continue
        cfg = ClusterConfig(**{k: v for k, v in entry["network"].items() if v is not None and k != "prefix"})
        ml.setdefault("pairs", [list(p) for p in exchange_pairs(cfg.hosts)])
        write_spec(registry, cfg, base_system, measured=ml)
        spec = load_system("emulated")
        flat = dataclasses.replace(spec, network=dataclasses.replace(spec.network, exchange_profile=(),
                                                                     ring_profile=()))
        for row in entry["allreduce"]:
            if row["bytes"] < (1 << 20):
                continue
            nodes, rpn = placement(row["ranks"], spec.max_nodes)
            for key, system in (("with_profile", spec), ("without_profile", flat)):
                t = float(collective_profile(system, nodes, rpn, row["algorithm"]).time_s(row["bytes"]))
                errors[key].append(100.0 * (t - row["measured_s"]) / row["measured_s"])
        rows = (entry.get("iterations") or []) if "iterations" in errors and not entry.get("saturated") else []
        for row in rows:
            scaled, raw = _iteration_prediction(row)
            errors["iterations"].append(100.0 * (scaled - row["measured_s"]) / row["measured_s"])
            errors["iterations_unscaled"].append(100.0 * (raw - row["measured_s"]) / row["measured_s"])
    return skipped


def _iteration_prediction(row: dict) -> tuple[float, float]:
    """``(speed-scaled, unscaled)`` prediction (seconds) of a stored iteration row on the ``emulated`` spec now
    registered, as :func:`validation.emulated.iterations_vs_predict` makes it: the CPU work scaled by the row's
    typical probe of the per-iteration slowest rank over the spec's reference."""
    from perfmodel.config import load_config
    from perfmodel.predict import predict
    from validation.emulated import speed_scaled_s
    from validation.loop import speed_factor

    cfg = load_config(model=row["model"], batch=int(row["batch"]), optimizer=row.get("optimizer", "sgd"),
                      allreduce=row["algorithm"], bucket_bytes=25e6, overlap=True, system="emulated",
                      nodes=int(row["nodes"]),
                      ranks_per_node=int(row["ranks_per_node"]), epochs=1.0,
                      optimizer_options=row.get("optimizer_options") or None)
    pred = predict(cfg)
    # the statistic the runs now use (the typical of the per-iteration slowest rank's probe); files of
    # 2026-12-07 19:53-21:25 stored another as speed_probe_s and this one as speed_probe_iteration_max_s
    probe_s = row.get("speed_probe_iteration_max_s") or row.get("speed_probe_s")
    factor = speed_factor("emulated", int(row["ranks_per_node"]), probe_s, row["model"])
    return speed_scaled_s(pred, factor), float(pred.iteration_s)


if __name__ == "__main__":
    sys.exit(main())
