"""``perfmodel workload``: show, list and extract per-layer workload tables.

    perfmodel workload show MODEL|FILE.json [--batch N] [--json]
    perfmodel workload list [--json]
    perfmodel workload extract MODULE:CALLABLE|MODEL --input-shape C,H,W [--num-classes N] [--name NAME]
                               [--dataset NAME] [--out FILE.json] [--json]

``show --json`` prints one object: ``model``, ``dataset``, ``input_shape``, ``num_classes``, ``batch``,
``source``, the totals ``params``, ``param_bytes``, ``flops_fwd``, ``flops_bwd``, ``flops_bwd_input``,
``flops_bwd_weight``, ``act_bytes``, ``mem_bytes_fwd``, ``mem_bytes_bwd``, and ``layers`` (the file's layer
records plus ``flops_bwd``). FLOP and activation/memory bytes are for ``batch`` images (default 1);
parameter counts and bytes do not depend on the batch.

``extract`` is the only action that needs PyTorch (imported only there): it builds the model on the meta
device and writes a table in the same schema as the catalog's (``perfmodel/data/workloads``); the file then
works anywhere a model name does (``--model FILE.json``).
"""
from __future__ import annotations

import argparse
import sys

from hardware.errors import ConfigError, ToolkitError
from perfmodel.cli.output import print_json, print_table
from perfmodel.workload import TOTAL_KEYS, WorkloadTable, list_workloads, load_workload

__all__ = ["HELP", "configure", "run", "show_dict"]

HELP = "per-layer workload tables: show, list, extract (FLOPs, parameters, activations per layer)"

_SCALED = ("flops_fwd", "flops_bwd_input", "flops_bwd_weight", "flops_bwd", "act_out_bytes", "mem_bytes_fwd",
           "mem_bytes_bwd")
_SCALED_TOTALS = ("flops_fwd", "flops_bwd_input", "flops_bwd_weight", "flops_bwd", "act_bytes", "mem_bytes_fwd",
                  "mem_bytes_bwd")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``show``, ``list`` and ``extract`` actions."""
    sub = parser.add_subparsers(dest="workload_action", metavar="ACTION")
    p = sub.add_parser("show", help="per-layer table and totals of one model",
                       description="Per-layer table and totals of one model (catalog name or table file).")
    p.add_argument("model", metavar="MODEL", help="catalog name (see 'perfmodel workload list') or a table file")
    p.add_argument("--batch", type=int, default=1, help="images per step: FLOPs and bytes are scaled by it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("list", help="models with a cached table", description="Models with a cached table.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("extract", help="write the table of a model (needs PyTorch)",
                       description="Build a model on PyTorch's meta device and write its workload table. TARGET "
                                   "is MODULE:CALLABLE (a dotted module or a .py file, and a function returning "
                                   "an nn.Module) or a registered model name.")
    p.add_argument("target", metavar="TARGET", help="MODULE:CALLABLE or a registered model name")
    p.add_argument("--input-shape", default=None, help="one sample, e.g. 3,224,224 (required for MODULE:CALLABLE)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes (passed to the callable if it takes num_classes; default: from the output)")
    p.add_argument("--name", default=None, help="model name recorded in the table (default: the callable's)")
    p.add_argument("--dataset", default=None, help="dataset recorded in the table (default: custom)")
    p.add_argument("--out", default=None, help="output file (default: print the table JSON)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(_workload_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the action."""
    action = getattr(args, "workload_action", None)
    if action == "show":
        return _show(args)
    if action == "list":
        return _list(args)
    if action == "extract":
        return _extract(args)
    args._workload_parser.print_help(sys.stderr)
    return 2


def show_dict(table: WorkloadTable, batch: int = 1) -> dict:
    """The ``show --json`` object of ``table`` for ``batch`` images."""
    tot = table.totals.to_dict()
    out = {"model": table.model, "dataset": table.dataset, "input_shape": list(table.input_shape),
           "num_classes": table.num_classes, "batch": batch, "source": table.source}
    for key in TOTAL_KEYS:
        out[key] = tot[key] * batch if key in _SCALED_TOTALS else tot[key]
    layers = []
    for layer in table.layers:
        rec = layer.to_dict()
        rec["flops_bwd"] = layer.flops_bwd
        for key in _SCALED:
            rec[key] = rec[key] * batch
        layers.append(rec)
    out["layers"] = layers
    return out


