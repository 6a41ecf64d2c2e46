"""``perfmodel validate``: how right the model is.

Two modes, one subcommand:

- ``perfmodel validate --published [--csv FILE ...] [--json]``: predictions against published results
  (:mod:`validation.published`): one record per published timed row (``predicted_s``, ``published_s``,
  ``error_pct``, ``role``), the median and max absolute error over the validation rows, the calibration rows'
  errors apart, and the rows that were skipped with their reasons.
- ``perfmodel validate [--quick] [--out DIR] [--repeats N] [--json]``: the closed loop on this machine
  (:mod:`validation.run`): calibrate (the full matrix: three sessions spread over its runs, merged), run
  every point of the validation matrix for real, then predict each (analytic and simulated) from the
  calibration and compare; time to accuracy on the bundled digits; the published-results comparison; a
  Markdown and self-contained HTML report. Resumable: a measured point or calibration session is not
  measured again.
  ``--json`` prints the summary (``configs``, ``mape_iteration``, ``max_ape_iteration`` in percent,
  ``report``).
"""
from __future__ import annotations

import argparse
import sys

from hardware.errors import ToolkitError
from perfmodel.cli.output import fmt_num, print_json, print_table

HELP = "compare predictions with published results (--published) or with measurements made here"

__all__ = ["HELP", "configure", "run", "run_published", "run_measured", "DEFAULT_OUT"]

#: where the measured validation writes when --out is not given
DEFAULT_OUT = "validation-out"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    pub = parser.add_argument_group("published results")
    pub.add_argument("--published", action="store_true",
                     help="compare predictions with the published results (no executor needed)")
    pub.add_argument("--csv", action="append", metavar="FILE",
                     help="published-results CSV to use (repeatable; default: the package's "
                          "published_results.csv and published_extra.csv)")
    meas = parser.add_argument_group("measurements made here (needs the executor)")
    meas.add_argument("--quick", action="store_true",
                      help="the quick matrix (6 configurations, short time to accuracy; a few minutes)")
    meas.add_argument("--out", metavar="DIR", help=f"directory for results and report (default {DEFAULT_OUT})")
    meas.add_argument("--repeats", type=int, help="runs per configuration, each in its own pass over the matrix "
                      "(default 1 with --quick, else 3)")
    meas.add_argument("--no-published", action="store_true", help="leave out the published-results comparison")
    meas.add_argument("--emulated", metavar="FILE",
                      help="add the emulated-cluster results (benchmarks/bench_emulated.py --out FILE) to the report; "
                           "kept as DIR/emulated.json for later runs")


def run(args: argparse.Namespace) -> int:
    if args.published:
        for flag, value in (("--quick", args.quick), ("--out", args.out)):
            if value:
                raise ToolkitError(f"perfmodel validate: {flag} applies to the measured validation, not to --published")
        return run_published(args)
    if args.csv:
        raise ToolkitError("perfmodel validate: --csv needs --published")
    return run_measured(args)


