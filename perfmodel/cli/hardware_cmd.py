"""``perfmodel hardware``: list the hardware catalog and show one device or system spec.

    perfmodel hardware list [--json]
    perfmodel hardware show ID|PATH [--memory-mode flat|cache] [--json]

``list --json`` prints ``{"devices": [ids], "systems": [ids]}``; ``show --json`` prints the spec in SI units
with its sources (see :func:`hardware.catalog.spec_to_dict`). The tables show readable units.
"""
from __future__ import annotations

import argparse
from typing import Any

from hardware import catalog
from hardware.specs import MEMORY_MODES, DeviceSpec, SystemSpec
from perfmodel.cli.output import fmt_num, print_json, print_table

__all__ = ["HELP", "configure", "run"]

HELP = "list the hardware catalog or show a device/system spec"

_GiB = 2.0 ** 30


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` and ``show`` actions to the ``hardware`` subparser."""
    sub = parser.add_subparsers(dest="hw_action", metavar="ACTION")
    p_list = sub.add_parser("list", help="catalog ids of devices and systems")
    p_list.add_argument("--json", action="store_true", help="print JSON")
    p_show = sub.add_parser("show", help="show one device or system (catalog id or spec file path)")
    p_show.add_argument("spec", metavar="ID|PATH", help="catalog id or path to a TOML spec file")
    p_show.add_argument("--memory-mode", choices=MEMORY_MODES, default=None,
                        help="override the memory mode of a two-pool device (Xeon Phi KNL)")
    p_show.add_argument("--json", action="store_true", help="print JSON (SI units, with sources)")
    parser.set_defaults(_hw_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Dispatch ``list`` / ``show``; returns the exit code."""
    if args.hw_action == "list":
        return _list(args)
    if args.hw_action == "show":
        return _show(args)
    args._hw_parser.print_help()
    return 2


# -- list ---------------------------------------------------------------------------------------------------
def _list(args) -> int:
    devices, systems = catalog.list_devices(), catalog.list_systems()
    if args.json:
        print_json({"devices": devices, "systems": systems})
        return 0
    rows = [("device", d, catalog.load_device(d).name) for d in devices]
    rows += [("system", s, catalog.load_system(s).name) for s in systems]
    print_table(rows, ["type", "id", "name"])
    return 0


# -- show ---------------------------------------------------------------------------------------------------
def _show(args) -> int:
    spec = catalog.load_any(args.spec)
    if args.memory_mode is not None:
        if isinstance(spec, SystemSpec):
            from dataclasses import replace
            spec = replace(spec, node=replace(spec.node, device=spec.node.device.with_memory_mode(args.memory_mode)))
        else:
            spec = spec.with_memory_mode(args.memory_mode)
    if args.json:
        print_json(catalog.spec_to_dict(spec))
        return 0
    if isinstance(spec, SystemSpec):
        print(f"system {spec.id}: {spec.name}    ({spec.source_file})")
        print_table(_system_rows(spec), ["field", "value", "unit", "source"], align="llll")
        if spec.notes:
            print(f"notes: {spec.notes}")
        print()
        dev = spec.node.device
        print(f"device {dev.id}: {dev.name}    ({dev.source_file})")
        print_table(_device_rows(dev), ["field", "value", "unit", "source"], align="llll")
        if dev.notes:
            print(f"notes: {dev.notes}")
    else:
        print(f"device {spec.id}: {spec.name}    ({spec.source_file})")
        print_table(_device_rows(spec), ["field", "value", "unit", "source"], align="llll")
        if spec.notes:
            print(f"notes: {spec.notes}")
    return 0


def _src(spec, key: str) -> str:
    return spec.sources.get(key, "")


def _row(label: str, value: Any, unit: str, source: str = "") -> tuple:
    return (label, fmt_num(value) if not isinstance(value, str) else value, unit, source)


def _device_rows(d: DeviceSpec) -> list[tuple]:
    rows = [_row("kind", d.kind, ""), _row("cores", d.cores, "", _src(d, "cores")),
            _row("clock", d.clock_hz / 1e9, "GHz", _src(d, "clock_GHz"))]
    for prec, flops in d.peak_flops.items():
        rows.append(_row(f"peak {prec}", flops / 1e12, "TFLOP/s", _src(d, f"peak_tflops_{prec}")))
    for name, m in d.memories.items():
        rows.append(_row(f"memory {name} capacity", m.capacity_bytes / _GiB, "GiB",
                         _src(d, f"memory.{name}.capacity_GiB")))
        rows.append(_row(f"memory {name} bandwidth", m.bw_Bps / 1e9, "GB/s", _src(d, f"memory.{name}.bw_GBps")))
    if d.memory_mode is not None:
        rows.append(_row("memory mode", d.memory_mode, "", _src(d, "memory_mode")))
    cm = d.compute_memory
    rows.append(_row(f"compute memory ({cm.name})", cm.capacity_bytes / _GiB, "GiB", "derived"))
    rows.append(_row("compute memory bandwidth", cm.bw_Bps / 1e9, "GB/s", "derived"))
    for prec, e in d.efficiency.items():
        rows.append(_row(f"efficiency {prec} eff_max", e.eff_max, "", _src(d, f"efficiency.{prec}.eff_max")))
        rows.append(_row(f"efficiency {prec} batch_half", e.batch_half, "images",
                         _src(d, f"efficiency.{prec}.batch_half_images")))
    return rows


def _system_rows(s: SystemSpec) -> list[tuple]:
    n, net = s.node, s.network
    rows = [_row("max nodes", s.max_nodes, "", _src(s, "max_nodes")),
            _row("device", n.device.id, "", n.device_ref if n.device_ref != n.device.id else ""),
            _row("devices per node", n.devices_per_node, "", _src(s, "node.devices_per_node")),
            _row("max devices", s.max_devices, "", "derived"),
            _row("NICs per node", n.nics_per_node, "", _src(s, "node.nics_per_node")),
            _row("host memory", n.host_memory_bytes / _GiB, "GiB", _src(s, "node.host_memory_GiB")),
            _row("memory per device", s.memory_per_device_bytes / _GiB, "GiB", "derived")]
    if n.device.memory_mode is not None:
        rows.append(_row("memory mode", n.device.memory_mode, "",
                         _src(s, "node.memory_mode") or "device default: " + _src(n.device, "memory_mode")))
    rows += [_row("intra-node kind", n.intra.kind, ""),
             _row("intra-node link bandwidth", n.intra.link_bw_Bps / 1e9, "GB/s", _src(s, "node.intra.link_GBps")),
             _row("intra-node latency", n.intra.latency_s * 1e6, "us", _src(s, "node.intra.latency_us"))]
    if n.intra.links_per_device is not None:
        rows.append(_row("intra-node links per device", n.intra.links_per_device, "",
                         _src(s, "node.intra.links_per_device")))
    rows += [_row("network fabric", net.fabric, ""),
             _row("network link bandwidth", net.link_bw_Bps * 8 / 1e9, "Gb/s", _src(s, "network.link_Gbps")),
             _row("node injection bandwidth", s.node_injection_bw_Bps / 1e9, "GB/s", "derived"),
             _row("network latency", net.latency_s * 1e6, "us", _src(s, "network.latency_us")),
             _row("topology", net.topology_kind, "")]
    for key, value in net.topology_params.items():
        shown = "x".join(str(v) for v in value) if isinstance(value, tuple) else value
        rows.append(_row(f"topology {key}", shown, "", _src(s, f"network.topology.{key}") or "derived"))
    return rows
