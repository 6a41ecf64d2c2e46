"""``perfmodel tour``: the built-in default job for now — a prediction-ready tour of the hardware catalog
and the workload tables: every system with its device, network and the single-device compute rate the
model predicts for a reference workload, and every workload with its size and cost."""
from __future__ import annotations

import argparse


from hardware.catalog import list_systems, load_system
from perfmodel.cli.output import print_json, print_table
from perfmodel.compute import layer_times
from perfmodel.workload import list_workloads, load_workload

HELP = "tour of the hardware catalog and workload tables with single-device compute predictions"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet50", help="reference workload for compute rates")
    parser.add_argument("--per-device-batch", type=int, default=32, help="images per device (default 32)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    table = load_workload(args.model)
    systems = []
    for sid in list_systems():
        s = load_system(sid)
        dev = s.device
        prec = "fp32"
        t = layer_times(table, dev, args.per_device_batch, prec)
        step_s = float(t.forward_total_s[0] + t.backward_total_s[0])
        systems.append({
            "system": sid, "device": dev.id, "devices_per_node": s.devices_per_node, "max_nodes": s.max_nodes,
            "peak_flops_fp32": dev.peak_flops_for("fp32"), "memory_bw_Bps": dev.memory_bw_Bps,
            "network": s.network.fabric, "node_injection_bw_Bps": s.node_injection_bw_Bps,
            "topology": s.network.topology_kind,
            "compute_step_s": step_s, "images_per_s_per_device": args.per_device_batch / step_s,
        })
    workloads = []
    for name in list_workloads():
        w = load_workload(name)
        tot = w.totals
        workloads.append({"model": name, "dataset": w.dataset, "layers": w.n_layers, "params": tot.params,
                          "flops_fwd": tot.flops_fwd, "flops_fwd_bwd": tot.flops_fwd_bwd,
                          "gradient_bytes": w.gradient_bytes})
    if args.json:
        print_json({"model": args.model, "per_device_batch": args.per_device_batch,
                    "systems": systems, "workloads": workloads})
        return 0
    print(f"Systems (single-device fp32 compute for {args.model} at {args.per_device_batch} images per "
          f"device; communication and optimizer not included)\n")
    print_table([[s["system"], s["device"], s["devices_per_node"], s["max_nodes"],
                  s["peak_flops_fp32"] / 1e12, s["network"], s["node_injection_bw_Bps"] * 8 / 1e9,
                  s["compute_step_s"] * 1e3, s["images_per_s_per_device"]] for s in systems],
                ["system", "device", "dev/node", "nodes", "TFLOP/s", "network", "Gbit/s/node",
                 "step ms", "img/s/dev"])
    print("\nWorkloads (per image)\n")
    print_table([[w["model"], w["dataset"], w["layers"], w["params"], w["flops_fwd"] / 1e9,
                  w["flops_fwd_bwd"] / 1e9, w["gradient_bytes"] / 1e6] for w in workloads],
                ["model", "dataset", "layers", "params", "GFLOP fwd", "GFLOP fwd+bwd", "grad MB"])
    print("\nNext: `perfmodel hardware show ID`, `perfmodel workload show MODEL`.")
    return 0
