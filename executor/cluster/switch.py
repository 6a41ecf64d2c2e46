"""The userspace switch of the emulated cluster: one process that forwards Ethernet frames between the hosts'
TAP interfaces with the rate and the delay of every link on their path (the engine used when the kernel
has no ``sch_netem``; see :mod:`executor.cluster.manage`).

    python -m executor.cluster.switch CONFIG.json      (started by ``perfmodel cluster up``; a daemon)

How a frame is timed
--------------------
Every host namespace has a TAP interface (``ttt0``) with TCP segmentation offload, so the kernel hands the
switch TCP "super-frames" of up to 64 KiB (one ``virtio_net_hdr`` + Ethernet frame) and accepts them back:
one read and one write move up to 44 Ethernet frames, which keeps a Python process fast enough for
Gbit/s links. The cost of a super-frame is computed as the ``S`` Ethernet frames it stands for: its
payload plus, per segment, the headers and 24 bytes of FCS, preamble and inter-frame gap (``W`` wire bytes
in all, ``w = W / S`` per segment).

On each directed link of its path (host -> leaf [-> spine -> leaf] -> host) the frame is served FIFO at the
link's rate ``r`` and then delayed by the link's delay ``d``. With ``a_1`` and ``a_S`` the arrival times
of its first and last segment at the link and ``free`` the time the link finishes its previous frame::

    start = max(free, a_1)
    e_1   = start + w / r                              (first segment out)
    e_S   = max(start + W / r, a_S + w / r)            (last segment out; = free for the next frame)
    a_1', a_S' = e_1 + d, e_S + d                      (arrival at the next link)

which is exact for store-and-forward switching of the individual Ethernet frames (the segments of a
super-frame are pipelined over the hops as real frames would be). The frame is written into the
destination's TAP at ``a_S`` of its last link. At the sending host ``a_1 = a_S`` = the time the switch
read the frame.

The switch is event driven: a frame is served on its first link when it is read, and on each further link
when (in real time) its first segment arrives there, so every link serves frames in the order they arrive
at it, as a FIFO output port does.

APPROXIMATIONS: queues are unbounded up to :data:`MAX_QUEUED_BYTES` (TCP sees delay, not loss; a finite
drop-tail buffer per link, ``buffer_bytes`` of the configuration, is available but not used by ``cluster
up``: tried at 256 KiB and 1 MiB per port, the drops made TCP, and so the collectives, slower and less
regular than the model without making large messages more accurate); the
switch is late when it does not get the CPU in time (it asks for real-time priority, and records how late
its writes were in the stats file: ``late_max_s``, ``late_mean_s``).

Broadcast and multicast frames go to every other host; frames to an unknown MAC are dropped (the hosts'
neighbour tables are filled at bring-up, so ARP is not needed).
"""
from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import math
import os
import select
import signal
import struct
import sys
import time
from typing import Any

from executor.cluster.plan import HOST_IFACE, ClusterConfig, ClusterPlan, make_plan

__all__ = ["VNET_HDR_LEN", "ETH_OVERHEAD", "frame_cost", "LinkTimer", "open_tap", "Switch", "main",
           "MAX_QUEUED_BYTES", "lateness_between"]

#: bytes of ``struct virtio_net_hdr`` in front of every frame (IFF_VNET_HDR, default size)
VNET_HDR_LEN = 10
#: bytes an Ethernet frame costs on the wire beyond its header and payload: FCS 4, preamble 8, gap 12
ETH_OVERHEAD = 24
#: most bytes held in the switch at once (beyond: frames are dropped and counted)
MAX_QUEUED_BYTES = 1 << 30
_READ = 65536 + 1024     # largest super-frame (gso_max_size 64 KiB) + headers
_BATCH = 256             # frames read from one TAP per wake-up at most

# linux/if_tun.h
_TUNSETIFF = 0x400454CA
_TUNSETOFFLOAD = 0x400454D0
_IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
_TUN_F_CSUM, _TUN_F_TSO4, _TUN_F_TSO6, _TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08
_CLONE_NEWNET = 0x40000000
_PR_SET_TIMERSLACK = 29


