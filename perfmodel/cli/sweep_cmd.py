"""``perfmodel sweep``: the analytic model over a grid of configurations, one row per configuration.

Examples::

    perfmodel sweep --system big-basin-p100 --nodes 1,2,4 --batch 256,512 --epochs 90 --json
    perfmodel sweep run.toml --systems dgx1-v100,stampede2-knl --nodes 1-512x2 --per-device-batch 32,64 \\
        --optimizers sgd,lars,kfac --allreduce ring,halving_doubling,auto --out sweep.csv --plot plots/

Sweeps that outgrow one machine run on MPI ranks (rank 0 runs the command, the others evaluate)::

    mpiexec -n 4 python -m mpi4py.futures -m perfmodel sweep ... --mpi

(``mpi4py.futures`` re-imports the main module on the worker ranks, so the entry module must call
``main()`` only under ``if __name__ == "__main__"``; with a cluster's launcher use the same
``python -m mpi4py.futures`` wrapper. Systems given as spec paths must exist on every rank.)

The first evaluation of a large node count prices collectives on the full topology graph and can take
seconds; later ones reuse the cached profiles (see :mod:`perfmodel.sweep`).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from typing import Any, Iterator

from hardware.errors import ConfigError, ToolkitError
from perfmodel.cli.output import print_json, print_table
from perfmodel.config import OPTIMIZER_NAMES, PRECISIONS, load_config
from perfmodel.sweep import (SweepGrid, SweepResult, parse_float_list, parse_int_list, parse_name_list,
                             run_sweep)

__all__ = ["HELP", "configure", "run", "add_grid_arguments", "grid_from_args", "executor_from_args",
           "PLAN_PER_DEVICE_BATCHES"]

HELP = "evaluate the analytic model over a grid (nodes x batch x optimizer x algorithm x system) to CSV/JSON"

#: per-device batches ``plan`` tries when no batch is given
PLAN_PER_DEVICE_BATCHES = (16, 32, 64, 128)

_TEXT_ROWS = 200    # a text table shows every row up to this many, else the fastest 20


def add_grid_arguments(parser: argparse.ArgumentParser, *, plan: bool = False) -> None:
    """The grid flags shared by ``sweep`` and ``plan`` (lists are comma-separated; unset ones come from the
    config file or its defaults)."""
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml", help="run configuration file (the base)")
    g = parser.add_argument_group("grid (comma-separated lists; unset dimensions come from the config)")
    g.add_argument("--model")
    g.add_argument("--dataset")
    g.add_argument("--system", "--systems", dest="systems", metavar="IDS",
                   help="catalog ids or spec files, e.g. dgx1-v100,stampede2-knl")
    nodes_default = "powers of two up to the system's size" if plan else "the config's nodes"
    g.add_argument("--nodes", metavar="LIST", help=f"e.g. 1,2,4,8 or 1-64x2 (powers of two), 1-8 (every "
                                                   f"count), 8-64+8 (step 8); default: {nodes_default}")
    b = g.add_mutually_exclusive_group()
    b.add_argument("--batch", "--batches", dest="batches", metavar="LIST",
                   help="global batches (images), e.g. 256,8192 or 256-8192x2")
    b.add_argument("--per-device-batch", dest="per_device_batches", metavar="LIST",
                   help="per-device batches: the global batch scales with the ranks"
                        + (f" (default {','.join(map(str, PLAN_PER_DEVICE_BATCHES))})" if plan else ""))
    g.add_argument("--optimizer", "--optimizers", dest="optimizers", metavar="LIST", nargs="?",
                   const=",".join(OPTIMIZER_NAMES),
                   help=f"{','.join(OPTIMIZER_NAMES)} or a subset; the bare flag means all three")
    g.add_argument("--allreduce", dest="algorithms", metavar="LIST",
                   help="allreduce algorithms or auto, e.g. ring,halving_doubling,auto")
    g.add_argument("--precision", "--precisions", dest="precisions", metavar="LIST", help="fp32,fp16")
    g.add_argument("--bucket-mb", dest="bucket_mb", metavar="LIST", help="gradient bucket sizes, MB (1e6 B)")
    ov = g.add_mutually_exclusive_group()
    ov.add_argument("--overlap", choices=("on", "off", "both"), help="overlap allreduce with backward")
    ov.add_argument("--no-overlap", action="store_true", help="same as --overlap off")
    e = g.add_mutually_exclusive_group()
    e.add_argument("--epochs", type=float, help="train every configuration for this many epochs")
    e.add_argument("--target-top1", type=float, help="epochs from the convergence model to this top-1 (%%)")
    g.add_argument("--ranks-per-node", type=int, help="default: the system's devices per node")
    x = parser.add_argument_group("execution")
    x.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: the CPU count; 1 runs in-process)")
    x.add_argument("--mpi", action="store_true",
                   help="evaluate on MPI ranks (mpi4py.futures.MPIPoolExecutor); launch with "
                        "mpiexec -n K python -m mpi4py.futures -m perfmodel ...")
    x.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def grid_from_args(args: argparse.Namespace, *, plan: bool = False) -> SweepGrid:
    """The :class:`~perfmodel.sweep.SweepGrid` of parsed grid flags (``plan`` uses the plan defaults)."""
    base = load_config(args.config, model=args.model, dataset=args.dataset, epochs=args.epochs,
                       target_top1=args.target_top1)
    if args.ranks_per_node is not None:
        if args.ranks_per_node < 1:
            raise ConfigError("--ranks-per-node", "ranks_per_node", args.ranks_per_node, "must be >= 1")
        base = dataclasses.replace(base, ranks_per_node=args.ranks_per_node)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers", "workers", args.workers, "must be >= 1")
    kw: dict[str, Any] = {}
    if args.systems:
        kw["systems"] = parse_name_list(args.systems, "--system", "system")
    if args.nodes:
        kw["nodes"] = parse_int_list(args.nodes, "--nodes", "nodes")
    elif plan:
        kw["nodes"] = None
    if args.batches:
        kw["batches"] = parse_int_list(args.batches, "--batch", "batch")
    elif args.per_device_batches:
        kw["per_device_batches"] = parse_int_list(args.per_device_batches, "--per-device-batch", "per_device_batch")
    elif plan:
        kw["per_device_batches"] = PLAN_PER_DEVICE_BATCHES
    if args.optimizers:
        kw["optimizers"] = parse_name_list(args.optimizers, "--optimizers", "optimizer", OPTIMIZER_NAMES)
    if args.algorithms:
        kw["algorithms"] = parse_name_list(args.algorithms, "--allreduce", "allreduce")
    if args.precisions:
        kw["precisions"] = parse_name_list(args.precisions, "--precision", "precision", PRECISIONS)
    if args.bucket_mb:
        kw["bucket_bytes"] = tuple(v * 1e6 for v in parse_float_list(args.bucket_mb, "--bucket-mb", "bucket_mb"))
    if args.no_overlap or args.overlap == "off":
        kw["overlaps"] = (False,)
    elif args.overlap == "on":
        kw["overlaps"] = (True,)
    elif args.overlap == "both":
        kw["overlaps"] = (True, False)
    return SweepGrid(base=base, **kw)


@contextlib.contextmanager
def executor_from_args(args: argparse.Namespace) -> Iterator[tuple[Any, int | None]]:
    """``(executor, workers)`` for ``run_sweep``: an MPIPoolExecutor with ``--mpi`` (mpi4py is imported
    only here), else ``(None, --workers)`` and ``run_sweep`` makes its own process pool."""
    if not args.mpi:
        yield None, args.workers
        return
    try:
        from mpi4py import MPI
        from mpi4py.futures import MPIPoolExecutor
    except ImportError as exc:  # pragma: no cover - mpi4py is a dependency
        raise ToolkitError(f"--mpi needs mpi4py ({exc})") from None
    size = MPI.COMM_WORLD.Get_size()
    workers = args.workers or (size - 1 if size > 1 else os.cpu_count() or 1)
    with MPIPoolExecutor() as ex:
        yield ex, workers


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


def configure(parser: argparse.ArgumentParser) -> None:
    add_grid_arguments(parser)
    parser.add_argument("--out", metavar="FILE.csv", help="write every row to this CSV (atomically)")
    parser.add_argument("--plot", metavar="DIR", help="write scaling.png and breakdown.png into DIR")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def _row_cells(r: dict) -> list:
    tt = r["time_to_train_s"]
    return [r["system"], r["optimizer"], r["allreduce"], r["nodes"], r["global_batch"],
            r["per_device_batch"] if r["per_device_batch"] is not None else "-",
            tt / 3600 if tt is not None else "-",
            r["node_hours"] if r["node_hours"] is not None else "-",
            round(r["images_per_s"]) if r["images_per_s"] is not None else "-",
            f"{r['scaling_efficiency']:.1%}" if r["scaling_efficiency"] is not None else "-",
            r["status"]]


_HEADERS = ["system", "optimizer", "allreduce", "nodes", "batch", "per dev", "time (h)", "node-h", "images/s",
            "scaling", "status"]


def _print_text(res: SweepResult, rows: list[dict]) -> None:
    counts = ", ".join(f"{v} {k}" for k, v in res.status_counts().items())
    if len(rows) <= _TEXT_ROWS:
        print_table([_row_cells(r) for r in rows], _HEADERS, align="lllrrrrrrrl")
    else:
        ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["time_to_train_s"])[:20]
        print(f"fastest 20 of {len(rows)} configurations (use --out FILE.csv or --json for every row):")
        print_table([_row_cells(r) for r in ok], _HEADERS, align="lllrrrrrrrl")
    print(f"\n{res.n} configurations ({counts}) in {res.elapsed_s:.2f} s")
    reasons = {}
    for r in rows:
        if r["status"] != "ok" and r["reason"]:
            reasons.setdefault(r["status"], r["reason"])
    for status, reason in reasons.items():
        print(f"  e.g. {status}: {reason}")


def _check_out(path: str | None) -> None:
    """Fail before the sweep, not after it, when the CSV cannot be written there."""
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError("--out", "out", path, "directory does not exist")
    if os.path.isdir(path):
        raise ConfigError("--out", "out", path, "is a directory; give a file name")


def run(args: argparse.Namespace) -> int:
    _check_out(args.out)
    grid = grid_from_args(args)
    with executor_from_args(args) as (executor, workers):
        res = run_sweep(grid, workers=workers, executor=executor, progress=_progress(args))
    rows = res.rows()
    if args.out:
        res.to_csv(args.out)
    written = []
    if args.plot:
        from perfmodel.plots import write_sweep_plots
        written = write_sweep_plots(rows, args.plot,
                                    "per_device_batch" if grid.per_device_mode else "global_batch")
    if args.json:
        print_json(rows)
        return 0
    _print_text(res, rows)
    if args.out:
        print(f"wrote {res.n} rows to {args.out}")
    for p in written:
        print(f"wrote {p}")
    return 0
