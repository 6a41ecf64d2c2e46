"""``perfmodel plan``: capacity planning over a sweep — the cheapest configuration (node-hours) that meets a
deadline, the fastest within a node-hour budget, and the Pareto front of time to train against node-hours.

Defaults: the config's system; nodes = powers of two up to the system's size; per-device batches
16,32,64,128 (the global batch scales with the ranks); the config's optimizer (``--optimizers`` alone: all
three). No configuration meeting the deadline (or fitting the budget) is an answer, printed with the reason
(exit 0; JSON null with ``reason``); a malformed deadline or budget is an input error (exit 2).

Examples::

    perfmodel plan --system dgx1-v100 --deadline 2h
    perfmodel plan run.toml --optimizers --deadline 1h30m --budget-node-hours 200 --json
"""
from __future__ import annotations

import argparse

from perfmodel.cli.output import print_json, print_table
from perfmodel.cli.sweep_cmd import add_grid_arguments, executor_from_args, grid_from_args
from perfmodel.plan import format_duration, make_plan, parse_budget, parse_duration
from perfmodel.sweep import run_sweep

__all__ = ["HELP", "configure", "run"]

HELP = "cheapest configuration meeting a deadline, fastest within a node-hour budget, and the Pareto front"

_FRONT_ROWS = 30   # text output shows at most this many front points (JSON has all)


def configure(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(parser, plan=True)
    parser.add_argument("--deadline", metavar="DURATION",
                        help="time-to-train deadline: 30min, 2h, 90s, 1h30m, or seconds")
    parser.add_argument("--budget-node-hours", metavar="X", help="node-hour budget (nodes x hours)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def _cells(r: dict) -> list:
    return [r["system"], r["optimizer"], r["allreduce"], r["nodes"], r["global_batch"], r["per_device_batch"],
            format_duration(r["time_to_train_s"]), r["node_hours"], round(r["images_per_s"]),
            f"{r['scaling_efficiency']:.1%}" if r["scaling_efficiency"] is not None else "-"]


_HEADERS = ["system", "optimizer", "allreduce", "nodes", "batch", "per dev", "time to train", "node-h",
            "images/s", "scaling"]
_ALIGN = "lllrrrrrrr"


def run(args: argparse.Namespace) -> int:
    # parse the targets before the (possibly long) sweep so that a typo fails at once
    deadline_s = parse_duration(args.deadline) if args.deadline is not None else None
    budget = parse_budget(args.budget_node_hours) if args.budget_node_hours is not None else None
    grid = grid_from_args(args, plan=True)
    with executor_from_args(args) as (executor, workers):
        res = run_sweep(grid, workers=workers, executor=executor, progress=False if args.quiet else None)
    result = make_plan(res.rows(), deadline_s, budget)
    if args.json:
        print_json(result)
        return 0
    print(f"{result['configs']} configurations evaluated ({result['feasible']} feasible) in {res.elapsed_s:.2f} s")
    if deadline_s is not None:
        print(f"\ncheapest configuration meeting the deadline of {format_duration(deadline_s)}:")
        row = result["cheapest_meeting_deadline"]
        if row is None:
            print(f"  none: {result['reasons']['cheapest_meeting_deadline']}")
        else:
            print_table([_cells(row)], _HEADERS, align=_ALIGN)
    if budget is not None:
        print(f"\nfastest configuration within {budget:g} node-hours:")
        row = result["fastest_within_budget"]
        if row is None:
            print(f"  none: {result['reasons']['fastest_within_budget']}")
        else:
            print_table([_cells(row)], _HEADERS, align=_ALIGN)
    front = result["pareto_front"]
    shown = front if len(front) <= _FRONT_ROWS else front[:_FRONT_ROWS]
    print(f"\nPareto front, time to train vs node-hours ({len(front)} configurations"
          + (f", first {_FRONT_ROWS} shown; --json for all" if len(front) > _FRONT_ROWS else "") + "):")
    if shown:
        print_table([_cells(r) for r in shown], _HEADERS, align=_ALIGN)
    else:
        print("  none: no feasible configuration in the grid")
    return 0