def frame_cost(buf: bytes) -> tuple[int, int]:
    """``(S, W)``: the Ethernet frames a TAP read (virtio_net_hdr + frame) stands for and their wire bytes.

    A non-GSO frame is one frame of ``max(len, 60) + 24`` bytes. A TCP/UDP GSO super-frame of payload ``P``
    and headers ``H`` (Ethernet + IP + TCP/UDP, parsed from the frame) with segment size ``gso_size`` is
    ``S = ceil(P / gso_size)`` frames of ``W = P + S * (H + 24)`` bytes in all.
    """
    n = len(buf) - VNET_HDR_LEN
    gso_type = buf[1] & 0x7F
    if gso_type == 0 or n <= 0:
        return 1, max(n, 60) + ETH_OVERHEAD
    gso_size = buf[4] | (buf[5] << 8)
    off = VNET_HDR_LEN + 12
    ethertype = (buf[off] << 8) | buf[off + 1]
    off += 2
    if ethertype == 0x8100:  # VLAN tag
        ethertype = (buf[off + 2] << 8) | buf[off + 3]
        off += 4
    if ethertype == 0x0800:
        l4 = off + (buf[off] & 0x0F) * 4
    elif ethertype == 0x86DD:
        l4 = off + 40
    else:
        return 1, n + ETH_OVERHEAD
    if gso_type in (1, 4):   # TCPv4, TCPv6
        end = l4 + (buf[l4 + 12] >> 4) * 4
    else:                    # UDP (3) and UDP_L4 (5)
        end = l4 + 8
    hdr = end - VNET_HDR_LEN
    payload = n - hdr
    if gso_size <= 0 or payload <= 0:
        return 1, max(n, 60) + ETH_OVERHEAD
    segs = -(-payload // gso_size)
    return segs, payload + segs * (hdr + ETH_OVERHEAD)


class LinkTimer:
    """Per directed link: seconds per wire byte, delay, and when the link is free (the formulas of the
    module docstring). Pure arithmetic, used by :class:`Switch` and by the tests."""

    def __init__(self, rates_bps: list[float], delays_s: list[float], buffer_bytes: float | None = None):
        self.spb = [8.0 / float(r) for r in rates_bps]
        self.delay = [float(d) for d in delays_s]
        self.free = [0.0] * len(self.spb)
        #: queue limit of every link, in seconds of its rate (None: unbounded)
        self.max_backlog_s = [None if buffer_bytes is None else buffer_bytes * s for s in self.spb]
        #: most seconds a frame waited for each link (its queue, in time), and frames dropped per link
        self.max_wait = [0.0] * len(self.spb)
        self.drops = [0] * len(self.spb)

    def hop(self, link: int, a1: float, aS: float, segs: int, wire: int) -> tuple[float, float] | None:
        """Serve a frame on ``link`` whose first and last segments arrive at ``a1`` and ``aS``; returns their
        arrival times at the far end (after the link's delay) and marks the link busy until the last
        segment has left; None when the link's queue is full (the frame is dropped). Frames must be served
        in the order they arrive at the link (FIFO)."""
        s = self.spb[link]
        w = wire / segs
        f = self.free[link]
        wait = f - a1
        if wait > 0:
            limit = self.max_backlog_s[link]
            if limit is not None and wait > limit:
                self.drops[link] += 1
                return None
            if wait > self.max_wait[link]:
                self.max_wait[link] = wait
        start = f if f > a1 else a1
        ef = start + w * s
        el = start + wire * s
        x = aS + w * s
        if x > el:
            el = x
        self.free[link] = el
        d = self.delay[link]
        return ef + d, el + d

    def traverse(self, path: list[int], t: float, segs: int, wire: int) -> float:
        """Time the last segment of a frame read at ``t`` reaches the end of ``path`` (every link served at
        once: exact when no other frame meets it on the way)."""
        a1 = aS = t
        for i in path:
            out = self.hop(i, a1, aS, segs, wire)
            if out is None:
                return math.nan
            a1, aS = out
        return aS


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def open_tap(netns: str, name: str = HOST_IFACE) -> int:
    """Attach to the persistent TAP ``name`` inside namespace ``netns`` (vnet header, TSO on); returns a
    non-blocking file descriptor. The thread enters the namespace only to open ``/dev/net/tun``."""
    libc = _libc()
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        finally:
            if libc.setns(own, _CLONE_NEWNET) != 0:  # pragma: no cover - cannot fail for our own namespace
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
        fcntl.ioctl(fd, _TUNSETOFFLOAD, _TUN_F_CSUM | _TUN_F_TSO4 | _TUN_F_TSO6 | _TUN_F_TSO_ECN)
    except OSError:
        os.close(fd)
        raise
    return fd


class Switch:
    """The forwarding loop over the hosts' TAPs of ``plan`` (see the module docstring)."""

    def __init__(self, plan: ClusterPlan, stats_file: str | None = None, buffer_bytes: float | None = None):
        self.plan = plan
        n = len(plan.hosts)
        self.buffer_bytes = buffer_bytes
        self.timer = LinkTimer([ln.rate_bps for ln in plan.links], [ln.delay_s for ln in plan.links],
                               buffer_bytes=buffer_bytes)
        self.paths = [[plan.path(s, d) if s != d else [] for d in range(n)] for s in range(n)]
        self.mac_to_host = {bytes.fromhex(h.mac.replace(":", "")): h.index for h in plan.hosts}
        self.fds: list[int] = []
        # events: (time, seq, hop, a_last, dst, segs, wire, buf); hop == len(path): deliver at ``time``
        self.events: list[tuple] = []
        self.seq = 0
        self.queued_bytes = 0
        self.stats_file = stats_file
        self.stats: dict[str, Any] = {"pid": os.getpid(), "started": time.time(), "realtime": False,
                                      "frames_in": 0, "bytes_in": 0, "frames_out": 0, "wire_bytes": 0,
                                      "dropped_unknown": 0, "dropped_full": 0, "write_errors": 0,
                                      "late_max_s": 0.0, "late_sum_s": 0.0, "late_over_100us": 0,
                                      "closed_hosts": []}
        self.running = True

    def open(self) -> None:
        """Attach to every host's TAP."""
        self.fds = [open_tap(h.netns) for h in self.plan.hosts]

    def close(self) -> None:
        for fd in self.fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds = []

    def _push(self, t: float, hop: int, a_last: float, src: int, dst: int, segs: int, wire: int, buf: bytes) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, hop, a_last, src, dst, segs, wire, buf))

    def _enqueue(self, src: int, buf: bytes, t: float) -> None:
        """A frame read from ``src`` at ``t``: serve it on its first link (the host's own, FIFO in read
        order) and schedule its arrival at the next one."""
        st = self.stats
        dst_mac = buf[VNET_HDR_LEN:VNET_HDR_LEN + 6]
        if dst_mac[0] & 1:   # broadcast / multicast: flood
            dsts = [d for d in range(len(self.paths)) if d != src and self.fds[d] >= 0]
        else:
            d = self.mac_to_host.get(dst_mac)
            if d is None or d == src:
                st["dropped_unknown"] += 1
                return
            dsts = [d]
        if self.queued_bytes + len(buf) * len(dsts) > MAX_QUEUED_BYTES:
            st["dropped_full"] += 1
            return
        segs, wire = frame_cost(buf)
        st["wire_bytes"] += wire
        for d in dsts:
            out = self.timer.hop(self.paths[src][d][0], t, t, segs, wire)
            if out is None:
                continue
            self._push(out[0], 1, out[1], src, d, segs, wire, buf)
            self.queued_bytes += len(buf)

    def _read(self, src: int, t: float) -> None:
        fd = self.fds[src]
        st = self.stats
        for _ in range(_BATCH):
            try:
                buf = os.read(fd, _READ)
            except BlockingIOError:
                return
            except OSError as exc:  # the namespace or its TAP went away
                st["closed_hosts"].append([src, str(exc)])
                os.close(fd)
                self.fds[src] = -1
                return
            st["frames_in"] += 1
            st["bytes_in"] += len(buf)
            self._enqueue(src, buf, t)

    def _advance(self, now: float) -> None:
        """Process every event due by ``now`` in time order: a frame reaching its next link is served there
        (so each link serves frames in the order they arrive at it); a frame whose last segment has reached
        its destination is written into the destination's TAP."""
        st = self.stats
        ev = self.events
        while ev and ev[0][0] <= now:
            t, _, hop, a_last, src, dst, segs, wire, buf = heapq.heappop(ev)
            path = self.paths[src][dst]
            if hop < len(path):
                out = self.timer.hop(path[hop], t, a_last, segs, wire)
                if out is None:
                    self.queued_bytes -= len(buf)
                    continue
                a1, aS = out
                if hop + 1 < len(path):
                    self._push(a1, hop + 1, aS, src, dst, segs, wire, buf)
                else:
                    self._push(aS, hop + 1, aS, src, dst, segs, wire, buf)
                continue
            self.queued_bytes -= len(buf)
            fd = self.fds[dst]
            if fd < 0:
                continue
            try:
                os.write(fd, buf)
            except OSError:
                st["write_errors"] += 1
                continue
            late = time.monotonic() - t
            st["frames_out"] += 1
            st["late_sum_s"] += late
            if late > st["late_max_s"]:
                st["late_max_s"] = late
            if late > 1e-4:
                st["late_over_100us"] += 1

    def write_stats(self) -> None:
        """Write the counters (JSON; a temporary file renamed over the old one) to the stats file, if any.
        Not :func:`perfmodel.atomic.atomic_write`: its fsync would stall the forwarding loop every second, and
        a status file lost in a crash costs nothing."""
        if not self.stats_file:
            return
        st = dict(self.stats)
        st["late_mean_s"] = st["late_sum_s"] / st["frames_out"] if st["frames_out"] else 0.0
        st["queued_bytes"] = self.queued_bytes
        st["link_max_wait_s"] = {ln.name: w for ln, w in zip(self.plan.links, self.timer.max_wait)}
        st["link_drops"] = {ln.name: k for ln, k in zip(self.plan.links, self.timer.drops) if k}
        st["buffer_bytes"] = self.buffer_bytes
        st["updated"] = time.time()
        tmp = f"{self.stats_file}.tmp"
        with open(tmp, "w") as fh:
            json.dump(st, fh)
        os.replace(tmp, self.stats_file)

    def run(self) -> None:
        """Forward until :attr:`running` is cleared (SIGTERM) or every TAP is gone."""
        mono = time.monotonic
        next_stats = mono() + 1.0
        while self.running:
            live = [fd for fd in self.fds if fd >= 0]
            if not live:
                break
            now = mono()
            timeout = 1.0 if not self.events else min(1.0, max(0.0, self.events[0][0] - now))
            ready, _, _ = select.select(live, [], [], timeout)
            now = mono()
            if ready:
                index = {fd: i for i, fd in enumerate(self.fds)}
                for fd in ready:
                    self._read(index[fd], now)
            self._advance(mono() + 2e-6)
            if now >= next_stats:
                self.write_stats()
                next_stats = now + 1.0
        self.write_stats()


