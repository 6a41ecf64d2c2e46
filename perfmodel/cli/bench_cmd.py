"""``perfmodel bench``: microbenchmarks of this machine, run as separate processes (under ``mpiexec`` for
several ranks) with a time limit; a failure prints one line naming the rank and the reason.

    perfmodel bench allreduce [--ranks N] [--algorithms ring,mpi,...] [--min-bytes 4] [--max-bytes 256M]
                              [--factor 2] [--iterations K] [--warmup K] [--timeout S] [--json] [--out FILE]
    perfmodel bench compute   [--model resnet20[,tiny...]] [--batches 1,2,4,8,16,32] [--threads T] [--ranks N]
                              [--layer-batches 1,32|none] [--repeats R] [--timeout S] [--json] [--out FILE]

``bench allreduce`` runs ``mpiexec -n N python -m executor.bench_allreduce`` (OSU-style: warm-up calls, a
barrier, a timed block per message size, float32, in place; latency = max over ranks of the mean time per
call; bus bandwidth as nccl-tests); ``--json`` prints its document plus ``summary``: per algorithm the
latency at the smallest size (``latency_s``) and the best bus bandwidth (``peak_busbw_Bps``, bytes/s).

``bench compute`` runs ``python -m executor.bench_compute`` (``mpiexec -n N`` with ``--ranks N``: N ranks
measured at once, each with the threads a training run of N ranks gets): per-layer and whole-model forward
and backward times, GEMM peak, memory bandwidth, optimizer steps and the gradient bucketer's overhead
(see :mod:`executor.bench_compute` for the method and the JSON keys).
"""
from __future__ import annotations

import argparse
import re
from typing import Any

from hardware.errors import ConfigError
from perfmodel.cli.output import print_json

__all__ = ["HELP", "configure", "run", "summarise_allreduce"]

HELP = "microbenchmarks: allreduce latency/bandwidth per algorithm (MPI), per-layer compute, GEMM, memory"

_ALGORITHMS = "ring,recursive_doubling,halving_doubling,hierarchical,mpi"


