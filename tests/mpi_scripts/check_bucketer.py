"""GradientBucketer at the launched world size (run under mpiexec).

Each rank trains the same small model (same init) on its own data. The reference: every rank's local
gradients, gathered and averaged. After backward + finish() the bucketed gradients must equal the reference
on every rank, with overlap on and off and several bucket sizes; bucket timings must be consistent with
the rule (ready <= start <= end, one allreduce in flight, in bucket order). Rank 0 prints
"bucketer OK p=<p> configs=<n>".

--torch-dist: use the torch.distributed (gloo) engine instead of MPI algorithms.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from mpi4py import MPI
from torch import nn

from executor.comm import Hierarchical
from executor.comm.buckets import GradientBucketer
from executor.mpi_utils import run_guarded
from perfmodel.overlap import assign_buckets

COMM = MPI.COMM_WORLD
P, R = COMM.Get_size(), COMM.Get_rank()


def build_model() -> nn.Module:
    torch.manual_seed(1234)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(),
                         nn.Linear(16, 5))


def batch(rank: int, it: int):
    g = torch.Generator().manual_seed(1000 * rank + it)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)


def step(model: nn.Module, rank: int, it: int) -> None:
    x, y = batch(rank, it)
    model.zero_grad(set_to_none=False)
    nn.functional.cross_entropy(model(x), y).backward()


def reference(it: int) -> list[np.ndarray]:
    model = build_model()
    step(model, R, it)
    local = [p.grad.detach().numpy().copy() for p in model.parameters()]
    everyone = COMM.allgather(local)
    return [np.mean(np.stack([e[i] for e in everyone]), axis=0) for i in range(len(local))]


def fail(msg: str) -> None:
    raise AssertionError(msg)


def check_timing(tm, overlap: bool, what: str) -> None:
    bs = tm.buckets
    for b in bs:
        if not (b.ready_s <= b.launch_s <= b.start_s <= b.end_s):
            fail(f"{what}: bucket {b.index} times not ordered: {b}")
    for a, b in zip(bs, bs[1:]):
        if b.start_s < a.end_s or b.launch_s < a.launch_s:
            fail(f"{what}: bucket {b.index} started before bucket {a.index} ended (one in flight, in order)")
    if overlap and bs[0].launch_s >= tm.finish_s:
        fail(f"{what}: with overlap the first bucket must be launched during backward")
    if not overlap and min(b.launch_s for b in bs) < tm.finish_s:
        fail(f"{what}: without overlap no bucket may be launched before finish()")
    if not tm.first_ready_s <= tm.last_ready_s <= tm.finish_s <= tm.done_s:
        fail(f"{what}: iteration times not ordered: {tm}")
    if not (tm.comm_total_s >= 0 and tm.comm_exposed_s >= 0):
        fail(f"{what}: negative comm time")


def run_config(make, overlap: bool, bucket_bytes: float, granularity: str, what: str) -> None:
    model = build_model()
    with make(model, bucket_bytes, overlap, granularity) as bk:
        # the bucket assignment is perfmodel.overlap.assign_buckets over the groups in ready order
        if not np.array_equal(bk.group_bucket, assign_buckets(bk.group_nbytes, bucket_bytes)):
            fail(f"{what}: bucket assignment differs from perfmodel.overlap.assign_buckets")
        total = sum(p.numel() * 4 for p in model.parameters())
        if sum(bk.bucket_nbytes) != total:
            fail(f"{what}: buckets hold {sum(bk.bucket_nbytes)} bytes, parameters {total}")
        first_layer_last = bk.bucket_params[-1][-1] is list(model.parameters())[0] or granularity == "module"
        if not first_layer_last:
            fail(f"{what}: ready order is not reverse parameter order")
        for it in range(2):
            ref = reference(it)
            step(model, R, it)
            tm = bk.finish()
            for i, p in enumerate(model.parameters()):
                if not np.allclose(p.grad.numpy(), ref[i], rtol=1e-5, atol=1e-7):
                    fail(f"{what} it={it}: param {i} max err {np.max(np.abs(p.grad.numpy() - ref[i]))}")
            if len(tm.buckets) != bk.n_buckets:
                fail(f"{what}: {len(tm.buckets)} timings for {bk.n_buckets} buckets")
            check_timing(tm, overlap, f"{what} it={it}")
        if len(bk.history) != 2:
            fail(f"{what}: history has {len(bk.history)} entries")
    return bk.n_buckets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-dist", action="store_true")
    ap.add_argument("--algorithms", default="ring,halving_doubling,mpi",
                    help="MPI engines to check (hier = hierarchical with 2 ranks per node)")
    args = ap.parse_args()
    if args.torch_dist:
        from executor.comm import torch_dist

        info = torch_dist.init_from_mpi(backend="gloo")
        if (info.rank, info.world_size) != (R, P):
            fail(f"torch rank/size {info} != MPI {(R, P)}")
        makers = {"gloo": lambda m, b, o, g: torch_dist.make_bucketer(m, b, overlap=o, granularity=g)}
    else:
        makers = {
            name: (lambda alg: lambda m, b, o, g: GradientBucketer(m, b, COMM, alg, overlap=o, granularity=g))(alg)
            for name, alg in (("ring", "ring"), ("halving_doubling", "halving_doubling"), ("mpi", "mpi"),
                              ("hier", Hierarchical(ranks_per_node=2)))
            if name in args.algorithms.split(",")
        }
    n = 0
    seen_buckets = set()
    for name, make in makers.items():
        for overlap in (True, False):
            for bucket_bytes, gran in ((64.0, "module"), (64.0, "parameter"), (4000.0, "module"),
                                       (1 << 20, "module")):
                nb = run_config(make, overlap, bucket_bytes, gran,
                                f"{name} overlap={overlap} bucket={bucket_bytes:g} {gran}")
                seen_buckets.add(nb)
                n += 1
    # 64 B per module: 3 buckets (one per layer); per parameter: 4; 4000 B: 2; 1 MiB: 1
    if seen_buckets != {1, 2, 3, 4}:
        fail(f"bucket counts seen {sorted(seen_buckets)}; expected 1, 2, 3 and 4")
    if args.torch_dist:
        torch_dist.destroy()
    if R == 0:
        print(f"bucketer OK p={P} configs={n}", flush=True)


if __name__ == "__main__":
    run_guarded(main)
    sys.exit(0)
