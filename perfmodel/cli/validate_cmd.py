"""``perfmodel validate``: how right the model is.

Two modes, one subcommand:

- ``perfmodel validate --published [--csv FILE ...] [--json]``: predictions against published results
  (:mod:`validation.published`): one record per published timed row (``predicted_s``, ``published_s``,
  ``error_pct``, ``role``), the median and max absolute error over the validation rows, the calibration rows'
  errors apart, and the rows that were skipped with their reasons.
- ``perfmodel validate [--quick] [--out DIR] [--json]``: predictions against measurements made here by the
  executor. Not built yet: :func:`run_measured` reports that in one line (exit 2); the later issue fills it in.
"""
from __future__ import annotations

import argparse
import sys

from hardware.errors import ToolkitError
from perfmodel.cli.output import fmt_num, print_json, print_table

HELP = "compare predictions with published results (--published) or with measurements made here"

__all__ = ["HELP", "configure", "run", "run_published", "run_measured", "MEASURED_NOT_BUILT"]

#: the one-line error of the measured mode until the executor exists
MEASURED_NOT_BUILT = ("perfmodel validate without --published needs the executor (not built yet); "
                      "use --published")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    pub = parser.add_argument_group("published results")
    pub.add_argument("--published", action="store_true",
                     help="compare predictions with the published results (no executor needed)")
    pub.add_argument("--csv", action="append", metavar="FILE",
                     help="published-results CSV to use (repeatable; default: the package's "
                          "published_results.csv and published_extra.csv)")
    meas = parser.add_argument_group("measurements made here (needs the executor)")
    meas.add_argument("--quick", action="store_true", help="a small set of configurations")
    meas.add_argument("--out", metavar="DIR", help="directory for the report")


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
    """Predicted vs measured on this machine (the executor's job; not built yet)."""
    raise ToolkitError(MEASURED_NOT_BUILT)


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