def _positive_batch(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("--batch", "batch", value, "must be a positive integer")
    return value


def _show(args: argparse.Namespace) -> int:
    batch = _positive_batch(args.batch)
    table = load_workload(args.model)
    data = show_dict(table, batch)
    if args.json:
        print_json(data)
        return 0
    shape = "x".join(str(v) for v in table.input_shape)
    print(f"{table.model}: {table.dataset}, input {shape}, {table.num_classes} classes; "
          f"FLOP and bytes for a batch of {batch} (source {table.source})")
    rows = [[i, rec["name"], rec["type"], rec["params"], rec["flops_fwd"], rec["flops_bwd"],
             rec["act_out_bytes"], "-" if rec["grad_ready_index"] is None else rec["grad_ready_index"]]
            for i, rec in enumerate(data["layers"])]
    print_table(rows, ["#", "layer", "type", "params", "flops_fwd", "flops_bwd", "act_out_bytes", "ready"],
                align="rllrrrrr")
    print()
    totals = [["params", data["params"]], ["param_bytes", data["param_bytes"]],
              ["flops_fwd", data["flops_fwd"]], ["flops_bwd", data["flops_bwd"]],
              ["  of which input gradient", data["flops_bwd_input"]],
              ["  of which weight gradient", data["flops_bwd_weight"]],
              ["act_bytes", data["act_bytes"]], ["mem_bytes_fwd", data["mem_bytes_fwd"]],
              ["mem_bytes_bwd", data["mem_bytes_bwd"]]]
    print_table(totals, ["total", "value"], align="lr")
    print(f"\n{data['flops_fwd'] / 1e9:.3f} GFLOP forward, {data['flops_bwd'] / 1e9:.3f} GFLOP backward; "
          f"{data['param_bytes'] / 1e6:.2f} MB of fp32 gradients per step")
    return 0


def _list(args: argparse.Namespace) -> int:
    records = []
    for name in list_workloads():
        t = load_workload(name)
        tot = t.totals
        records.append({"model": t.model, "dataset": t.dataset, "input_shape": list(t.input_shape),
                        "num_classes": t.num_classes, "layers": t.n_layers, "params": tot.params,
                        "flops_fwd": tot.flops_fwd, "flops_bwd": tot.flops_bwd, "source": t.source})
    if args.json:
        print_json({"workloads": records})
        return 0
    rows = [[r["model"], r["dataset"], "x".join(map(str, r["input_shape"])), r["num_classes"], r["layers"],
             r["params"], round(r["flops_fwd"] / 1e9, 4)] for r in records]
    print_table(rows, ["model", "dataset", "input", "classes", "layers", "params", "GFLOP fwd/image"],
                align="lllrrrr")
    return 0


def _extract(args: argparse.Namespace) -> int:
    try:
        from executor import workload_extract as wx
        from executor.models import DATASETS, get_model_info
    except ImportError as exc:
        raise ToolkitError(f"workload extract needs PyTorch, which cannot be imported here ({exc})") from None
    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError("--num-classes", "num_classes", args.num_classes, "must be a positive integer")
    target = args.target
    if ":" not in target:  # a registered model
        info = get_model_info(target)
        shape = wx.parse_input_shape(args.input_shape) if args.input_shape else DATASETS[info.dataset].input_shape
        num_classes = args.num_classes or DATASETS[info.dataset].num_classes
        model = wx.build_meta(info.name, num_classes)
        name, dataset = args.name or info.name, args.dataset or info.dataset
    else:
        if not args.input_shape:
            raise ConfigError("--input-shape", "input_shape", None,
                              "required with MODULE:CALLABLE (one sample, e.g. 3,224,224)")
        shape = wx.parse_input_shape(args.input_shape)
        model = wx.build_user_model(target, args.num_classes)
        num_classes = args.num_classes
        name = args.name or target.rpartition(":")[2].split(".")[-1]
        dataset = args.dataset or "custom"
    table = wx.extract_table(model, shape, name, dataset, num_classes)
    tot = table["totals"]
    summary = {"model": name, "dataset": dataset, "input_shape": table["input_shape"],
               "num_classes": table["num_classes"], "layers": len(table["layers"]), "params": tot["params"],
               "flops_fwd": tot["flops_fwd"], "flops_bwd": tot["flops_bwd"], "out": args.out}
    if args.out is None:
        sys.stdout.write(wx.dumps_table(table))
        return 0
    path = wx.write_table(table, args.out)
    summary["out"] = str(path)
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {path}: {name}, {len(table['layers'])} layers, {tot['params']:,} parameters, "
              f"{tot['flops_fwd'] / 1e9:.4g} GFLOP forward per sample")
    return 0
