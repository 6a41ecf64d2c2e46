"""The executor's own overhead: its throughput next to a plain PyTorch loop (DistributedDataParallel over
torch.distributed gloo) on the same configuration, same ranks, same threads per rank, same synthetic data.

    .venv/bin/python benchmarks/bench_executor_overhead.py [--model resnet20] [--batch 64] [--ranks 2]
        [--iterations 20] [--repeats 3]

Prints images/s of: the executor with its MPI backend (mpi4py, MPI's own allreduce on a communication
thread), the executor with the torch backend (gloo), and the plain DDP loop; and the overhead of each
executor variant relative to the plain loop (positive = slower). The medians of ``--repeats`` runs are
compared, alternating the variants so that background load affects them alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLAIN = textwrap.dedent('''
    import json, os, sys, time
    import torch, torch.distributed as dist, torch.nn.functional as F
    from mpi4py import MPI
    from executor.models import build_model
    model_name, batch, iters, warm, threads, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    port = comm.bcast(29500 + (os.getpid() % 1000) if rank == 0 else None, root=0)
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(model_name)
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=25)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    from executor.models import get_model_info
    shape = get_model_info(model_name).input_shape
    g = torch.Generator().manual_seed(rank)
    x = torch.randn((batch // world, *shape), generator=g)
    y = torch.randint(0, 10, (batch // world,), generator=g)
    times = []
    for i in range(warm + iters):
        t0 = time.perf_counter()
        loss = F.cross_entropy(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        times.append(comm.allreduce(dt, op=MPI.MAX))
    if rank == 0:
        it = sum(times[warm:]) / iters
        json.dump({"iteration_s": it, "images_per_s": batch / it}, open(out, "w"))
    dist.destroy_process_group()
''')


def plain_loop(model: str, batch: int, ranks: int, iters: int, warm: int) -> float:
    from executor.launch import cores_per_rank, find_mpiexec

    with tempfile.TemporaryDirectory() as d:
        script, out = Path(d) / "plain.py", Path(d) / "out.json"
        script.write_text(PLAIN)
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(cores_per_rank(ranks)))
        subprocess.run([find_mpiexec(), "-n", str(ranks), sys.executable, str(script), model, str(batch), str(iters),
                        str(warm), str(cores_per_rank(ranks)), str(out)], check=True, env=env, timeout=900,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["images_per_s"]


def executor(model: str, batch: int, ranks: int, iters: int, warm: int, backend: str) -> float:
    from executor.launch import launch
    from perfmodel.config import load_config

    cfg = load_config(model=model, batch=batch, system="local", optimizer="sgd", allreduce="auto")
    with tempfile.TemporaryDirectory() as d:
        m = launch(cfg, ranks, iterations=iters, warmup_iterations=warm, out=str(Path(d) / "m.json"), backend=backend)
    return m["images_per_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runs: dict[str, list[float]] = {"executor (mpi)": [], "executor (torch gloo)": [], "plain DDP gloo": []}
    for _ in range(a.repeats):
        runs["plain DDP gloo"].append(plain_loop(a.model, a.batch, a.ranks, a.iterations, a.warmup))
        runs["executor (mpi)"].append(executor(a.model, a.batch, a.ranks, a.iterations, a.warmup, "mpi"))
        runs["executor (torch gloo)"].append(executor(a.model, a.batch, a.ranks, a.iterations, a.warmup, "torch"))
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["plain DDP gloo"]
    print(f"{a.model}, global batch {a.batch}, {a.ranks} ranks x {max(1, (os.cpu_count() or 1) // a.ranks)} cores, "
          f"{a.iterations} iterations x {a.repeats} repeats (median images/s)")
    for k, v in med.items():
        spread = f"{min(runs[k]):.1f}-{max(runs[k]):.1f}"
        over = "" if k.startswith("plain") else f"  overhead {100 * (base / v - 1):+.1f}%"
        print(f"  {k:<24} {v:8.1f} img/s  (range {spread}){over}")
    print(json.dumps({"model": a.model, "batch": a.batch, "ranks": a.ranks, "images_per_s": med,
                      "runs": runs, "overhead_pct": {k: 100 * (base / v - 1) for k, v in med.items()
                                                     if not k.startswith("plain")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
