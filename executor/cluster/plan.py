"""What an emulated cluster is made of: hosts, their addresses, the switches, and the directed links with
their rate and delay (pure data; nothing here touches the system).

Meaning of the options (this is the contract of ``perfmodel cluster up``)
-------------------------------------------------------------------------
- ``hosts``: N hosts, each a network namespace ``<prefix>h<i>`` with one interface :data:`HOST_IFACE`
  (``ttt0``) at ``10.77.0.<i+1>/24`` and a fixed, locally administered MAC ``02:77:00:00:00:<i+1>``.
- ``link_gbps``: line rate of every host link (host <-> its switch), Gbit/s (1e9 bit/s), each direction.
  Rates are Ethernet line rates: a frame costs its bytes plus 24 bytes (FCS, preamble, inter-frame gap), so
  a TCP stream over MTU 1500 carries at most 1448/1538 = 94 % of the line rate as payload.
- ``latency_us``: one-way delay added to every host link, in each direction (microseconds). A message
  between two hosts on the same switch crosses two host links: it is delayed by ``2 * latency_us`` one way
  (the round trip by ``4 * latency_us``), on top of the software and serialisation times.
- ``topology``: ``single-switch`` (every host on one switch) or ``two-level``: hosts fill leaf switches of
  ``hosts_per_switch`` in order (the last one may be partly filled); every leaf has one uplink to a spine
  switch, of line rate ``uplink_gbps`` and one-way delay ``uplink_latency_us`` per direction (default 0:
  then every host pair has the same latency, which is what the system spec can describe; see
  :mod:`executor.cluster.spec`). Oversubscription of a leaf = ``hosts_per_switch * link_gbps /
  uplink_gbps``. The uplink rate must be a whole multiple ``U`` of the link rate: the system spec describes
  it as ``uplinks_per_leaf = U`` links of ``link_gbps`` (the same capacity, and the same transfer times
  under the model's even spreading of flows over uplinks).

Switches are store-and-forward per Ethernet frame and serve each output link in FIFO order at its rate; the
queues are unbounded (TCP sees delay, never loss).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hardware.errors import ConfigError

__all__ = ["TOPOLOGIES", "HOST_IFACE", "CONGESTION_CONTROL", "SUBNET", "DEFAULT_PREFIX", "MAX_HOSTS", "ClusterConfig",
           "Host", "Link", "ClusterPlan", "make_plan"]

#: topology kinds of ``perfmodel cluster up --topology``
TOPOLOGIES: tuple[str, ...] = ("single-switch", "two-level")
#: name of the one network interface inside every host namespace
HOST_IFACE = "ttt0"
#: TCP congestion control of every emulated host. Why not the machine's own default: a namespace inherits it,
#: and this machine's is ``bbr``, whose pacing at its running bandwidth estimate makes the time of one
#: collective step depend on the connection's history. Measured on 4 hosts, 1 Gbit/s, 5 ms per link,
#: two-level (2026-12-07): under bbr a ring step of 256 KiB took 30.2 ms in the link calibration and a ring
#: allreduce of 1 MiB 179-189 ms in a fresh job, but 137 ms in the benchmark after its 16 MiB messages; under
#: reno 23.3 ms and 137-147 ms in both (six steps of the calibration's 23.3 ms: 140 ms). The switch loses no
#: packets (unbounded queues), so reno stays in slow start and behaves as Linux's usual ``cubic`` would; reno
#: is built into every kernel (cubic is not in this machine's ``tcp_allowed_congestion_control``).
CONGESTION_CONTROL = "reno"
#: the private /24 the hosts live in (never routed anywhere: the namespaces have no other interface)
SUBNET = "10.77.0"
#: default prefix of every namespace this package creates
DEFAULT_PREFIX = "ttt-"
#: most hosts one cluster may have
MAX_HOSTS = 64

_SRC = "cluster up"


@dataclass(frozen=True)
class ClusterConfig:
    """Options of ``perfmodel cluster up`` (units in the names, as on the command line).

    Attributes
    ----------
    hosts : int
        Number of emulated hosts, 1 to :data:`MAX_HOSTS`.
    link_gbps : float
        Host link line rate, Gbit/s per direction.
    latency_us : float
        One-way delay added per host link and direction, microseconds.
    topology : str
        ``"single-switch"`` or ``"two-level"``.
    hosts_per_switch : int or None
        Hosts per leaf switch (two-level only; required there).
    uplink_gbps : float or None
        Leaf-to-spine line rate (two-level only; default ``link_gbps``); a whole multiple of ``link_gbps``.
    uplink_latency_us : float
        One-way delay per uplink and direction (two-level only), microseconds.
    prefix : str
        Prefix of every namespace created (``ttt-``).
    """

    hosts: int
    link_gbps: float
    latency_us: float
    topology: str = "single-switch"
    hosts_per_switch: int | None = None
    uplink_gbps: float | None = None
    uplink_latency_us: float = 0.0
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        def bad(flag: str, value, reason: str):
            raise ConfigError(_SRC, flag, value, reason)

        if isinstance(self.hosts, bool) or not isinstance(self.hosts, int) or not 1 <= self.hosts <= MAX_HOSTS:
            bad("--hosts", self.hosts, f"must be an integer from 1 to {MAX_HOSTS}")
        for flag, v in (("--link-gbps", self.link_gbps), ("--latency-us", self.latency_us),
                        ("--uplink-latency-us", self.uplink_latency_us)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(flag, v, "must be a finite number")
        if not 0 < self.link_gbps <= 400:
            bad("--link-gbps", self.link_gbps, "must be > 0 and <= 400 Gbit/s")
        if not 0 <= self.latency_us <= 1e6:
            bad("--latency-us", self.latency_us, "must be >= 0 and <= 1e6 us")
        if not 0 <= self.uplink_latency_us <= 1e6:
            bad("--uplink-latency-us", self.uplink_latency_us, "must be >= 0 and <= 1e6 us")
        if self.topology not in TOPOLOGIES:
            bad("--topology", self.topology, f"must be one of {', '.join(TOPOLOGIES)}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}-", self.prefix or ""):
            bad("prefix", self.prefix, "must be 1-8 lower-case letters or digits (starting with a letter) and '-'")
        if self.topology == "single-switch":
            for flag, v in (("--hosts-per-switch", self.hosts_per_switch), ("--uplink-gbps", self.uplink_gbps)):
                if v is not None:
                    bad(flag, v, "only used with --topology two-level")
            if self.uplink_latency_us:
                bad("--uplink-latency-us", self.uplink_latency_us, "only used with --topology two-level")
            return
        k = self.hosts_per_switch
        if k is None:
            bad("--hosts-per-switch", None, "required with --topology two-level")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            bad("--hosts-per-switch", k, "must be an integer >= 1")
        if k >= self.hosts:
            bad("--hosts-per-switch", k, f"must be < --hosts ({self.hosts}) so that there are at least two leaf "
                "switches")
        up = self.link_gbps if self.uplink_gbps is None else self.uplink_gbps
        if isinstance(up, bool) or not isinstance(up, (int, float)) or not 0 < up <= 400:
            bad("--uplink-gbps", up, "must be > 0 and <= 400 Gbit/s")
        ratio = up / self.link_gbps
        if ratio < 1 - 1e-9 or abs(ratio - round(ratio)) > 1e-6 * ratio:
            bad("--uplink-gbps", up, f"must be a whole multiple of --link-gbps ({self.link_gbps:g}): the system "
                "spec describes the uplink as uplinks_per_leaf links of the link rate")

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def uplink_rate_gbps(self) -> float | None:
        """The uplink line rate (Gbit/s), None for a single switch."""
        if self.topology == "single-switch":
            return None
        return float(self.link_gbps if self.uplink_gbps is None else self.uplink_gbps)

    @property
    def uplinks_per_leaf(self) -> int | None:
        """``uplink_gbps / link_gbps`` (a whole number), None for a single switch."""
        up = self.uplink_rate_gbps
        return None if up is None else int(round(up / self.link_gbps))

    @property
    def leaves(self) -> int:
        """Number of (leaf) switches: 1 for a single switch."""
        if self.topology == "single-switch":
            return 1
        return -(-self.hosts // int(self.hosts_per_switch))

    @property
    def oversubscription(self) -> float | None:
        """``hosts_per_switch * link_gbps / uplink_gbps`` (two-level), None for a single switch."""
        up = self.uplink_rate_gbps
        return None if up is None else int(self.hosts_per_switch) * self.link_gbps / up

    def to_dict(self) -> dict:
        return {"hosts": self.hosts, "link_gbps": float(self.link_gbps), "latency_us": float(self.latency_us),
                "topology": self.topology, "hosts_per_switch": self.hosts_per_switch,
                "uplink_gbps": self.uplink_rate_gbps, "uplink_latency_us": float(self.uplink_latency_us),
                "prefix": self.prefix}

    def describe(self) -> str:
        """One line, e.g. ``4 hosts, 1 Gbit/s links, 100 us per link, two-level (2 per switch, 1 Gbit/s
        uplinks, 2:1)``."""
        s = f"{self.hosts} host{'s' if self.hosts != 1 else ''}, {self.link_gbps:g} Gbit/s links, " \
            f"{self.latency_us:g} us per link"
        if self.topology == "single-switch":
            return s + ", single switch"
        up = f"{self.uplink_rate_gbps:g} Gbit/s uplinks"
        if self.uplink_latency_us:
            up += f" ({self.uplink_latency_us:g} us)"
        return s + f", two-level ({self.hosts_per_switch} per switch, {up}, {self.oversubscription:g}:1)"


@dataclass(frozen=True)
class Host:
    """One emulated host: namespace, interface address and MAC, and its leaf switch."""

    index: int
    netns: str
    ip: str
    mac: str
    leaf: int


@dataclass(frozen=True)
class Link:
    """One direction of one cable: ``name`` (``h0>l0``, ``l0>h0``, ``l0>s``, ``s>l0``), line rate (bit/s)
    and one-way delay (s)."""

    name: str
    rate_bps: float
    delay_s: float


@dataclass(frozen=True)
class ClusterPlan:
    """Hosts, switches and directed links of a :class:`ClusterConfig`.

    Attributes
    ----------
    config : ClusterConfig
    hosts : tuple of Host
    links : tuple of Link
        Index order is the order :meth:`path` refers to.
    switch_netns : str
        Namespace of the kernel engine's bridges (``<prefix>sw``).
    """

    config: ClusterConfig
    hosts: tuple[Host, ...]
    links: tuple[Link, ...]
    switch_netns: str
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def link_index(self, name: str) -> int:
        return self._index[name]

    def path(self, src: int, dst: int) -> list[int]:
        """Indices of the directed links a frame from host ``src`` to host ``dst`` crosses, in order."""
        a, b = self.hosts[src], self.hosts[dst]
        names = [f"h{src}>l{a.leaf}"]
        if a.leaf != b.leaf:
            names += [f"l{a.leaf}>s", f"s>l{b.leaf}"]
        names.append(f"l{b.leaf}>h{dst}")
        return [self._index[n] for n in names]

    def path_delay_s(self, src: int, dst: int) -> float:
        """One-way delay added between two hosts (sum of the link delays), seconds."""
        return sum(self.links[i].delay_s for i in self.path(src, dst))

    @property
    def namespaces(self) -> list[str]:
        """Host namespaces (the kernel engine adds :attr:`switch_netns`)."""
        return [h.netns for h in self.hosts]

    def farthest_pair(self) -> tuple[int, int]:
        """Host 0 and the host with the longest path from it (host 1 on one switch; the first host of the
        second leaf in a two-level tree)."""
        if self.config.hosts < 2:
            return (0, 0)
        if self.config.topology == "two-level":
            return (0, int(self.config.hosts_per_switch))
        return (0, 1)


def make_plan(cfg: ClusterConfig) -> ClusterPlan:
    """Hosts (namespaces, addresses, MACs, leaves) and directed links of ``cfg``."""
    k = cfg.hosts if cfg.topology == "single-switch" else int(cfg.hosts_per_switch)
    hosts = tuple(Host(index=i, netns=f"{cfg.prefix}h{i}", ip=f"{SUBNET}.{i + 1}",
                       mac=f"02:77:00:00:00:{i + 1:02x}", leaf=i // k) for i in range(cfg.hosts))
    rate, delay = cfg.link_gbps * 1e9, cfg.latency_us * 1e-6
    links: list[Link] = []
    for h in hosts:
        links.append(Link(f"h{h.index}>l{h.leaf}", rate, delay))
        links.append(Link(f"l{h.leaf}>h{h.index}", rate, delay))
    if cfg.topology == "two-level":
        up, up_delay = float(cfg.uplink_rate_gbps) * 1e9, cfg.uplink_latency_us * 1e-6
        for leaf in range(cfg.leaves):
            links.append(Link(f"l{leaf}>s", up, up_delay))
            links.append(Link(f"s>l{leaf}", up, up_delay))
    index = {ln.name: i for i, ln in enumerate(links)}
    return ClusterPlan(config=cfg, hosts=hosts, links=tuple(links), switch_netns=f"{cfg.prefix}sw", _index=index)
