"""Single-process checks of the communication layer (run as a plain python process: MPI singleton, p = 1).

Kept out of the pytest process so that pytest itself never initialises MPI. Prints "local OK <n>".
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from mpi4py import MPI

import perfmodel.collectives as pc
from executor import comm as xc
from executor.bench_allreduce import message_sizes, parse_bytes, run_allreduce_bench
from executor.comm.buckets import GradientBucketer, parameter_groups
from executor.mpi_utils import barrier, format_error, run_guarded, thread_level_name
from hardware.errors import ConfigError

N = [0]


def check(cond, what):
    N[0] += 1
    if not cond:
        raise AssertionError(what)


def raises(fn, exc=ConfigError, **attrs):
    try:
        fn()
    except exc as e:
        for k, v in attrs.items():
            check(getattr(e, k) == v, f"{k}: {getattr(e, k)!r} != {v!r}")
        return e
    raise AssertionError(f"{fn} did not raise {exc.__name__}")


def main():
    comm = MPI.COMM_WORLD
    check(comm.Get_size() == 1, "singleton")
    # registry: the cost model's names plus "mpi"
    names = xc.known_algorithms()
    check(names == ["ring", "recursive_doubling", "halving_doubling", "hierarchical", "mpi"], names)
    check(all(n in pc.ALGORITHMS for n in names if n != "mpi"), "names must match perfmodel.collectives")
    e = raises(lambda: xc.get_algorithm("nope"), source="--allreduce", field="allreduce", value="nope")
    check(all(n in e.reason for n in names), e.reason)
    check(str(e).startswith("--allreduce: field 'allreduce' = 'nope': unknown algorithm; known: ring"), str(e))
    raises(lambda: xc.get_algorithm("ring", ranks_per_node=2))
    h = xc.get_algorithm("hierarchical", ranks_per_node=4, inter_algorithm="halving_doubling")
    check(isinstance(h, xc.Hierarchical) and h.ranks_per_node == 4 and h.inter.name == "halving_doubling", h)
    raises(lambda: xc.Hierarchical(variant="x"))
    raises(lambda: xc.Hierarchical(inter_algorithm="hierarchical"))
    raises(lambda: xc.broadcast(np.zeros(2, np.float32), comm, algorithm="ring"))
    raises(lambda: xc.reduce_scatter(np.zeros(2, np.float32), comm, algorithm="halving_doubling"))
    raises(lambda: xc.reduce_scatter(np.zeros(4, np.float32), comm, counts=[3]))
    raises(lambda: xc.iallreduce(np.zeros(2, np.float32), comm, "ring", native=True))
    raises(lambda: barrier(comm, timeout_s=0))
    # block boundaries: p nearly equal blocks
    for n in (0, 1, 5, 7, 100):
        for p in (1, 2, 3, 5, 8):
            off = xc.block_offsets(n, p)
            d = np.diff(off)
            check(off[0] == 0 and off[-1] == n and d.min() >= 0 and d.max() - d.min() <= 1, (n, p, off))
    # p = 1: every collective leaves the data alone
    x = np.arange(10, dtype=np.float32)
    for name in names:
        a = x.copy()
        xc.allreduce(a, comm, name)
        check(np.array_equal(a, x), name)
        b = x.copy()
        xc.iallreduce(b, comm, name).wait(timeout_s=10)
        check(np.array_equal(b, x), name)
    v = xc.reduce_scatter(x.copy(), comm)
    check(np.array_equal(v, x), "reduce_scatter p=1")
    t = torch.arange(6, dtype=torch.float32)
    xc.allreduce(t, comm, "ring")
    check(torch.equal(t, torch.arange(6, dtype=torch.float32)), "tensor p=1")
    # bucketer input checks and the ready order
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    groups = parameter_groups(model)
    check([len(g) for g in groups] == [2, 2] and groups[0][0] is model[2].weight, "module groups reversed")
    pgroups = parameter_groups(model, "parameter")
    check([g[0] for g in pgroups] == list(model.parameters())[::-1], "parameter order reversed")
    raises(lambda: GradientBucketer(model, 0, comm))
    raises(lambda: GradientBucketer(model, float("nan"), comm))
    raises(lambda: GradientBucketer(model.half(), 100, comm))
    raises(lambda: parameter_groups(model, "layer"))
    model = model.float()
    with GradientBucketer(model, 1, comm) as bk:
        check(bk.n_buckets == 2 and bk.world_size == 1, bk)
        model(torch.ones(1, 3)).sum().backward()
        tm = bk.finish()
        check(len(tm.buckets) == 2 and tm.buckets[0].nbytes == 4 * (4 * 2 + 2), tm)
    # microbenchmark helpers
    check(message_sizes(4, 64) == [4, 8, 16, 32, 64], "sizes x2")
    check(message_sizes(4, 64, 4) == [4, 16, 64], "sizes x4")
    check(parse_bytes("64M") == 64 << 20 and parse_bytes("4K") == 4096 and parse_bytes(12) == 12, "parse_bytes")
    raises(lambda: parse_bytes("lots"))
    raises(lambda: message_sizes(3, 64))
    rows = run_allreduce_bench(comm, [4, 64], ["ring", "mpi"], iterations=3, warmup=1)
    check(len(rows) == 4 and all(r["correct"] and r["time_s"] > 0 and r["busbw_Bps"] == 0 for r in rows), rows)
    raises(lambda: run_allreduce_bench(comm, [6], ["ring"]))
    # one-line error format
    check(format_error(ValueError("x\ny"), 3) == "rank 3: ValueError: x | y", "format_error")
    check(thread_level_name() in ("serialized", "multiple"), thread_level_name())
    xc.close_default_engines()
    print(f"local OK {N[0]}", flush=True)


if __name__ == "__main__":
    run_guarded(main)
    sys.exit(0)
