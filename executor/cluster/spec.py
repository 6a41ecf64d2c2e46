"""The system spec of the emulated cluster (id ``emulated``): what ``perfmodel cluster up`` registers so that
``--system emulated`` predicts exactly the network it made (see :mod:`hardware.catalog`, "User systems").

What the spec says
------------------
- ``max_nodes`` = hosts; one device and one NIC per node.
- ``[network]``: ``fabric = "emulated-tcp"``; ``link_Gbps`` and ``latency_us`` are the link calibration
  measured at bring-up (:mod:`executor.cluster.measure`): rate and per-message latency of MPI exchanges
  of large messages between two hosts (for a two-level tree, hosts on different leaves). The configured line rate and delays are in the ``[sources]`` entries and the notes.
  Without a measurement (``--no-measure``), the payload rate of the line rate over MTU-1500 Ethernet
  (1448 / 1538 of it) and the configured one-way delay of the path are used.
- ``[network.exchange_profile]`` (with a measurement): the calibration's typical exchange time per size
  (64 KiB-16 MiB), of which ``link_Gbps`` and ``latency_us`` are the straight-line fit from 256 KiB to
  8 MiB; the collective models add what the measurement differs from the line at each step's message size
  (:func:`perfmodel.network.exchange_residual_s`).
- ``[network.ring_profile]`` (with a measurement on 3 or more hosts): the calibration's typical time of one
  ring step per size (every host sends to the next at once); the models price the steps that are a shift,
  not an exchange (the ring's), at it (:func:`perfmodel.network.ring_residual_s`).
- ``[network.topology]``: ``single-switch`` with ``ports = hosts``, or ``fat-tree`` with ``nodes_per_leaf =
  hosts_per_switch`` and ``uplinks_per_leaf = uplink_gbps / link_gbps`` (its oversubscription follows).
  APPROXIMATION: the spec has one latency for every host pair; with ``--uplink-latency-us > 0`` pairs on
  one leaf are faster than pairs across leaves, and the spec records the cross-leaf latency.
- The device: every emulated host runs on this machine's CPU, which all ``H`` hosts share. The spec's device
  is the base system's device (the calibrated ``local`` one when ``perfmodel calibrate`` has run, else the
  catalog's estimated ``local-cpu``) divided by ``H``: peak FLOP/s, memory bandwidth and capacity / H; the
  efficiency curve is the base device's curve for H ranks sharing it (the H ranks together reach ``peak *
  eff_H(b)``, so one of them reaches ``peak / H * eff_H(b)``), its shared curves for ``k`` ranks per host are
  the base curves for ``k * H``, the per-layer overhead is time-sliced as ``max(1, H / cores)``, and the
  per-workload factors are those at ``k * H`` ranks. So predictions are right for runs that use every host
  (the executor's validation runs do); a run on fewer hosts gets more of the CPU than the spec says.
- ``[calibration] nodes_per_machine = H``: the compute of ``k`` ranks per host is the base's for ``k * H``
  ranks sharing the CPU, already the slowest of those ranks in every step, so the predictor adds no wait
  for the slowest host (:func:`perfmodel.predict.measured_together`). Before, it added the expected
  maximum of 4 hosts' jitter again, 13 and 45 ms at 4 hosts and global batches 32 and 128: over the 48
  iterations of the unsaturated networks of the file of 2026-12-07 19:53 the errors were 6.3 % / 23.5 %
  mean / max (38 within 10 %), 5.8 % / 21.3 % (41) without it.
- ``[calibration.overheads]``: the base system's executor overheads, when it has them (CPU costs of the
  training loop, not of the network); ``[calibration.speed_probe_ms]``: the base system's host speed probe
  at ``k * H`` ranks as the reference of ``k`` ranks per host (:mod:`executor.speed_probe`);
  ``[calibration.loop_compute]``, ``[calibration.step_tail]``, ``[calibration.jitter]`` and
  ``[calibration.optimizer_traffic]``: the base's in-loop compute factor, step tail, compute jitter and
  optimizer traffic scale at ``k * H`` ranks as those of ``k`` ranks per host
  (the same training loop on the same shared CPU; before they were copied, the emulated iterations'
  compute was predicted 8 % (2 hosts) and 17 % (4 hosts) below what the same loop is predicted locally);
  ``[calibration.kfac]``: the base's measured K-FAC factor computation and inversion at ``k * H`` ranks as
  those of ``k`` ranks per host on all ``H`` hosts (CPU work; ``nodes = H``, so the inversion is split over
  ``k * H`` ranks as it was measured), with the factor exchange left to the network model. The base's
  measured allreduce costs and K-FAC exchange are NOT copied (they describe shared memory, not this network).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from executor.cluster.plan import CONGESTION_CONTROL, ClusterConfig, make_plan
from hardware.specs import DeviceSpec, SystemSpec
from perfmodel.atomic import atomic_write

__all__ = ["FABRIC", "DEVICE_FILE", "TCP_PAYLOAD_FRACTION", "derived_device_toml", "exchange_profile_lines",
           "system_toml", "write_spec"]

#: fabric name of the emulated network
FABRIC = "emulated-tcp"
#: the device file, relative to the system file
DEVICE_FILE = "devices/emulated-host.toml"
#: TCP payload per wire byte over MTU-1500 Ethernet (1448 payload bytes per 1538-byte frame on the wire)
TCP_PAYLOAD_FRACTION = 1448 / 1538


def _num(x: float) -> str:
    """A TOML float with 6 significant digits."""
    x = float(f"{float(x):.6g}")
    if not math.isfinite(x):
        raise ValueError(f"not finite: {x}")
    return repr(x)


def _str(s: str) -> str:
    return json.dumps(s)


def _lines(pairs: list[tuple[str, Any]]) -> list[str]:
    out = []
    for k, v in pairs:
        if isinstance(v, bool):
            out.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            out.append(f"{k} = {v}")
        elif isinstance(v, float):
            out.append(f"{k} = {_num(v)}")
        elif isinstance(v, list):
            out.append(f"{k} = [{', '.join(_num(float(x)) for x in v)}]")
        else:
            out.append(f"{k} = {_str(str(v))}")
    return out


def _sources(src: dict[str, str]) -> list[str]:
    return ["[sources]"] + [f"{_str(k)} = {_str(v)}" for k, v in src.items()]


def derived_device_toml(base: DeviceSpec, hosts: int, base_ref: str) -> str:
    """Device file of one emulated host: ``1 / hosts`` of ``base`` (module docstring)."""
    H = int(hosts)
    why = f"{H} emulated host{'s' if H > 1 else ''} share this machine's CPU"
    src: dict[str, str] = {}
    body: list[tuple[str, Any]] = [("id", "emulated-host"), ("name", f"1/{H} of {base.name} (emulated host)"),
                                   ("kind", base.kind),
                                   ("notes", f"written by perfmodel cluster up from {base_ref}: {why}")]
    cores = max(1, base.cores // H)
    body += [("cores", cores), ("clock_GHz", base.clock_hz / 1e9)]
    src["cores"] = f"derived: {base_ref} cores // {H} ({why})"
    src["clock_GHz"] = f"copied from {base_ref}"
    for prec, peak in base.peak_flops.items():
        body.append((f"peak_tflops_{prec}", peak / 1e12 / H))
        src[f"peak_tflops_{prec}"] = f"derived: {base_ref} peak_tflops_{prec} / {H} ({why})"
    if base.memory_mode is not None:
        body.append(("memory_mode", base.memory_mode))
    if base.layer_overhead_s > 0:
        body.append(("layer_overhead_us", base.layer_overhead_s * 1e6 * max(1.0, H / max(1, base.cores))))
        src["layer_overhead_us"] = (f"derived: {base_ref} layer_overhead_us x max(1, {H} / {base.cores} cores) "
                                    f"(serial per-layer work time-sliced when {H} ranks share the cores)")
    lines = _lines(body)
    for name, m in base.memories.items():
        lines += ["", f"[memory.{name}]"] + _lines([("capacity_GiB", m.capacity_bytes / 2**30 / H),
                                                     ("bw_GBps", m.bw_Bps / 1e9 / H)])
        src[f"memory.{name}.capacity_GiB"] = f"derived: {base_ref} memory.{name}.capacity_GiB / {H} ({why})"
        src[f"memory.{name}.bw_GBps"] = f"derived: {base_ref} memory.{name}.bw_GBps / {H} ({why})"
    for prec in base.efficiency:
        c = base.efficiency_for(prec, H)
        lines += ["", f"[efficiency.{prec}]"] + _lines([("eff_max", c.eff_max),
                                                         ("batch_half_images", float(c.batch_half))])
        which = f"ranks_{H} curve" if H > 1 and c is not base.efficiency[prec] else "curve"
        for key in ("eff_max", "batch_half_images"):
            src[f"efficiency.{prec}.{key}"] = f"{base_ref} efficiency {which} ({prec}; {H} ranks share the device)"
    for prec, by_k in base.shared_efficiency.items():
        for k in range(2, max(by_k) // H + 1):
            if k * H in by_k:
                c = by_k[k * H]
                lines += ["", f"[shared_efficiency.{prec}.ranks_{k}]"] + _lines(
                    [("eff_max", c.eff_max), ("batch_half_images", float(c.batch_half))])
                for key in ("eff_max", "batch_half_images"):
                    src[f"shared_efficiency.{prec}.ranks_{k}.{key}"] = \
                        f"{base_ref} shared_efficiency.{prec}.ranks_{k * H} ({k} ranks per host x {H} hosts)"
    models = sorted({m for by_model in base.workload_scale.values() for m in by_model})
    if models:
        top = max(base.workload_scale) // H
        for k in range(1, max(1, top) + 1):
            lines += ["", f"[workload_scale.ranks_{k}]"]
            for m in models:
                lines += _lines([(m, base.workload_factor(m, k * H))])
                src[f"workload_scale.ranks_{k}.{m}"] = f"{base_ref} workload factor of {m} at {k * H} ranks"
        for k in range(1, max(1, top) + 1):   # the factors per benchmarked batch, the same mapping
            for m in models:
                pts = base.workload_factor_points(m, k * H)
                if not pts:
                    continue
                key = f"workload_scale_batch.ranks_{k}.{m}"
                lines += ["", f"[{key}]", *_lines([("batch", [b for b, _ in pts]), ("factor", [f for _, f in pts])])]
                src[f"{key}.batch"] = src[f"{key}.factor"] = (f"{base_ref} workload factors of {m} per batch at "
                                                              f"{k * H} ranks")
    head = [f"# One host of the emulated cluster: 1/{H} of {base.id} ({why}).",
            "# Written by `perfmodel cluster up` (executor/cluster/spec.py); removed by `perfmodel cluster down`."]
    return "\n".join(head + lines + [""] + _sources(src)) + "\n"


def _unmeasured_delay_s(cfg: ClusterConfig, measured: dict[str, Any]) -> float:
    """One-way delay (s) of the cluster's longest path beyond the longest path among the calibration's
    exchange pairs: 0 unless uplinks add delay. APPROXIMATION: a large message pays it three times
    (rendezvous round trip + data), which the spec adds to the measured latency and exchange times."""
    plan = make_plan(cfg)
    path_s = plan.path_delay_s(*plan.farthest_pair())
    pair_s = max((plan.path_delay_s(x, y) for x, y in measured.get("pairs", [])), default=path_s)
    return max(0.0, path_s - pair_s)


def exchange_profile_lines(cfg: ClusterConfig, measured: dict[str, Any] | None) -> tuple[list[str], dict[str, str]]:
    """The ``[network.exchange_profile]`` table (TOML lines) and its sources: the link calibration's typical
    exchange time per size (empty without a measurement with per-size times); with the calibration's ring
    steps (3 or more hosts), the ``[network.ring_profile]`` table after it, as measured. With a longer path than the
    measured pairs' (uplink delays > 0), every time carries the same ``3 x`` extra delay as ``latency_us``,
    so that the spec's line stays the straight line through the table."""
    if not measured or not measured.get("sizes") or not measured.get("times_s") or not measured.get("rate_Bps"):
        return [], {}
    # a table that is not one (lengths, order) fails when write_spec loads the spec back: one clear error
    sizes, times = [int(n) for n in measured["sizes"]], [float(t) for t in measured["times_s"]]
    extra_s = 3 * _unmeasured_delay_s(cfg, measured)
    lines = ["", "[network.exchange_profile]", f"bytes = [{', '.join(map(str, sizes))}]",
             f"seconds = [{', '.join(_num(t + extra_s) for t in times)}]"]
    how = ("measured at bring-up: typical time of one MPI Sendrecv exchange between hosts "
           + ", ".join(f"{x}-{y}" for x, y in measured.get("pairs", [])) + " at once, per size "
           "(executor/cluster/measure.py: calibration of the emulated link)"
           + (f", plus 3 x {extra_s / 3 * 1e6:g} us (the longest path's extra configured delay)" if extra_s else ""))
    src = {"network.exchange_profile.bytes": "the sizes " + how, "network.exchange_profile.seconds": how}
    rsizes, rtimes = measured.get("ring_sizes"), measured.get("ring_times_s")
    if rsizes and rtimes:
        lines += ["", "[network.ring_profile]", f"bytes = [{', '.join(str(int(n)) for n in rsizes)}]",
                  f"seconds = [{', '.join(_num(float(t)) for t in rtimes)}]"]
        rhow = (f"measured at bring-up: typical time of one ring step (every host sends to the next and receives "
                f"from the previous at once, hosts 0 -> 1 -> ... -> {cfg.hosts - 1} -> 0, one MPI Sendrecv "
                "each), per size (executor/cluster/measure.py: calibration of the emulated link)")
        src.update({"network.ring_profile.bytes": "the sizes " + rhow, "network.ring_profile.seconds": rhow})
    return lines, src


