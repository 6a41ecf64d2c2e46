"""Calibration of the emulated link at bring-up: MPI point-to-point latency and payload rate between two
hosts of the emulated cluster, measured the way the executor's algorithms communicate (mpi4py, numpy
buffers, MPICH over TCP).

    python -m executor.cluster.measure OUT.json PAIRS [RING]   (one rank per host, under the emulated mpiexec)

Method
------
- Small-message latency: ping-pong of 8-byte messages (warm-up, then up to 200 round trips within about
  2 s); half the median round trip (``small_latency_s``; MPI's eager protocol).
- Exchange cost: hosts in pairs ``(0, 1), (2, 3), ...``, all pairs at once, ``Sendrecv`` ``n`` bytes to each
  other (the step of every modelled allreduce algorithm: every host exchanges, and each host link carries
  data in both directions), for ``n`` from 64 KiB to 16 MiB. The exchanges run back to back in timed blocks
  (about 4 MiB per block; a barrier and one untimed exchange before each block), as the steps of a
  collective do. The untimed exchange is there because the ranks leave a barrier up to a one-way latency
  apart (a barrier of 4 ranks takes two rounds of messages), and a rank whose peer left later waits for it
  in its first exchange. Timed from the barrier, that skew was spread over the block and still inflated
  each exchange: at 4 hosts and 5 ms per link (10 ms one way) by about 2.5 ms at 1 MiB (4 exchanges per
  block) and 5 ms at 2-4 MiB (2 per block), which is what the 4-host predictions at 5 ms were too slow by
  (ring +15 ms at 4 MiB and +33 ms at 16 MiB over 6 steps, recursive doubling +6 ms at 1 MiB over 2; the
  file of 2026-12-07 19:53), while at 2 hosts (a one-round barrier) they were within 3 %. After one
  exchange the ranks run in step, as the steps inside a collective do (that 4-host network measured again:
  its 9 allreduce rows within 2.3 %, against 8.9 % / 14.6 % mean / max). The time of an exchange is the
  slowest rank's block time over the block's exchanges. The sizes
  are interleaved (one block of each size per round, rounds repeated), so that a slow spell of this
  machine costs every size one block rather than all the blocks of the sizes timed during it (seen before:
  4 hosts, 1 Gbit/s, 50 us, exchanges of 2 and 4 MiB at 0.71-0.72 Gbit/s, of 1 and 8 MiB at 0.77 and 0.83, and
  recursive doubling at 4 MiB, two such exchanges, predicted 20 % slow). The
  typical time per size (median of the fastest half of the blocks, robust against other work on this
  machine) is kept per size (``sizes``, ``times_s``: the spec's ``[network.exchange_profile]``) and, from
  256 KiB to 8 MiB, fitted as ``t(n) = latency + n / rate`` by least squares with relative weights. ``rate``
  (bytes/s) is the payload rate of one TCP stream per direction (line rate less Ethernet/IP/TCP framing and
  whatever the TCP/MPI stacks and the emulation cost under full-duplex traffic); ``latency`` is the
  per-message cost of large messages (MPI's rendezvous handshake: a round trip more than the eager
  latency).
- Ring steps (3 or more hosts): every host sends ``n`` bytes to the next host and receives ``n`` from the
  previous one (hosts in index order, one ``Sendrecv`` each: the step of the ring allreduce), for the same
  sizes, timed the same way (``ring_sizes``, ``ring_times_s``: the spec's ``[network.ring_profile]``). Why:
  a shift and an exchange of the same size cost differently over TCP, so the models price the ring's
  steps from this measurement (:func:`perfmodel.network.ring_residual_s`, with what that did to the
  predictions).

Why: the system spec of the emulated cluster (:mod:`executor.cluster.spec`) records ``rate`` and
``latency`` as its ``link_Gbps`` and ``latency_us``: the alpha-beta parameters of one exchange step as the
collective models use them, calibrated once at bring-up like a catalog system's MPI latency and bandwidth
from a benchmark. (Collectives of gradients move messages of 100s of KiB and more, so the large-message
regime is the one calibrated; small messages, eager, are faster than the spec says by about a round trip.)
Over TCP the exchange time is not a straight line in the size (a rendezvous round trip, the congestion
window, per-message stack costs): the collective models add what the per-size measurement differs from the
line at each step's message size (:func:`perfmodel.network.exchange_residual_s`).
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

__all__ = ["SIZES", "exchange_pairs", "measure_link", "link_problems", "main"]

#: message sizes of the exchanges (bytes): the per-size profile the spec records
SIZES = (64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20)
#: the straight-line fit (the spec's rate and latency) uses the sizes from 256 KiB to 8 MiB
FIT_RANGE_BYTES = (256 << 10, 8 << 20)
#: tolerances of :func:`link_problems`: a fitted rate this much above the line's payload rate, an exchange
#: this much slower than one of twice its size
RATE_TOLERANCE, MONOTONE_TOLERANCE = 1.10, 1.10


#: rounds over all sizes (the first is warm-up) and the timed traffic time each size must reach
MAX_ROUNDS, MIN_TIMED_BLOCKS, MIN_TIMED_S = 20, 5, 0.5


def _steps_per_block(n: int) -> int:
    """Back-to-back steps of ``n`` bytes per timed block: about 4 MiB of traffic, at least 2."""
    return max(2, (4 << 20) // n)


def _step_times(comm, right: int | None, left: int | None, sizes=SIZES) -> dict[int, list[float]]:  # pragma: no cover
    """Per size ``n`` of ``sizes``: the per-step seconds of blocks of back-to-back ``Sendrecv`` steps (send
    ``n`` bytes to ``right``, receive ``n`` from ``left``; this rank idles where they are None), the slowest
    rank's block time over the block's steps (module docstring). Every rank of ``comm`` calls it.

    The sizes are interleaved: each round times one block of every size, and rounds repeat (the first is
    warm-up) until every size has at least ``MIN_TIMED_BLOCKS`` blocks and ``MIN_TIMED_S`` of timed traffic,
    at most ``MAX_ROUNDS``. A slow spell of this machine then lands on one block of every size, which the
    typical statistic drops, instead of on every block of the sizes measured during it."""
    import numpy as np
    from mpi4py import MPI

    send = np.zeros(max(sizes) // 4, dtype=np.float32)
    recv = np.zeros_like(send)
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for k in range(MAX_ROUNDS):
        for n in sizes:
            a, b = send[:n // 4], recv[:n // 4]
            per_block = _steps_per_block(n)
            comm.Barrier()
            if right is not None:   # an untimed step: the ranks leave it in step (module docstring)
                comm.Sendrecv(a, right, 3, b, left, 3)
            t0 = MPI.Wtime()
            if right is not None:
                for _ in range(per_block):
                    comm.Sendrecv(a, right, 3, b, left, 3)
            dt = comm.allreduce(MPI.Wtime() - t0, op=MPI.MAX) / per_block
            if k >= 1:
                times[n].append(dt)
        if all(len(ts) >= MIN_TIMED_BLOCKS and sum(ts) * _steps_per_block(n) > MIN_TIMED_S
               for n, ts in times.items()):
            break
    return times


def _program(out: str, pairs: list[list[int]],
             ring: list[int] | None = None) -> None:  # pragma: no cover - runs under mpiexec (cluster tests)
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    small = np.zeros(2, dtype=np.float32)
    # -- small-message ping-pong between ranks 0 and 1 (the other ranks wait) --------------------------------
    rtts: list[float] = []
    t_end = MPI.Wtime() + 2.0
    go = np.ones(1, dtype=np.int32)
    k = 0
    while True:
        if rank == 0:
            go[0] = 1 if (len(rtts) < 200 and (MPI.Wtime() < t_end or len(rtts) < 10)) else 0
        comm.Bcast(go, root=0)
        if not go[0]:
            break
        t0 = MPI.Wtime()
        if rank == 0:
            comm.Send(small, 1, 2)
            comm.Recv(small, 1, 2)
            if k >= 20:   # the first 20 are warm-up
                rtts.append(MPI.Wtime() - t0)
        elif rank == 1:
            comm.Recv(small, 0, 2)
            comm.Send(small, 0, 2)
        k += 1
    # -- exchanges: every pair at once ------------------------------------------------------------------------
    peer = next((b if a == rank else a for a, b in pairs if rank in (a, b)), None)
    times = _step_times(comm, peer, peer)
    # -- ring steps: every host sends to the next at once ------------------------------------------------------
    ring_times = None
    if ring and len(ring) >= 3:
        pos = ring.index(rank)
        ring_times = _step_times(comm, ring[(pos + 1) % len(ring)], ring[pos - 1])
    if rank == 0:
        from executor.bench_compute import typical

        med = {n: typical(v) for n, v in times.items()}
        fit = {n: t for n, t in med.items() if FIT_RANGE_BYTES[0] <= n <= FIT_RANGE_BYTES[1]}
        x = np.array(list(fit), dtype=float)
        y = np.array(list(fit.values()))
        slope, intercept = np.polyfit(x, y, 1, w=1.0 / y)
        doc = {"small_latency_s": float(np.median(rtts)) / 2, "rtt_median_s": float(np.median(rtts)),
               "rtt_min_s": float(np.min(rtts)), "pings": len(rtts),
               "sizes": [int(n) for n in med], "times_s": list(med.values()),
               "rate_Bps": float(1.0 / slope) if slope > 0 else None, "latency_s": float(max(intercept, 0.0)),
               "mpi_library": MPI.Get_library_version().splitlines()[0].strip()}
        if ring_times is not None:
            doc["ring_sizes"] = [int(n) for n in ring_times]
            doc["ring_times_s"] = [typical(v) for v in ring_times.values()]
        from perfmodel.atomic import write_json_atomic
        write_json_atomic(out, doc)


def link_problems(doc: dict[str, Any], payload_Bps: float) -> list[str]:
    """What makes a link calibration ``doc`` (from :func:`measure_link`) physically impossible on a link that
    carries at most ``payload_Bps`` bytes/s of TCP payload: a fitted rate above it (by more than
    ``RATE_TOLERANCE``), an exchange slower than one of twice its size, or one of ``n`` bytes slower than
    ``n / m`` exchanges of the next smaller size ``m`` (both by more than ``MONOTONE_TOLERANCE``; a larger
    message can be sent as smaller ones, and the cost per byte falls with the size). Any of them means
    that something else on this machine disturbed part of the measurement, and the spec's per-size
    profile would carry the disturbance into every collective step of that size. The ring steps' profile,
    where measured, is checked for the same two monotonicity rules. Seen: 4 hosts, 1 Gbit/s,
    5 ms, two-level, a fitted 1.30 Gbit/s (ring at 1 MiB 81 % off; emulated run of 2026-11-21); 2 hosts,
    1 Gbit/s, 50 us, 1 MiB exchanges at 2.98 times the 512 KiB ones (recursive doubling at 1 MiB +55 %,
    halving-doubling -41 %; run of 2026-11-22). Returns one line per problem (empty: consistent)."""
    out: list[str] = []
    rate = doc.get("rate_Bps")
    if not rate:
        out.append("no positive rate fitted (exchange times do not grow with the size)")
    elif rate > RATE_TOLERANCE * payload_Bps:
        out.append(f"fitted rate {rate * 8 / 1e9:.3g} Gbit/s above the line's {payload_Bps * 8 / 1e9:.3g} Gbit/s "
                   "of TCP payload")
    for what, sk, tk in (("exchanges", "sizes", "times_s"), ("ring steps", "ring_sizes", "ring_times_s")):
        sizes, times = list(doc.get(sk) or []), list(doc.get(tk) or [])
        for (n0, t0), (n1, t1) in zip(zip(sizes, times), zip(sizes[1:], times[1:])):
            if t0 > MONOTONE_TOLERANCE * t1:
                out.append(f"{what} of {n0 >> 10} KiB took {t0 * 1e3:.1f} ms, longer than those of {n1 >> 10} KiB "
                           f"({t1 * 1e3:.1f} ms)")
            if t1 > MONOTONE_TOLERANCE * (n1 / n0) * t0:
                out.append(f"{what} of {n1 >> 10} KiB took {t1 * 1e3:.1f} ms, more than {n1 / n0:g} times those "
                           f"of {n0 >> 10} KiB ({t0 * 1e3:.1f} ms)")
    return out


def exchange_pairs(hosts: int) -> list[tuple[int, int]]:
    """Host pairs that exchange at once in the calibration: ``(0, 1), (2, 3), ...`` (an odd last host
    waits)."""
    return [(i, i + 1) for i in range(0, hosts - 1, 2)]


def measure_link(state: dict[str, Any], src: int, dst: int, timeout_s: float = 240.0) -> dict[str, Any]:
    """Run the calibration on every host of the (up) cluster ``state``, one rank per host: small-message
    ping-pong between hosts ``src`` and ``dst``, exchanges between the pairs of :func:`exchange_pairs` (all
    at once, as every host communicates in each step of a collective) and, on 3 or more hosts, ring steps
    (host ``h`` sends to ``h + 1``). Returns the document of :func:`_program` plus ``hosts`` (the ping pair)
    and ``pairs``.

    Raises
    ------
    ClusterError
        The job failed or timed out (one line with the reason).
    """
    from executor.cluster.hydra import mpiexec_command
    from executor.cluster.netns import ClusterError

    n = len(state["hosts"])
    order = [src, dst] + [h for h in range(n) if h not in (src, dst)]   # rank r runs on host order[r]
    rank_of = {h: r for r, h in enumerate(order)}
    pairs = [[rank_of[a], rank_of[b]] for a, b in exchange_pairs(n)]
    ring = [rank_of[h] for h in range(n)]   # the ring of hosts 0 -> 1 -> ... -> n-1 -> 0, as ranks
    with tempfile.TemporaryDirectory(prefix="ttt-cluster-measure-") as tmp:
        out = os.path.join(tmp, "link.json")
        prog = [sys.executable, "-m", "executor.cluster.measure", out, json.dumps(pairs), json.dumps(ring)]
        cmd, extra = mpiexec_command(prog, n, tmp, hosts=order, ranks_per_host=1, state=state)
        env = {**os.environ, **extra, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=root, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0] or ""
            tail = [ln for ln in output.splitlines() if ln.strip()][-2:]
            raise ClusterError(f"link measurement on {n} hosts timed out after {timeout_s:g} s"
                               + (f" (last output: {' | '.join(tail)[:300]})" if tail else "")) from None
        if proc.returncode != 0 or not os.path.exists(out):
            tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
            raise ClusterError(f"link measurement on {n} hosts failed (exit {proc.returncode}): "
                               f"{' | '.join(tail)[:400]}")
        with open(out, encoding="utf-8") as fh:
            doc = json.load(fh)
    doc["hosts"] = [src, dst]
    doc["pairs"] = [list(p) for p in exchange_pairs(n)]
    doc["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return doc


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs under mpiexec
    argv = sys.argv[1:] if argv is None else argv
    from executor.mpi_utils import run_guarded

    run_guarded(_program, argv[0], json.loads(argv[1]) if len(argv) > 1 else [[0, 1]],
                json.loads(argv[2]) if len(argv) > 2 else None)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