def run_measured(args: argparse.Namespace) -> int:
    """Predicted vs measured on this machine: the closed loop, its report and the headline errors."""
    from validation.run import validate_measured  # noqa: PLC0415 - keeps `perfmodel --help` fast

    if args.repeats is not None and args.repeats < 1:
        raise ToolkitError(f"perfmodel validate: --repeats must be >= 1, not {args.repeats}")
    say = (lambda msg: None) if args.json else (lambda msg: print(f"validate: {msg}", file=sys.stderr, flush=True))
    s = validate_measured(args.out or DEFAULT_OUT, quick=args.quick, repeats=args.repeats, say=say,
                          published=not args.no_published, emulated=args.emulated)
    if args.json:
        print_json({k: s[k] for k in ("configs", "mape_iteration", "max_ape_iteration", "bias_iteration",
                                      "mape_iteration_raw", "max_ape_iteration_raw", "speed_factor", "report",
                                      "report_markdown", "matrix", "repeats", "noise", "components",
                                      "simulation_components", "system_spec", "wall_s")}
                   | {"noise_floor": ({k: v for k, v in s["noise_floor"].items() if k != "runs"}
                                      if s.get("noise_floor") else None)}
                   | {"time_to_accuracy": {k: s["time_to_accuracy"][k] for k in ("target_top1", "mape", "max_ape", "rows")},
                      "published": ({k: s["published"]["validation"][k] for k in ("median_abs_error_pct",
                                                                                  "max_abs_error_pct", "count")}
                                    if s.get("published") else None)})
        return 0
    c = s["components"]
    ns = (s.get("calibration") or {}).get("sessions", 1)
    print(f"\nvalidated {s['configs']} configurations ({s['matrix']} matrix, {s['repeats']} run(s) each, "
          f"{ns} calibration session{'s' if ns > 1 else ''}) in {s['wall_s'] / 60:.1f} min")
    print(f"iteration time: mean |error| {_pct(s['mape_iteration'])}, max |error| {_pct(s['max_ape_iteration'])}, "
          f"bias {_pct(s['bias_iteration'])}; measurement noise (median SEM) {_pct(s['noise']['median_sem_pct'])}")
    if s.get("speed_factor"):
        f = s["speed_factor"]
        print(f"  (prediction scaled to the host's speed during each run, factor {f['min']:.2f}-{f['max']:.2f}; "
              f"unscaled: mean |error| {_pct(s['mape_iteration_raw'])}, max {_pct(s['max_ape_iteration_raw'])})")
    nf = s.get("noise_floor") or {}
    if nf.get("mape") is not None:
        print(f"  noise floor (a perfect model, {nf['count']} control runs of {nf['point']}): mean |error| "
              f"{_pct(nf['mape'])}, max {_pct(nf['max_ape'])}")
    for name in ("compute", "comm_total", "comm_exposed", "optimizer"):
        if c[name]["n"]:
            print(f"  {name:<13} mean |error| {_pct(c[name]['mape'])}, max {_pct(c[name]['max_ape'])} "
                  f"over {c[name]['n']} configurations")
    t = s["time_to_accuracy"]
    print(f"time to {t['target_top1']:g}% on digits: mean |error| {_pct(t['mape'])}, max {_pct(t['max_ape'])} "
          f"over {sum(1 for r in t['rows'] if r.get('error_pct') is not None)} batch sizes")
    em = (s.get("emulated") or {}).get("summary") or {}
    for label, key in (("emulated cluster, allreduce >= 1 MiB", "allreduce_1MiB_and_above"),
                       ("emulated cluster, iterations", "iterations")):
        if (em.get(key) or {}).get("count"):
            print(f"{label}: mean |error| {_pct(em[key]['mean_abs_pct'])}, max {_pct(em[key]['max_abs_pct'])} "
                  f"over {em[key]['count']} points")
    if s.get("published"):
        v = s["published"]["validation"]
        print(f"published results: median |error| {_pct(v['median_abs_error_pct'])}, max "
              f"{_pct(v['max_abs_error_pct'])} over {v['count']} rows")
    print(f"\nreport: {s['report']}\n        {s['report_markdown']}")
    return 0


def _progress(i: int, n: int, label: str) -> None:
    if sys.stderr.isatty():
        end = "\n" if i >= n else ""
        print(f"\r\033[Kpredicting published row {min(i + 1, n)}/{n}: {label[:70]}", end=end, file=sys.stderr,
              flush=True)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1f}%"


def run_published(args: argparse.Namespace) -> int:
    """Predicted vs published results: print the per-row table (or JSON) and the summary."""
    from validation.published import validate_published  # noqa: PLC0415 - keeps `perfmodel --help` fast

    res = validate_published(args.csv, progress=None if args.json else _progress)
    if args.json:
        print_json(res)
        return 0
    table = []
    for r in res["rows"]:
        time_row = r["quantity"] == "time_to_train_s"
        table.append([r["role"], r["row"], r["paper"].split(" (")[0][:32], r["model"], r["system"], r["nodes"],
                      r["batch"], "time s" if time_row else "images/s",
                      r["published_s"] if time_row else r["published_images_per_s"],
                      r["predicted_s"] if time_row else r["predicted_images_per_s"], f"{r['error_pct']:+.1f}%"])
    print_table(table, ["role", "row", "paper", "model", "system", "nodes", "batch", "quantity", "published",
                        "predicted", "error"], align="lllllrrlrrr")
    v, c = res["validation"], res["calibration"]
    print(f"\nvalidation rows: {v['count']}, median |error| {_pct(v['median_abs_error_pct'])}, "
          f"max |error| {_pct(v['max_abs_error_pct'])}")
    for scope, s in v["by_scope"].items():
        print(f"  {scope:<12} {s['count']:>3} rows, median |error| {_pct(s['median_abs_error_pct'])}, "
              f"max {_pct(s['max_abs_error_pct'])}")
    print(f"calibration rows: {c['count']}, median |error| {_pct(c['median_abs_error_pct'])}, "
          f"max |error| {_pct(c['max_abs_error_pct'])} (fitted, not validation)")
    print("error = (predicted - published) / published; for images/s rows positive means predicted faster")
    if res["skipped"]:
        print(f"\nskipped timed rows ({len(res['skipped'])}):")
        for s in res["skipped"]:
            pub = (f"{fmt_num(s['published_s'])} s" if s["published_s"] is not None
                   else f"{fmt_num(s['published_images_per_s'])} images/s")
            print(f"  {s['row']:<26} {s['paper'].split(' (')[0][:30]:<30} {s['model']:<16} {pub:>12}: {s['reason']}")
    return 0
