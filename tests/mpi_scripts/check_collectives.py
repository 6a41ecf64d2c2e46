"""Correctness of the explicit collectives at the launched world size (run under mpiexec).

Every rank regenerates every rank's input from the same seeds, so each rank knows the reference sum
without communicating. The flat algorithms are also checked against the cost model's step pattern: each
rank sends exactly the messages and bytes that perfmodel.collectives' steps say it sends. Integer-valued float32 data makes the sums exact; random floats are checked with a
tolerance. Any failure raises, and run_guarded turns it into an abort (non-zero exit, "rank R: ..." on
stderr). Rank 0 prints "collectives OK p=<p> checks=<n>" at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np
from mpi4py import MPI

from executor import comm as xc
from executor.mpi_utils import run_guarded
from hardware.errors import ConfigError

COMM = MPI.COMM_WORLD
P, R = COMM.Get_size(), COMM.Get_rank()
CHECKS = [0]


def inputs(n: int, seed: int, dtype=np.float32, integer: bool = True) -> list[np.ndarray]:
    out = []
    for q in range(P):
        rng = np.random.default_rng([seed, q, n])
        x = rng.integers(-1000, 1000, size=n) if integer else rng.standard_normal(n)
        out.append(x.astype(dtype))
    return out


def check(cond: bool, what: str) -> None:
    CHECKS[0] += 1
    if not cond:
        raise AssertionError(what)


def same_on_all_ranks(a: np.ndarray, what: str) -> None:
    h = hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
    hs = COMM.allgather(h)
    check(len(set(hs)) == 1, f"{what}: results differ between ranks")


def algorithms():
    algs = [xc.get_algorithm(n) for n in xc.known_algorithms()]
    algs += [
        xc.Hierarchical(ranks_per_node=2),
        xc.Hierarchical(ranks_per_node=2, variant="reduce_broadcast"),
        xc.Hierarchical(ranks_per_node=2, inter_algorithm="halving_doubling"),
        xc.Hierarchical(ranks_per_node=1, inter_algorithm="recursive_doubling"),
        xc.Hierarchical(ranks_per_node=3, inter_algorithm="mpi"),
    ]
    return algs


def sizes() -> list[int]:
    return sorted({1, 2, max(P - 1, 1), P, P + 1, 7, 33, 1000, 4099})


def check_allreduce() -> None:
    for alg in algorithms():
        for n in sizes():
            for integer, dtype in ((True, np.float32), (False, np.float32), (False, np.float64)):
                if dtype == np.float64 and n not in (1, 1000):
                    continue
                xs = inputs(n, 11, dtype, integer)
                ref = np.sum(np.stack(xs).astype(np.float64), axis=0)
                a = xs[R].copy()
                xc.allreduce(a, COMM, alg)
                what = f"{alg!r} n={n} integer={integer} dtype={np.dtype(dtype)}"
                if integer:
                    check(np.array_equal(a, ref.astype(dtype)), f"{what}: not exact")
                else:
                    check(np.allclose(a, ref, rtol=1e-5, atol=1e-5), f"{what}: max err "
                          f"{np.max(np.abs(a - ref))}")
                same_on_all_ranks(a, what)
        # a 2-D array is reduced as its flat view
        xs = inputs(60, 5)
        a = xs[R].reshape(6, 10).copy()
        xc.allreduce(a, COMM, alg)
        check(np.array_equal(a.ravel(), np.sum(np.stack(xs), axis=0)), f"{alg!r} 2-D")


def check_nonblocking() -> None:
    for alg in algorithms():
        bufs, refs = [], []
        for k, n in enumerate((1, 1000, 4099)):
            xs = inputs(n, 100 + k)
            bufs.append(xs[R].copy())
            refs.append(np.sum(np.stack(xs), axis=0))
        hs = [xc.iallreduce(b, COMM, alg) for b in bufs]
        for h in reversed(hs):
            h.wait(timeout_s=60)
        for b, ref, h in zip(bufs, refs, hs):
            check(np.array_equal(b, ref), f"iallreduce {alg!r} n={b.size}")
            check(h.start_s >= h.submit_s and h.end_s >= h.start_s, f"iallreduce {alg!r} timings")
        check(all(hs[k + 1].start_s >= hs[k].end_s for k in range(len(hs) - 1)), f"{alg!r}: one in flight")
    xs = inputs(777, 3)
    b = xs[R].copy()
    h = xc.iallreduce(b, COMM, "mpi", native=True)
    h.wait(timeout_s=60)
    check(np.array_equal(b, np.sum(np.stack(xs), axis=0)), "native Iallreduce")
    with xc.MPIEngine(COMM, xc.Hierarchical(ranks_per_node=2), abort_on_error=False) as eng:
        xs = inputs(1001, 4)
        b = xs[R].copy()
        eng.submit(b).wait(timeout_s=60)
        check(np.array_equal(b, np.sum(np.stack(xs), axis=0)), "MPIEngine hierarchical")


def count_variants() -> list:
    out = [None]
    out.append([(q % 3) for q in range(P)])  # includes zero counts
    c = [0] * P
    c[-1] = 10  # everything on the last rank
    out.append(c)
    return out


def check_scatter_gather() -> None:
    for alg in xc.SCATTER_GATHER_ALGORITHMS:
        for counts in count_variants():
            for n in ([1, 2, P, 3 * P + 1, 1000] if counts is None else [int(sum(counts))]):
                xs = inputs(n, 21)
                ref = np.sum(np.stack(xs), axis=0)
                off = xc.block_offsets(n, P) if counts is None else np.concatenate([[0], np.cumsum(counts)])
                lo, hi = int(off[R]), int(off[R + 1])
                a = xs[R].copy()
                view = xc.reduce_scatter(a, COMM, alg, counts=counts)
                check(np.shares_memory(view, a) or view.size == 0, f"reduce_scatter {alg}: not a view")
                check(np.array_equal(view, ref[lo:hi]) and view.size == hi - lo,
                      f"reduce_scatter {alg} n={n} counts={counts}")
                # all-gather the reduced blocks back into the full sum
                xc.allgather(a, COMM, alg, counts=counts)
                check(np.array_equal(a, ref), f"reduce_scatter+allgather {alg} n={n} counts={counts}")
                # all-gather of distinct data
                full = inputs(n, 22)[0]
                b = np.full(n, -1.0, dtype=np.float32)
                b[lo:hi] = full[lo:hi]
                xc.allgather(b, COMM, alg, counts=counts)
                check(np.array_equal(b, full), f"allgather {alg} n={n} counts={counts}")


def check_broadcast() -> None:
    for alg in xc.BROADCASTS:
        for root in sorted({0, P - 1, P // 2}):
            for n in (1, 5, 4099):
                x = inputs(n, 31 + root)[root]
                a = x.copy() if R == root else np.zeros(n, dtype=np.float32)
                xc.broadcast(a, COMM, root=root, algorithm=alg)
                check(np.array_equal(a, x), f"broadcast {alg} root={root} n={n}")


def check_errors() -> None:
    for bad, field in (("foo", "allreduce"),):
        try:
            xc.allreduce(np.zeros(3, np.float32), COMM, bad)
        except ConfigError as e:
            check(e.source == "--allreduce" and e.field == field and "ring" in e.reason, f"error text {e}")
        else:
            check(False, "unknown algorithm accepted")
    for buf in (np.zeros((4, 4), np.float32)[:, 1], np.zeros(4, np.int32), [1.0, 2.0]):
        try:
            xc.allreduce(buf, COMM, "ring")
        except ConfigError:
            check(True, "")
        else:
            check(False, f"bad buffer accepted: {buf!r}")
    try:
        xc.Hierarchical(ranks_per_node=0)
    except ConfigError:
        check(True, "")
    else:
        check(False, "ranks_per_node=0 accepted")


class CountingComm:
    """Proxy of a communicator that counts the messages and bytes this rank sends."""

    def __init__(self, comm):
        self._comm = comm
        self.messages = 0
        self.nbytes = 0

    def _count(self, buf):
        self.messages += 1
        self.nbytes += np.asarray(buf).nbytes

    def Sendrecv(self, sendbuf, *args, **kwargs):
        self._count(sendbuf)
        return self._comm.Sendrecv(sendbuf, *args, **kwargs)

    def Send(self, buf, *args, **kwargs):
        self._count(buf)
        return self._comm.Send(buf, *args, **kwargs)

    def Isend(self, buf, *args, **kwargs):
        self._count(buf)
        return self._comm.Isend(buf, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._comm, name)


def check_message_pattern() -> None:
    """Each rank sends exactly the messages and bytes of the cost model's step pattern
    (perfmodel.collectives: Algorithm.steps + per_rank_send_frac)."""
    import perfmodel.collectives as pc

    q = 1 << (P.bit_length() - 1)
    n = 8 * P * q  # divisible by p and by the power-of-two survivors: fractions are exact
    for name in ("ring", "recursive_doubling", "halving_doubling"):
        steps = pc.ALGORITHMS[name].steps(P)
        frac = pc.per_rank_send_frac(steps, P)[R]
        msgs = sum(int(np.sum(st.pairs[:, 0] == R)) * st.repeat for st in steps)
        cc = CountingComm(COMM)
        xs = inputs(n, 51)
        a = xs[R].copy()
        xc.get_algorithm(name).allreduce(a, cc)
        check(np.array_equal(a, np.sum(np.stack(xs), axis=0)), f"{name} through the counting proxy")
        check(cc.messages == msgs, f"{name}: rank {R} sent {cc.messages} messages, cost model {msgs}")
        check(cc.nbytes == round(frac * 4 * n), f"{name}: rank {R} sent {cc.nbytes} B, cost model {frac * 4 * n}")


def check_torch() -> None:
    import torch

    for alg in xc.known_algorithms():
        xs = inputs(1000, 41)
        t = torch.from_numpy(xs[R].copy()).reshape(10, 100)
        xc.allreduce(t, COMM, alg)
        check(np.array_equal(t.numpy().ravel(), np.sum(np.stack(xs), axis=0)), f"torch allreduce {alg}")
        t = torch.from_numpy(xs[R].copy())
        xc.iallreduce(t, COMM, alg).wait(timeout_s=60)
        check(np.array_equal(t.numpy(), np.sum(np.stack(xs), axis=0)), f"torch iallreduce {alg}")
    xs = inputs(100, 42)
    t = torch.from_numpy(xs[R].copy())
    v = xc.reduce_scatter(t, COMM, "ring")
    off = xc.block_offsets(100, P)
    check(isinstance(v, torch.Tensor) and np.array_equal(v.numpy(), np.sum(np.stack(xs), 0)[off[R]:off[R + 1]]),
          "torch reduce_scatter")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch", action="store_true", help="also check torch tensors")
    args = ap.parse_args()
    check_errors()
    check_allreduce()
    check_message_pattern()
    check_nonblocking()
    check_scatter_gather()
    check_broadcast()
    if args.torch:
        check_torch()
    xc.close_default_engines()
    total = COMM.reduce(CHECKS[0], op=MPI.SUM, root=0)
    if R == 0:
        print(f"collectives OK p={P} checks={total}", flush=True)


if __name__ == "__main__":
    run_guarded(main)
    sys.exit(0)