def _bytes(text: str, flag: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", str(text))
    if not m or int(m.group(1)) < 1:
        raise ConfigError(flag, flag.lstrip("-").replace("-", "_"), text,
                          "must be a byte count such as 4096, 64K, 64M or 1G (>= 1)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(flag, flag.lstrip("-").replace("-", "_"), value, "must be an integer >= 1")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``allreduce`` and ``compute`` actions."""
    sub = parser.add_subparsers(dest="bench_action", metavar="BENCHMARK")
    a = sub.add_parser("allreduce", help="OSU-style allreduce latency and bus bandwidth per algorithm (mpiexec)")
    a.add_argument("--ranks", type=int, default=2, help="MPI ranks (default 2)")
    a.add_argument("--algorithms", default=_ALGORITHMS, help=f"comma-separated (default {_ALGORITHMS})")
    a.add_argument("--min-bytes", default="4", help="smallest message (K/M/G suffixes; default 4)")
    a.add_argument("--max-bytes", default="256M", help="largest message (default 256M)")
    a.add_argument("--factor", type=int, default=2, help="size step factor (default 2)")
    a.add_argument("--iterations", type=int, default=None, help="timed calls per size (default adaptive)")
    a.add_argument("--warmup", type=int, default=None, help="untimed calls per size (default adaptive)")
    a.add_argument("--timeout", type=float, default=600.0, help="kill the job after this many seconds")
    a.add_argument("--system", default=None, help="'emulated': run the ranks across the hosts of the emulated "
                   "cluster (perfmodel cluster up); default: this machine")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.add_argument("--out", default=None, help="also write the JSON to this file (atomically)")
    c = sub.add_parser("compute", help="per-layer / whole-model times, GEMM peak, memory bandwidth (torch)")
    c.add_argument("--model", "--models", dest="models", default="resnet20",
                   help="model name(s), comma-separated (default resnet20)")
    c.add_argument("--batches", default="1,2,4,8,16,32", help="per-rank batches (default 1,2,4,8,16,32)")
    c.add_argument("--layer-batches", default=None, help="batches of the per-layer table (default: smallest and "
                   "largest of --batches; 'none' for none)")
    c.add_argument("--threads", type=int, default=None, help="threads per rank (default: cores / ranks)")
    c.add_argument("--ranks", type=int, default=1, help="ranks measured at once (default 1)")
    c.add_argument("--repeats", type=int, default=7, help="timed repetitions of every measurement (default 7)")
    c.add_argument("--optimizers", default="sgd,lars", help="optimizer steps to time ('none' for none)")
    c.add_argument("--no-bucketer", action="store_true", help="skip the gradient bucketer overhead")
    c.add_argument("--timeout", type=float, default=900.0, help="kill the job after this many seconds")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.add_argument("--out", default=None, help="also write the JSON to this file (atomically)")
    parser.set_defaults(_bench_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``allreduce`` / ``compute``; returns the exit code."""
    if args.bench_action == "allreduce":
        return _allreduce(args)
    if args.bench_action == "compute":
        return _compute(args)
    args._bench_parser.print_help()
    return 2


def _progress(args) -> Any:
    import sys

    if args.json:
        return None
    return lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)


def _write(path: str | None, doc: dict) -> None:
    if path:
        from executor.measurement import write_json_atomic

        write_json_atomic(path, doc)


def summarise_allreduce(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per algorithm: ``latency_s`` at the smallest size, ``peak_busbw_Bps`` and the size it was reached at."""
    out: dict[str, dict[str, float]] = {}
    for alg in dict.fromkeys(r["variant"] or r["algorithm"] for r in rows):
        mine = [r for r in rows if (r["variant"] or r["algorithm"]) == alg]
        small = min(mine, key=lambda r: r["nbytes"])
        best = max(mine, key=lambda r: r["busbw_Bps"])
        out[alg] = {"latency_s": small["time_s"], "latency_bytes": small["nbytes"],
                    "peak_busbw_Bps": best["busbw_Bps"], "peak_busbw_bytes": best["nbytes"]}
    return out


def _size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def _bench_system(system: str | None) -> str | None:
    """None (this machine) for no ``--system`` or ``local``; the emulated cluster's id or spec path as given;
    anything else is an error (a benchmark measures where it runs)."""
    if system is None or system == "local":
        return None
    from executor.cluster.hydra import is_emulated_system
    if is_emulated_system(system):
        return system
    raise ConfigError("--system", "system", system, "a benchmark runs on this machine ('local') or on the emulated "
                      "cluster ('emulated', after perfmodel cluster up)")


def _allreduce(args) -> int:
    from executor.calibrate import run_benchmark

    _positive(args.ranks, "--ranks")
    _positive(args.iterations, "--iterations")
    if args.warmup is not None and args.warmup < 0:
        raise ConfigError("--warmup", "warmup", args.warmup, "must be an integer >= 0")
    if args.factor < 2:
        raise ConfigError("--factor", "factor", args.factor, "must be an integer >= 2")
    lo, hi = _bytes(args.min_bytes, "--min-bytes"), _bytes(args.max_bytes, "--max-bytes")
    if lo % 4:
        raise ConfigError("--min-bytes", "min_bytes", args.min_bytes, "must be a multiple of 4 bytes (float32)")
    if hi < lo:
        raise ConfigError("--max-bytes", "max_bytes", args.max_bytes, f"must be >= --min-bytes ({lo})")
    algs = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    if not algs:
        raise ConfigError("--algorithms", "algorithms", args.algorithms, "name at least one algorithm")
    cmd = ["--format", "json", "--min-bytes", str(lo), "--max-bytes", str(hi), "--factor", str(args.factor),
           "--algorithms", ",".join(algs)]
    if args.iterations is not None:
        cmd += ["--iterations", str(args.iterations)]
    if args.warmup is not None:
        cmd += ["--warmup", str(args.warmup)]
    system = _bench_system(args.system)
    doc = run_benchmark("executor.bench_allreduce", cmd, args.ranks, timeout_s=args.timeout, threads=1,
                        what="bench allreduce", progress=_progress(args), system=system)
    if system is not None:
        doc["system"] = system
    doc["summary"] = summarise_allreduce(doc["results"])
    _write(args.out, doc)
    if args.json:
        print_json(doc)
        return 0
    rows = doc["results"]
    names = list(doc["summary"])
    by = {(r["variant"] or r["algorithm"], r["nbytes"]): r for r in rows}
    print(f"allreduce on {doc['ranks']} ranks ({doc.get('mpi_library', 'MPI')}); cell: bus bandwidth GB/s / "
          f"latency us")
    print(f"{'size':>9} " + " ".join(f"{a[:20]:>20}" for a in names))
    for n in sorted({r["nbytes"] for r in rows}):
        cells = []
        for a in names:
            r = by.get((a, n))
            cells.append(f"{r['busbw_Bps'] / 1e9:8.3f} /{r['time_s'] * 1e6:10.1f}" if r else "-")
        print(f"{_size(n):>9} " + " ".join(f"{c:>20}" for c in cells))
    for a, s in doc["summary"].items():
        print(f"{a}: latency {s['latency_s'] * 1e6:.1f} us at {_size(int(s['latency_bytes']))}, peak bus bandwidth "
              f"{s['peak_busbw_Bps'] / 1e9:.3f} GB/s at {_size(int(s['peak_busbw_bytes']))}")
    bad = [r for r in rows if r.get("correct") is False]
    return 1 if bad else 0


def _compute(args) -> int:
    from executor.bench_compute import format_tables, parse_int_list
    from executor.calibrate import run_benchmark
    from executor.launch import cores_per_rank

    _positive(args.ranks, "--ranks")
    _positive(args.threads, "--threads")
    _positive(args.repeats, "--repeats")
    parse_int_list(args.batches, "batches")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        raise ConfigError("--model", "model", args.models, "name at least one model")
    threads = args.threads if args.threads is not None else cores_per_rank(args.ranks)
    cmd = ["--models", ",".join(models), "--batches", args.batches, "--threads", str(threads),
           "--repeats", str(args.repeats), "--optimizers", args.optimizers, "--json", "--quiet"]
    if args.layer_batches is not None:
        cmd += ["--layer-batches", args.layer_batches]
    if args.no_bucketer:
        cmd.append("--no-bucketer")
    doc = run_benchmark("executor.bench_compute", cmd, args.ranks, timeout_s=args.timeout, threads=threads,
                        what="bench compute", progress=_progress(args))
    _write(args.out, doc)
    if args.json:
        print_json(doc)
    else:
        print(format_tables(doc))
    return 0