def _measured_or_default(cfg: ClusterConfig, measured: dict[str, Any] | None) -> tuple[float, float, str, str]:
    """``(link_Gbps, latency_us, source of the rate, source of the latency)``."""
    plan = make_plan(cfg)
    a, b = plan.farthest_pair()
    path_us = plan.path_delay_s(a, b) * 1e6
    if measured and measured.get("rate_Bps") and measured.get("latency_s") is not None:
        rate_gbps = measured["rate_Bps"] * 8 / 1e9
        lat_us = measured["latency_s"] * 1e6
        extra_us = _unmeasured_delay_s(cfg, measured) * 1e6   # uplink delays > 0 only
        lat_us += 3 * extra_us
        pair = measured.get("hosts", [a, b])
        pairs = ", ".join(f"{x}-{y}" for x, y in measured.get("pairs", [pair]))
        fit = (f"fit t(n) = latency + n / rate of MPI Sendrecv exchanges of 256 KiB-8 MiB between hosts {pairs} "
               f"at once, at bring-up (executor/cluster/measure.py: calibration of the emulated link)")
        rsrc = f"measured: rate of the {fit}; configured line rate {cfg.link_gbps:g} Gbit/s"
        small = measured.get("small_latency_s")
        lsrc = (f"measured: latency of the {fit}"
                + (f", plus 3 x {extra_us:g} us (the longest path's extra configured delay)" if extra_us else "")
                + f"; configured delay between hosts {a} and {b} {path_us:g} us one way"
                + (f"; small-message (eager) MPI latency between hosts {pair[0]} and {pair[1]} {small * 1e6:.1f} us"
                   if small else ""))
        return rate_gbps, lat_us, rsrc, lsrc
    rate_gbps = cfg.link_gbps * TCP_PAYLOAD_FRACTION
    rsrc = (f"configured line rate {cfg.link_gbps:g} Gbit/s x 1448/1538 (TCP payload over MTU-1500 Ethernet); "
            "not measured (--no-measure)")
    lsrc = f"configured one-way delay between hosts {a} and {b} ({path_us:g} us); not measured (--no-measure)"
    return rate_gbps, max(path_us, 0.0), rsrc, lsrc


