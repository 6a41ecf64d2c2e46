"""``perfmodel cluster``: an emulated cluster on this machine (network namespaces joined by links of a set
rate and delay), so that ``run`` and ``bench`` with ``--system emulated`` run across hosts over real TCP.

    perfmodel cluster up --hosts N --link-gbps X --latency-us Y [--topology single-switch|two-level]
                         [--hosts-per-switch K] [--uplink-gbps Z] [--uplink-latency-us W]
                         [--engine auto|netem|userspace] [--base-system local] [--prefix ttt-]
                         [--no-measure] [--json]
    perfmodel cluster down [--json]
    perfmodel cluster status [--json]

Meaning of the numbers (see :mod:`executor.cluster.plan`): ``--link-gbps`` is the Ethernet line rate of every
host link, each direction; ``--latency-us`` the one-way delay added to every host link in each direction
(two hosts on one switch are ``2 * latency`` apart one way); ``--uplink-gbps`` / ``--uplink-latency-us`` the
same for the leaf-to-spine links of a two-level tree (oversubscription = hosts per switch x link / uplink).
``up`` registers the system spec ``emulated`` (measured link latency and rate; :mod:`executor.cluster.spec`);
``down`` removes everything ``up`` made and nothing else. Both need root.
"""
from __future__ import annotations

import argparse
import sys

from perfmodel.cli.output import print_json

__all__ = ["HELP", "configure", "run"]

HELP = "emulated cluster on this machine: network namespaces, shaped links, the 'emulated' system spec"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``up``, ``down`` and ``status`` actions."""
    sub = parser.add_subparsers(dest="cluster_action", metavar="ACTION")
    u = sub.add_parser("up", help="create the emulated cluster and register the 'emulated' system spec")
    u.add_argument("--hosts", type=int, required=True, help="number of emulated hosts (network namespaces)")
    u.add_argument("--link-gbps", type=float, required=True, help="line rate of every host link, Gbit/s")
    u.add_argument("--latency-us", type=float, required=True,
                   help="one-way delay added to every host link and direction, us (a host pair on one switch: 2x)")
    u.add_argument("--topology", choices=("single-switch", "two-level"), default="single-switch")
    u.add_argument("--hosts-per-switch", type=int, default=None, help="hosts per leaf switch (two-level)")
    u.add_argument("--uplink-gbps", type=float, default=None,
                   help="leaf-to-spine line rate, Gbit/s, a whole multiple of --link-gbps (default: --link-gbps)")
    u.add_argument("--uplink-latency-us", type=float, default=0.0,
                   help="one-way delay per uplink and direction, us (default 0)")
    u.add_argument("--engine", choices=("auto", "netem", "userspace"), default="auto",
                   help="links by the kernel's netem qdisc, or by a userspace switch (default: netem if available)")
    u.add_argument("--base-system", default="local",
                   help="system whose CPU the hosts share (device, executor overheads); default local")
    u.add_argument("--prefix", default="ttt-", help="prefix of the namespaces made (default 'ttt-'; one cluster "
                   "per state folder, $TTT_CLUSTER_DIR)")
    u.add_argument("--no-measure", action="store_true",
                   help="do not measure the link: the spec gets the configured rate and delay")
    u.add_argument("--json", action="store_true", help="print the cluster state as JSON")
    d = sub.add_parser("down", help="remove the emulated cluster (only what 'up' made)")
    d.add_argument("--json", action="store_true", help="print what was removed as JSON")
    s = sub.add_parser("status", help="show the emulated cluster, if one is up")
    s.add_argument("--json", action="store_true", help="print the state as JSON")
    parser.set_defaults(_cluster_parser=parser)


def _progress(args) -> object:
    if args.json:
        return None
    return lambda msg: print(f"cluster: {msg}", file=sys.stderr, flush=True)


def _summary(state: dict) -> list[str]:
    lines = [f"emulated cluster: {state.get('description')} ({state.get('engine')} engine)"]
    for h in state.get("hosts", []):
        lines.append(f"  host {h['index']}: namespace {h['netns']}, {h['iface']} {h['ip']} (leaf {h['leaf']})")
    ping = state.get("ping")
    if ping and ping.get("rtt_s"):
        rtt = sorted(ping["rtt_s"])[len(ping["rtt_s"]) // 2]
        lines.append(f"  ping host {ping['hosts'][0]} -> {ping['hosts'][1]}: {rtt * 1e6:.0f} us round trip "
                     f"(configured delays {ping['configured_rtt_s'] * 1e6:.0f} us)")
    m = state.get("measured")
    if m:
        lines.append(f"  measured (MPI exchanges of 256 KiB-8 MiB): {m['latency_s'] * 1e6:.1f} us + n / "
                     f"{(m.get('rate_Bps') or 0) * 8 / 1e9:.3f} Gbit/s; small messages "
                     f"{m.get('small_latency_s', 0) * 1e6:.1f} us one way")
    for w in state.get("warnings", []):
        lines.append(f"  WARNING: {w}")
    spec = state.get("spec")
    if spec:
        lines.append(f"  system spec 'emulated': {spec['system_file']}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Dispatch ``up`` / ``down`` / ``status``; returns the exit code."""
    from executor.cluster import ClusterConfig, down, status, up

    action = getattr(args, "cluster_action", None)
    if action == "up":
        cfg = ClusterConfig(hosts=args.hosts, link_gbps=args.link_gbps, latency_us=args.latency_us,
                            topology=args.topology, hosts_per_switch=args.hosts_per_switch,
                            uplink_gbps=args.uplink_gbps, uplink_latency_us=args.uplink_latency_us,
                            prefix=args.prefix)
        state = up(cfg, base_system=args.base_system, engine=args.engine, measure=not args.no_measure,
                   progress=_progress(args))
        if args.json:
            print_json(state)
        else:
            print("\n".join(_summary(state)))
        return 0
    if action == "down":
        out = down(progress=_progress(args))
        if args.json:
            print_json(out)
        else:
            print(out["message"])
        return 0
    if action == "status":
        st = status()
        if args.json:
            print_json(st)
        elif not st.get("up") and "hosts" not in st:
            print(st["message"])
        else:
            print("\n".join(_summary(st)))
            if not st["up"]:
                print("  NOT WORKING: " + ("the switch process is gone" if not st.get("switch_alive", True)
                                           else "namespaces are missing") + "; run 'perfmodel cluster down'")
            stats = st.get("switch_stats")
            if stats:
                print(f"  switch: {stats['frames_out']} frames forwarded, late by {stats.get('late_mean_s', 0) * 1e6:.0f} "
                      f"us on average (max {stats['late_max_s'] * 1e6:.0f} us), real-time priority "
                      f"{'yes' if stats.get('realtime') else 'no'}")
        return 0
    args._cluster_parser.print_help()
    return 2
