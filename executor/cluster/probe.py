"""Small network probes run *inside* a host namespace of the emulated cluster (``ip netns exec NS python -m
executor.cluster.probe ...``): ICMP echo round trips and a bounded TCP transfer. Used by ``cluster up``
(connectivity check) and the tests. Standard library only.

    python -m executor.cluster.probe ping DST_IP [COUNT] [INTERVAL_S]        -> JSON {"rtt_s": [...]}
    python -m executor.cluster.probe tcp-sink PORT MAX_BYTES TIMEOUT_S       -> JSON {"bytes", "seconds"}
    python -m executor.cluster.probe tcp-send DST_IP PORT NBYTES TIMEOUT_S   -> JSON {"bytes", "seconds"}

The sink measures from the first byte received to the last (so connection set-up and the sender's start-up
do not count); every probe has a time limit and a byte limit.
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time
from typing import Any

__all__ = ["icmp_rtts", "tcp_sink", "tcp_send", "main"]


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp_rtts(dst: str, count: int = 5, interval_s: float = 0.05, timeout_s: float = 2.0) -> list[float]:
    """Round-trip times (s) of ``count`` ICMP echo requests to ``dst`` (raw socket: needs root). Lost
    replies are left out."""
    ident = os.getpid() & 0xFFFF
    out: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        for seq in range(count):
            payload = b"ttt-perfmodel" + bytes(19)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload
            t0 = time.perf_counter()
            s.sendto(pkt, (dst, 0))
            deadline = t0 + timeout_s
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                r, _, _ = select.select([s], [], [], left)
                if not r:
                    break
                data, _ = s.recvfrom(2048)
                t1 = time.perf_counter()
                ihl = (data[0] & 0x0F) * 4
                typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == 0 and rid == ident and rseq == seq:
                    out.append(t1 - t0)
                    break
            if interval_s > 0 and seq + 1 < count:
                time.sleep(interval_s)
    return out


def tcp_sink(port: int, max_bytes: int, timeout_s: float, ready: Any = None) -> dict[str, float]:
    """Accept one connection on ``port``, read until EOF, ``max_bytes`` or ``timeout_s``; returns bytes and
    the seconds from the first to the last byte."""
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(1)
        srv.settimeout(timeout_s)
        if ready is not None:
            ready()
        deadline = time.monotonic() + timeout_s
        conn, _ = srv.accept()
        with conn:
            n, first, last = 0, None, None
            while n < max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.settimeout(left)
                try:
                    data = conn.recv(1 << 20)
                except socket.timeout:
                    break
                if not data:
                    break
                now = time.perf_counter()
                first = now if first is None else first
                last = now
                n += len(data)
    return {"bytes": n, "seconds": (last - first) if first is not None else 0.0}


def tcp_send(dst: str, port: int, nbytes: int, timeout_s: float) -> dict[str, float]:
    """Connect to ``dst:port`` and send ``nbytes`` zero bytes (within ``timeout_s``)."""
    buf = bytes(1 << 20)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            s = socket.create_connection((dst, port), timeout=max(0.1, deadline - time.monotonic()))
            break
        except (ConnectionRefusedError, socket.timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with s:
        t0, sent = time.perf_counter(), 0
        while sent < nbytes and time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            sent += s.send(buf[:min(len(buf), nbytes - sent)])
        s.shutdown(socket.SHUT_WR)
    return {"bytes": sent, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else ""
    if cmd == "ping":
        count = int(argv[2]) if len(argv) > 2 else 5
        interval = float(argv[3]) if len(argv) > 3 else 0.05
        print(json.dumps({"rtt_s": icmp_rtts(argv[1], count, interval)}), flush=True)
    elif cmd == "tcp-sink":
        print(json.dumps(tcp_sink(int(argv[1]), int(argv[2]), float(argv[3]),
                                  ready=lambda: print("ready", flush=True))), flush=True)
    elif cmd == "tcp-send":
        print(json.dumps(tcp_send(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))), flush=True)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
