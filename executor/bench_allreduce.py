"""OSU-style allreduce microbenchmark of the executor's algorithms (and MPI's own).

Run under MPI::

    mpiexec -n 2 python -m executor.bench_allreduce --max-bytes 64M [--algorithms ring,mpi] [--format table]

Method (after osu_allreduce, OSU Micro-Benchmarks): for each message size (powers of ``--factor`` from
``--min-bytes`` to ``--max-bytes``; float32, so 4 B is one element) and each algorithm: ``warmup``
untimed calls, a barrier, then one timed block of ``iterations`` back-to-back in-place allreduces; each
rank's latency is the block time divided by ``iterations``, and the reported latency ``time_s`` is the
maximum over ranks (the slowest rank sets the collective's time; the mean and minimum over ranks are
reported too). Bandwidths follow nccl-tests (:mod:`perfmodel.collectives.metrics`): algorithm bandwidth
``n / t`` and bus bandwidth ``n / t * 2(p-1)/p``. The buffer holds zeros while timed (no denormals, no
overflow); one extra call afterwards checks the result (every rank contributes ``rank + 1``).

Iterations: fixed with ``--iterations``, else ``default_iterations(n)``: about 64 MiB of traffic per
timed block, between 5 and 200 calls (OSU uses 1000/100 for small/large messages; Python-level algorithms
do not need as many to be stable, and 256 MB messages would take minutes).

Prints one JSON object on rank 0 (``--format json``, default) or a table (``--format table``); ``--out
FILE`` also writes the JSON atomically. :func:`run_allreduce_bench` is the library entry point.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import Any, Callable, Sequence

import numpy as np
from mpi4py import MPI

from hardware.errors import ConfigError
from perfmodel.collectives.metrics import algorithm_bandwidth, bus_factor

from executor.comm import allreduce, get_algorithm, known_algorithms
from executor.comm.base import AllreduceAlgorithm
from executor.heap import keep_heap
from executor.mpi_utils import run_guarded, thread_level_name

from perfmodel.atomic import atomic_write

__all__ = ["message_sizes", "default_iterations", "default_warmup", "run_allreduce_bench", "parse_bytes",
           "format_table", "main"]

SOURCE = "bench allreduce"

IterSpec = int | Callable[[int], int]


def parse_bytes(text: str | int, field: str = "bytes") -> int:
    """``"64M"`` -> 67108864 (suffixes K, M, G are powers of 1024; ``B`` optional); plain integers pass."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", str(text))
        if not m:
            raise ConfigError(SOURCE, field, text, "must be a byte count such as 4096, 64K, 64M or 1G")
        value = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    if value < 1:
        raise ConfigError(SOURCE, field, text, "must be >= 1 byte")
    return value


def message_sizes(min_bytes: int = 4, max_bytes: int = 256 << 20, factor: int = 2, itemsize: int = 4) -> list[int]:
    """Message sizes in bytes: ``min_bytes * factor**k`` up to ``max_bytes`` (whole elements of ``itemsize``)."""
    if factor < 2:
        raise ConfigError(SOURCE, "factor", factor, "must be an integer >= 2")
    if min_bytes < itemsize or min_bytes % itemsize:
        raise ConfigError(SOURCE, "min_bytes", min_bytes, f"must be a positive multiple of {itemsize} bytes")
    if max_bytes < min_bytes:
        raise ConfigError(SOURCE, "max_bytes", max_bytes, f"must be >= min_bytes ({min_bytes})")
    out, n = [], int(min_bytes)
    while n <= max_bytes:
        out.append(n)
        n *= factor
    return out