def system_toml(cfg: ClusterConfig, base: SystemSpec, base_ref: str, *, measured: dict[str, Any] | None = None,
                engine: str = "userspace", device_ref: str = DEVICE_FILE) -> str:
    """The system file of the emulated cluster (module docstring)."""
    H = cfg.hosts
    rate_gbps, lat_us, rsrc, lsrc = _measured_or_default(cfg, measured)
    how = {"userspace": "TAP interfaces and a userspace switch (executor/cluster/switch.py)",
           "netem": "veth pairs, Linux bridges and tc netem"}.get(engine, engine)
    notes = (f"Emulated cluster on this machine: {cfg.describe()}; {how}. MPICH over TCP ({CONGESTION_CONTROL}; ofi netmod), gloo over "
             f"the same interface. Valid while the cluster is up (perfmodel cluster down removes this file).")
    top: list[tuple[str, Any]] = [("id", "emulated"), ("name", f"Emulated cluster ({cfg.describe()})"),
                                  ("notes", notes), ("max_nodes", H)]
    src: dict[str, str] = {"max_nodes": f"perfmodel cluster up --hosts {H}"}
    intra = base.node.intra
    lines = ["# The emulated cluster made by `perfmodel cluster up` (executor/cluster/spec.py); valid while it is up.",
             *_lines(top), "", "[node]",
             *_lines([("device", device_ref), ("devices_per_node", 1), ("nics_per_node", 1),
                      ("host_memory_GiB", base.node.host_memory_bytes / 2**30 / H)]),
             "", "[node.intra]",
             *_lines([("kind", intra.kind), ("link_GBps", intra.link_bw_Bps / 1e9), ("latency_us", intra.latency_s * 1e6)]),
             "", "[network]",
             *_lines([("fabric", FABRIC), ("link_Gbps", rate_gbps), ("latency_us", lat_us)]),
             "", "[network.topology]"]
    src.update({"node.devices_per_node": "one rank's device per emulated host (a 1/H share of this machine's CPU)",
                "node.nics_per_node": "one interface (ttt0) per emulated host",
                "node.host_memory_GiB": f"derived: {base_ref} node.host_memory_GiB / {H} (hosts share this machine)",
                "node.intra.link_GBps": f"copied from {base_ref} (ranks on one emulated host share memory)",
                "node.intra.latency_us": f"copied from {base_ref}",
                "network.link_Gbps": rsrc, "network.latency_us": lsrc})
    if cfg.topology == "single-switch":
        lines += _lines([("kind", "single-switch"), ("ports", H)])
        src["network.topology.ports"] = f"one switch port per emulated host ({H})"
    else:
        lines += _lines([("kind", "fat-tree"), ("nodes_per_leaf", int(cfg.hosts_per_switch)),
                         ("uplinks_per_leaf", int(cfg.uplinks_per_leaf))])
        src["network.topology.nodes_per_leaf"] = f"perfmodel cluster up --hosts-per-switch {cfg.hosts_per_switch}"
        src["network.topology.uplinks_per_leaf"] = (
            f"uplink {cfg.uplink_rate_gbps:g} Gbit/s / link {cfg.link_gbps:g} Gbit/s: one emulated uplink of "
            f"{cfg.uplinks_per_leaf} x the link rate (oversubscription {cfg.oversubscription:g}:1)")
    prof_lines, prof_src = exchange_profile_lines(cfg, measured)
    lines += prof_lines
    src.update(prof_src)
    ov = base.overheads
    if ov is not None:
        cal = base.calibration
        lines += ["", "[calibration]",
                  *_lines([("date", cal.date), ("host", cal.host),
                           ("nodes_per_machine", H),
                           ("notes", f"executor overheads copied from {base_ref}; no allreduce calibration "
                                     "(the network is priced from [network])")]),
                  "", "[calibration.overheads]",
                  *_lines([("step_us", ov.step_s * 1e6), ("bucketer_us", ov.bucketer_s * 1e6),
                           ("grad_hook_us", ov.grad_hook_s * 1e6), ("kernel_launch_us", ov.kernel_launch_s * 1e6),
                           ("optimizer_traffic_scale", float(ov.optimizer_traffic_scale))])]
        src["calibration.nodes_per_machine"] = (
            f"the {H} emulated hosts share this machine's CPU: the compute of k ranks per host is {base_ref}'s "
            f"of k x {H} ranks sharing it, already the slowest of them (no straggler wait added for the hosts)")
        for key in ("step_us", "bucketer_us", "grad_hook_us", "kernel_launch_us", "optimizer_traffic_scale"):
            src[f"calibration.overheads.{key}"] = f"copied from {base_ref} (perfmodel calibrate on this machine)"
        # k ranks per host are k * H ranks sharing this machine's CPU; the table holds the SI value x unit
        for table, values, unit, what in (
                ("speed_probe_ms", cal.speed_probe_s, 1e3, "host speed probe"),
                ("loop_compute", cal.loop_compute_scale, 1.0, "in-loop compute factor"),
                ("step_tail", cal.step_tail, 1.0, "step tail (mean over typical step)"),
                ("optimizer_traffic", cal.optimizer_traffic, 1.0, "optimizer traffic scale (ranks stepping at once)"),
                ("jitter", cal.jitter_cv, 1.0, "compute jitter (CV)")):
            per_host = {k // H: v for k, v in values.items() if k % H == 0}
            if not per_host:
                continue
            lines += ["", f"[calibration.{table}]",
                      *_lines([(f"ranks_{k}", v * unit) for k, v in per_host.items()])]
            for k in per_host:
                src[f"calibration.{table}.ranks_{k}"] = (
                    f"{base_ref} calibration.{table}.ranks_{k * H}: the {what} of {k * H} ranks sharing this "
                    f"machine's CPU ({k} ranks per host x {H} hosts; the executor's training loop, not the network)")
        for k, by_model in cal.speed_probe_model_s.items():
            if k % H or not by_model:
                continue
            key = f"calibration.speed_probe_model_ms.ranks_{k // H}"
            lines += ["", f"[{key}]", *_lines([(m, v * 1e3) for m, v in by_model.items()])]
            for m in by_model:
                src[f"{key}.{m}"] = f"{base_ref} calibration.speed_probe_model_ms.ranks_{k}.{m}"
        for k, ref in cal.kfac.items():   # K-FAC's CPU work per refresh, the same k * H -> k mapping
            if k % H:
                continue
            key = f"calibration.kfac.ranks_{k // H}"
            lines += ["", f"[{key}]", *_lines([("model", ref.model), ("per_rank_batch", int(ref.per_rank_batch)),
                                               ("factor_ms", ref.factor_s * 1e3), ("exchange_ms", 0.0),
                                               ("inversion_ms", ref.inversion_s * 1e3), ("nodes", H)])]
            src[f"{key}.nodes"] = f"the base's {k} ranks are {k // H} per host on all {H} emulated hosts"
            for f in ("per_rank_batch", "factor_ms", "inversion_ms"):
                src[f"{key}.{f}"] = (f"{base_ref} calibration.kfac.ranks_{k}.{f}: the executor's K-FAC with {k} "
                                     f"ranks sharing this machine's CPU ({k // H} per host x {H} hosts)")
            src[f"{key}.exchange_ms"] = (f"not copied ({base_ref} measured the factor exchange over shared memory "
                                         f"among {k} ranks): the emulated exchange is priced from [network], unscaled")
    return "\n".join(lines + [""] + _sources(src)) + "\n"


def write_spec(folder: Path, cfg: ClusterConfig, base_system: str = "local", *,
               measured: dict[str, Any] | None = None, engine: str = "userspace") -> dict[str, str]:
    """Write ``<folder>/emulated.toml`` and its device ``<folder>/devices/emulated-host.toml``; load them
    back (so a spec that does not validate is an error here, not later). Returns the two paths and the base
    system's file."""
    from hardware.catalog import load_system

    base = load_system(base_system)
    base_ref = base.source_file
    folder = Path(folder)
    sys_path, dev_path = folder / "emulated.toml", folder / DEVICE_FILE
    atomic_write(dev_path, derived_device_toml(base.device, cfg.hosts, base.device.source_file))
    atomic_write(sys_path, system_toml(cfg, base, base_ref, measured=measured, engine=engine))
    load_system(str(sys_path))   # validates both files
    return {"system_file": str(sys_path), "device_file": str(dev_path), "base_system_file": base_ref,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
