"""Calibration of the emulated link at bring-up: MPI point-to-point latency and payload rate between two
hosts of the emulated cluster, measured the way the executor's algorithms communicate (mpi4py, numpy
buffers, MPICH over TCP).

    python -m executor.cluster.measure OUT.json     (2 ranks, under the emulated mpiexec; rank 0 writes)

Method
------
- Latency: ping-pong of 8-byte messages (warm-up, then up to 200 round trips within about 2 s); the
  one-way latency is half the median round trip.
- Rate: one-way messages of 256 KiB to 8 MiB (each answered by 1 byte), the median time per size, fitted
  by least squares as ``t(n) = c + n / rate``; ``rate`` is the payload rate (bytes/s) of one TCP stream,
  i.e. the line rate less Ethernet/IP/TCP framing and whatever the MPI stack costs.

Why: the system spec of the emulated cluster (:mod:`executor.cluster.spec`) records these two numbers as
its ``latency_us`` and ``link_Gbps``: the per-message latency on top of the configured delays (kernel,
TCP, MPI, the switch process) and the framing overhead are properties of the emulated link that the
alpha-beta model needs, measured once, like a catalog system's MPI latency from a benchmark.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["SIZES", "measure_pair", "main"]

#: message sizes of the rate fit (bytes)
SIZES = (256 << 10, 1 << 20, 4 << 20, 8 << 20)


def _program(out: str) -> None:  # pragma: no cover - runs under mpiexec (covered by the cluster tests)
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    peer = 1 - rank
    small = np.zeros(2, dtype=np.float32)
    for _ in range(20):
        if rank == 0:
            comm.Send(small, peer, 1)
            comm.Recv(small, peer, 1)
        else:
            comm.Recv(small, peer, 1)
            comm.Send(small, peer, 1)
    rtts: list[float] = []
    t_end = MPI.Wtime() + 2.0
    go = np.ones(1, dtype=np.int32)
    while True:
        if rank == 0:
            go[0] = 1 if (len(rtts) < 200 and (MPI.Wtime() < t_end or len(rtts) < 10)) else 0
        comm.Bcast(go, root=0)
        if not go[0]:
            break
        t0 = MPI.Wtime()
        if rank == 0:
            comm.Send(small, peer, 2)
            comm.Recv(small, peer, 2)
            rtts.append(MPI.Wtime() - t0)
        else:
            comm.Recv(small, peer, 2)
            comm.Send(small, peer, 2)
    big = np.zeros(max(SIZES) // 4, dtype=np.float32)
    ack = np.zeros(1, dtype=np.float32)
    times: dict[int, list[float]] = {}
    for n in SIZES:
        a = big[:n // 4]
        ts: list[float] = []
        for k in range(12):
            comm.Barrier()
            t0 = MPI.Wtime()
            if rank == 0:
                comm.Send(a, peer, 3)
                comm.Recv(ack, peer, 4)
            else:
                comm.Recv(a, peer, 3)
                comm.Send(ack, peer, 4)
            dt = MPI.Wtime() - t0
            if k >= 2:
                ts.append(dt)
            if k >= 5 and sum(ts) > 0.6:
                break
        times[n] = ts
    if rank == 0:
        med = {n: float(np.median(v)) for n, v in times.items()}
        x = np.array(list(med), dtype=float)
        y = np.array(list(med.values()))
        slope, intercept = np.polyfit(x, y, 1)
        doc = {"latency_s": float(np.median(rtts)) / 2, "rtt_median_s": float(np.median(rtts)),
               "rtt_min_s": float(np.min(rtts)), "pings": len(rtts),
               "sizes": [int(n) for n in med], "times_s": list(med.values()),
               "rate_Bps": float(1.0 / slope) if slope > 0 else None, "intercept_s": float(intercept),
               "mpi_library": MPI.Get_library_version().splitlines()[0].strip()}
        tmp = out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, out)


def measure_pair(state: dict[str, Any], src: int, dst: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the measurement between hosts ``src`` and ``dst`` of the (up) cluster ``state``; returns the
    document of :func:`_program` plus ``hosts``.

    Raises
    ------
    ClusterError
        The job failed or timed out (one line with the reason).
    """
    from executor.cluster.hydra import mpiexec_command
    from executor.cluster.netns import ClusterError

    with tempfile.TemporaryDirectory(prefix="ttt-cluster-measure-") as tmp:
        out = os.path.join(tmp, "link.json")
        prog = [sys.executable, "-m", "executor.cluster.measure", out]
        cmd, extra = mpiexec_command(prog, 2, tmp, hosts=[src, dst], ranks_per_host=1, state=state)
        env = {**os.environ, **extra, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=root, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ClusterError(f"link measurement between hosts {src} and {dst} timed out after {timeout_s:g} s") \
                from None
        if proc.returncode != 0 or not os.path.exists(out):
            tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
            raise ClusterError(f"link measurement between hosts {src} and {dst} failed (exit {proc.returncode}): "
                               f"{' | '.join(tail)[:400]}")
        with open(out, encoding="utf-8") as fh:
            doc = json.load(fh)
    doc["hosts"] = [src, dst]
    doc["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return doc


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs under mpiexec
    argv = sys.argv[1:] if argv is None else argv
    from executor.mpi_utils import run_guarded

    run_guarded(_program, argv[0])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
