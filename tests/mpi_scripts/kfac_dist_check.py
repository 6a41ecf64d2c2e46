"""Distributed K-FAC check, run under MPI: ``mpiexec -n P python tests/mpi_scripts/kfac_dist_check.py``.

For several optimizer configurations, every rank trains the same small network (two convolutions, a
Linear layer and one free scalar parameter, no batch norm) for a few steps on its equal slice of one global
batch, with :class:`executor.optim.kfac.KFAC` over ``MPI.COMM_WORLD``; every rank also runs single-process
K-FAC on the concatenated batch. After every step it checks that

- all ranks hold bitwise identical parameters (gathered to every rank), and
- the parameter change equals the single-process change within ``rtol`` (relative to its max-abs).

With ``grad_allgather = True`` the script plays the executor's bucketer (allreduce + divide by P before
``step``); with ``False`` the optimizer reduce-scatters the gradients itself. A batch-norm network is also
stepped to check that parameters stay identical (its batch statistics are local, so there is no
single-process reference). Rank 0 prints one line ``KFAC_DIST_OK {json}`` on success; any failure prints
the reason and aborts the job with exit code 1.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mpi4py import MPI  # noqa: E402
from torch import nn  # noqa: E402

from executor.optim.kfac import KFAC  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
LOCAL_BATCH = 4
STEPS = 3


class Scale(nn.Module):
    """A free scalar parameter (an identity-preconditioned unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * self.s


def make_model(bn: bool) -> nn.Module:
    torch.manual_seed(1234)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), Scale(),
               nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)]
    return nn.Sequential(*layers)


def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(SIZE * LOCAL_BATCH, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (SIZE * LOCAL_BATCH,), generator=g)
    return x, y


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()


def allreduce_average_grads(model: nn.Module) -> None:
    for p in model.parameters():
        if p.grad is not None:
            buf = p.grad.detach().contiguous()
            COMM.Allreduce(MPI.IN_PLACE, [buf.numpy(), MPI.FLOAT], op=MPI.SUM)
            buf.div_(SIZE)
            p.grad.copy_(buf)


def check_identical(vec: torch.Tensor, what: str) -> None:
    allv = np.empty((SIZE, vec.numel()), dtype=np.float32)
    COMM.Allgather([vec.numpy(), MPI.FLOAT], [allv, MPI.FLOAT])
    diff = float(np.abs(allv - allv[0]).max())
    if diff != 0.0:
        raise AssertionError(f"{what}: parameters differ across ranks (max |diff| = {diff:g})")


def run_case(opts: dict, rtol: float, bn: bool = False) -> dict:
    common = dict(lr=0.05, momentum=0.9, weight_decay=1e-4, damping=1e-2, stat_decay=0.9, refresh_interval=2)
    common.update(opts)
    dist_model = make_model(bn)
    dist = KFAC(dist_model, comm=COMM, **common)
    ref_model = None if bn else make_model(bn)
    ref = None if bn else KFAC(ref_model, **{k: v for k, v in common.items() if k != "grad_allgather"})
    p0 = flat_params(dist_model)
    worst = 0.0
    lo, hi = RANK * LOCAL_BATCH, (RANK + 1) * LOCAL_BATCH
    for step in range(STEPS):
        x, y = batches(step)
        dist.zero_grad()
        nn.functional.cross_entropy(dist_model(x[lo:hi]), y[lo:hi]).backward()
        if not dist.exchanges_gradients:
            allreduce_average_grads(dist_model)
        dist.step()
        check_identical(flat_params(dist_model), f"{opts} step {step}")
        if ref is not None:
            ref.zero_grad()
            nn.functional.cross_entropy(ref_model(x), y).backward()
            ref.step()
            d_dist = flat_params(dist_model) - p0
            d_ref = flat_params(ref_model) - p0
            err = float((d_dist - d_ref).abs().max() / d_ref.abs().max())
            worst = max(worst, err)
            if not err <= rtol:
                raise AssertionError(f"{opts} step {step}: distributed vs single-process relative error "
                                     f"{err:.3g} > {rtol:g}")
    return {"opts": opts, "bn": bn, "rel_err": worst, "refreshes": dist.refreshes,
            "owners": sorted(set(dist.owners.values())), "ranks_used": dist.ranks_used}


def check_half_reduce() -> None:
    """The 16-bit ReduceScatterV (user-defined MPI op adding in fp32) on values exact in bfloat16."""
    from executor.optim.mpi_buffers import MPIBufferComm

    comm = MPIBufferComm(COMM)
    counts = [r + 1 for r in range(SIZE)]
    send = (torch.arange(sum(counts), dtype=torch.float32) * (RANK + 1)).to(torch.bfloat16)
    got = comm.reduce_scatter_v(send, counts).float()
    full = torch.arange(sum(counts), dtype=torch.float32) * (SIZE * (SIZE + 1) / 2)
    start = sum(counts[:RANK])
    want = full[start:start + counts[RANK]]
    if not torch.equal(got, want):
        raise AssertionError(f"bfloat16 reduce-scatter: got {got.tolist()}, want {want.tolist()}")


def check_allgather() -> None:
    """The ring all-gather with uneven counts (one rank sends nothing), in fp32 and bfloat16, bit-exact."""
    from executor.optim.mpi_buffers import MPIBufferComm

    comm = MPIBufferComm(COMM)
    counts = [0 if r == SIZE - 1 else 2 * r + 3 for r in range(SIZE)]
    for dtype in (torch.float32, torch.bfloat16):
        parts = [(torch.arange(c, dtype=torch.float32) + 100 * r).to(dtype) for r, c in enumerate(counts)]
        got = comm.allgather_v(parts[RANK], counts)
        want = torch.cat(parts)
        if got.dtype != dtype or not torch.equal(got, want):
            raise AssertionError(f"{dtype} all-gather: got {got.tolist()}, want {want.tolist()}")
    try:
        comm.allgather_v(torch.zeros(counts[RANK] + 1), counts)
    except ValueError as exc:
        if "counts say" not in str(exc):
            raise
    else:
        raise AssertionError("a send that disagrees with counts was not refused")


def main() -> int:
    torch.set_num_threads(1)
    cases = [
        (dict(inverse="cholesky", grad_allgather=True), 1e-4, False),
        (dict(inverse="cholesky", grad_allgather=False), 1e-4, False),
        (dict(inverse="eig", damping_split="exact", grad_allgather=False, kl_clip=1e-3), 1e-4, False),
        (dict(inverse="eig", grad_allgather=True, refresh_schedule=((1, 1),)), 1e-4, False),
        # bfloat16 factors: each side rounds differently (sum of rounded local factors vs the rounded
        # full-batch factor), amplified by the inversion; the 16-bit reduction itself is checked exactly below
        (dict(inverse="cholesky", grad_allgather=True, factor_dtype_bytes=2), 0.3, False),
        (dict(inverse="cholesky", grad_allgather=False), 0.0, True),
    ]
    check_half_reduce()
    check_allgather()
    results = [run_case(o, tol, bn) for o, tol, bn in cases]
    if RANK == 0:
        print("KFAC_DIST_OK " + json.dumps({"world": SIZE, "cases": results}), flush=True)
    return 0


if __name__ == "__main__":
    code = 1
    try:
        code = main()
    except BaseException:  # noqa: BLE001 - any failure must abort every rank, never hang
        sys.stderr.write(f"rank {RANK} failed:\n{traceback.format_exc()}")
        sys.stderr.flush()
        COMM.Abort(1)
        os._exit(1)
    sys.exit(code)