def default_iterations(nbytes: int) -> int:
    """Timed calls per size: about 64 MiB per block, clamped to [5, 200]."""
    return int(min(200, max(5, (64 << 20) // max(int(nbytes), 1))))


def default_warmup(nbytes: int) -> int:
    """Untimed calls per size: a tenth of :func:`default_iterations`, at least 2."""
    return max(2, default_iterations(nbytes) // 10)


def _count(spec: IterSpec, nbytes: int, field: str, minimum: int) -> int:
    k = spec(nbytes) if callable(spec) else spec
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < minimum:
        raise ConfigError(SOURCE, field, k, f"must be an integer >= {minimum}")
    return int(k)


def run_allreduce_bench(comm: MPI.Comm, sizes: Sequence[int],
                        algorithms: Sequence[str | AllreduceAlgorithm] = ("ring", "mpi"),
                        iterations: IterSpec = default_iterations, warmup: IterSpec = default_warmup,
                        check: bool = True) -> list[dict[str, Any]]:
    """Measure in-place float32 allreduce latency and bandwidth per algorithm and message size.

    Collective: every rank of ``comm`` must call it with the same arguments.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
    sizes : sequence of int
        Message sizes in bytes (multiples of 4).
    algorithms : sequence of str or AllreduceAlgorithm
        Registry names (:data:`executor.comm.ALGORITHMS`) or instances.
    iterations, warmup : int or callable(nbytes) -> int
        Timed and untimed calls per size.
    check : bool
        Verify one extra call's result (sum of ``rank + 1``).

    Returns
    -------
    list of dict
        One row per (algorithm, size), algorithms outer: ``algorithm``, ``ranks``, ``nbytes``, ``count``,
        ``iterations``, ``warmup``, ``time_s`` (mean latency per call, max over ranks), ``time_avg_s``,
        ``time_min_s`` (mean/min over ranks), ``algbw_Bps``, ``busbw_Bps`` (from ``time_s``; bytes/s),
        ``correct`` (bool, or ``None`` without ``check``).
    """
    algs = [get_algorithm(a) for a in algorithms]
    p = comm.Get_size()
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 4 or n % 4:
            raise ConfigError(SOURCE, "sizes", n, "message sizes must be positive multiples of 4 bytes")
    counts = [int(n) // 4 for n in sizes]
    buf = np.zeros(max(counts, default=1), dtype=np.float32)
    expected = np.float32(p * (p + 1) / 2)
    rows: list[dict[str, Any]] = []
    stats = np.empty(3)
    out = np.empty(3)
    for alg in algs:
        for nbytes, count in zip(sizes, counts):
            a = buf[:count]
            a.fill(0.0)
            iters = _count(iterations, int(nbytes), "iterations", 1)
            warm = _count(warmup, int(nbytes), "warmup", 0)
            for _ in range(warm):
                allreduce(a, comm, alg)
            comm.Barrier()
            t0 = MPI.Wtime()
            for _ in range(iters):
                allreduce(a, comm, alg)
            t = (MPI.Wtime() - t0) / iters
            stats[:] = (t, -t, t)
            comm.Allreduce(stats[:2], out[:2], op=MPI.MAX)
            comm.Allreduce(stats[2:], out[2:], op=MPI.SUM)
            t_max, t_min, t_avg = float(out[0]), float(-out[1]), float(out[2]) / p
            correct = None
            if check:
                a.fill(comm.Get_rank() + 1)
                allreduce(a, comm, alg)
                ok = np.array([1 if np.all(a == expected) else 0], dtype=np.int32)
                comm.Allreduce(MPI.IN_PLACE, ok, op=MPI.MIN)
                correct = bool(ok[0])
                a.fill(0.0)
            if t_max > 0:
                algbw = float(algorithm_bandwidth(int(nbytes), t_max))
            else:  # pragma: no cover - a timer resolution artefact
                algbw = math.inf
            rows.append({
                "algorithm": alg.name,
                "variant": None if _is_default(alg) else repr(alg),
                "ranks": p, "nbytes": int(nbytes), "count": count, "iterations": iters, "warmup": warm,
                "time_s": t_max, "time_avg_s": t_avg, "time_min_s": t_min,
                "algbw_Bps": algbw, "busbw_Bps": algbw * float(bus_factor(p, "allreduce")),
                "correct": correct,
            })
    return rows


def _is_default(alg: AllreduceAlgorithm) -> bool:
    from executor.comm import ALGORITHMS

    return ALGORITHMS.get(alg.name) is alg


def _fmt_size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Bus bandwidth (GB/s, 1e9) and latency (us) per size (rows) and algorithm (column pairs)."""
    algs = list(dict.fromkeys(r["variant"] or r["algorithm"] for r in rows))
    sizes = list(dict.fromkeys(r["nbytes"] for r in rows))
    by = {(r["variant"] or r["algorithm"], r["nbytes"]): r for r in rows}
    head = f"{'size':>9} " + " ".join(f"{a[:18]:>18}" for a in algs)
    lines = [f"ranks={rows[0]['ranks'] if rows else '?'}  cell: bus bandwidth GB/s / latency us", head]
    for n in sizes:
        cells = []
        for a in algs:
            r = by.get((a, n))
            cells.append(f"{r['busbw_Bps'] / 1e9:8.3f} /{r['time_s'] * 1e6:8.1f}" if r else f"{'-':>18}")
        lines.append(f"{_fmt_size(n):>9} " + " ".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def _write_atomic(path: str, text: str) -> None:
    atomic_write(path, text)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="executor.bench_allreduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--min-bytes", default="4", help="smallest message (bytes; K/M/G suffixes), default 4")
    ap.add_argument("--max-bytes", default="256M", help="largest message, default 256M")
    ap.add_argument("--factor", type=int, default=2, help="size step factor (2 or 4 ...), default 2")
    ap.add_argument("--algorithms", default=",".join(known_algorithms()),
                    help=f"comma-separated, default all: {','.join(known_algorithms())}")
    ap.add_argument("--iterations", type=int, default=None, help="timed calls per size (default: adaptive)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per size (default: adaptive)")
    ap.add_argument("--ranks-per-node", type=int, default=None,
                    help="node size for 'hierarchical' (default: ranks sharing memory)")
    ap.add_argument("--no-check", action="store_true", help="skip the result check")
    ap.add_argument("--format", choices=("json", "table"), default="json")
    ap.add_argument("--out", default=None, help="also write the JSON to this file (atomically)")
    return ap


def main(argv: list[str] | None = None, comm: MPI.Comm | None = None) -> int:
    """Command-line entry point (run under mpiexec); rank 0 prints the results. Returns the exit status."""
    args = _parser().parse_args(argv)
    heap = keep_heap()   # the executor's ranks allocate the same way (executor.heap)
    comm = MPI.COMM_WORLD if comm is None else comm
    sizes = message_sizes(parse_bytes(args.min_bytes, "min_bytes"), parse_bytes(args.max_bytes, "max_bytes"),
                          args.factor)
    algs: list[str | AllreduceAlgorithm] = []
    for name in (s.strip() for s in args.algorithms.split(",") if s.strip()):
        if name == "hierarchical" and args.ranks_per_node is not None:
            algs.append(get_algorithm(name, ranks_per_node=args.ranks_per_node))
        else:
            algs.append(get_algorithm(name))
    rows = run_allreduce_bench(comm, sizes, algs,
                               iterations=default_iterations if args.iterations is None else args.iterations,
                               warmup=default_warmup if args.warmup is None else args.warmup,
                               check=not args.no_check)
    if comm.Get_rank() == 0:
        doc = {
            "benchmark": "allreduce",
            "ranks": comm.Get_size(),
            "dtype": "float32",
            "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
            "mpi4py_thread_level": thread_level_name(),
            "malloc_kept_heap": heap,
            "results": rows,
        }
        text = json.dumps(doc, indent=1)
        if args.out:
            _write_atomic(args.out, text + "\n")
        print(format_table(rows) if args.format == "table" else text, flush=True)
    bad = [r for r in rows if r["correct"] is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