def lateness_between(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """How late the switch wrote the frames it forwarded between two readings of its stats file (the
    counters of :meth:`Switch.write_stats`, cumulative since it started): ``frames``, ``late_mean_s``
    (seconds after the frame was due, on average) and ``late_over_100us_share`` (of the frames); None
    without both readings (no switch: the kernel engine). Under bulk traffic the switch is always somewhat
    late (its Python loop is the bottleneck, and the link calibration, taken under the same load, absorbs
    that); a network much later than the others, or than in an earlier run of it, was disturbed."""
    if not before or not after:
        return None
    frames = int(after["frames_out"]) - int(before["frames_out"])
    if frames <= 0:
        return {"frames": 0, "late_mean_s": 0.0, "late_over_100us_share": 0.0}
    return {"frames": frames, "late_mean_s": (float(after["late_sum_s"]) - float(before["late_sum_s"])) / frames,
            "late_over_100us_share": (int(after["late_over_100us"]) - int(before["late_over_100us"])) / frames}


def _realtime() -> bool:
    """Ask for real-time (FIFO) scheduling and 1 ns timer slack; True when granted."""
    try:
        _libc().prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return True
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Daemon entry point: ``CONFIG.json`` holds ``config`` (ClusterConfig fields), ``stats_file``,
    ``ready_file`` (written with ``ok`` once every TAP is attached, or the error) and optionally
    ``buffer_bytes`` (queue limit per link; null: unbounded)."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as fh:
        conf = json.load(fh)
    ready = conf.get("ready_file")
    try:
        plan = make_plan(ClusterConfig(**conf["config"]))
        sw = Switch(plan, stats_file=conf.get("stats_file"), buffer_bytes=conf.get("buffer_bytes"))
        sw.open()
    except Exception as exc:  # noqa: BLE001 - reported to the parent through the ready file
        if ready:
            with open(ready, "w") as fh:
                fh.write(f"error: {type(exc).__name__}: {exc}\n")
        return 1

    def stop(signum, frame):  # noqa: ARG001
        sw.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sw.stats["realtime"] = _realtime()
    sw.write_stats()
    if ready:
        with open(ready, "w") as fh:
            fh.write("ok\n")
    try:
        sw.run()
    finally:
        sw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
