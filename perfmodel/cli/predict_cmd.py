"""``perfmodel predict``: the analytic time-to-train prediction for one configuration."""
from __future__ import annotations

import argparse

from perfmodel.cli.output import fmt_num, print_json
from perfmodel.config import add_config_arguments, config_from_args
from perfmodel.predict import predict

HELP = "analytic prediction of time to train, with the per-iteration breakdown"


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    pred = predict(cfg)
    if args.json:
        print_json(pred.to_dict())
        return 0
    c, b, rb = pred.config, pred.breakdown, pred.run_breakdown
    print(f"{c.model} on {pred.system}: {c.nodes} nodes x {pred.ranks_per_node} ranks = {pred.ranks} ranks, "
          f"global batch {c.batch} ({pred.per_device_batch} per rank), {c.optimizer}, {c.precision}, "
          f"allreduce {c.allreduce}, buckets {c.bucket_bytes / 1e6:g} MB, overlap {'on' if c.overlap else 'off'}")
    print(f"\ntime to train   {_hms(pred.time_to_train_s)}  ({fmt_num(pred.time_to_train_s)} s)")
    print(f"epochs          {pred.epochs:.4g}  ({pred.epochs_source})")
    print(f"iterations      {pred.iterations:,}  ({pred.iterations_per_epoch:,} per epoch)")
    print(f"iteration       {pred.iteration_s * 1e3:.2f} ms, {pred.images_per_s:,.0f} images/s, "
          f"scaling efficiency {pred.scaling_efficiency:.1%} vs one node")
    it = pred.iteration_s
    print("\nper iteration          ms      share")
    for key, label in (("forward_s", "forward"), ("backward_s", "backward"), ("comm_exposed_s", "exposed comm"),
                       ("optimizer_s", "optimizer"), ("io_s", "input pipeline"),
                       ("overhead_s", "executor overhead"), ("sync_wait_s", "wait for slowest")):
        if key in b:
            print(f"  {label:<16} {b[key] * 1e3:9.2f}   {b[key] / it:7.1%}")
    print(f"  {'(comm total)':<16} {b['comm_total_s'] * 1e3:9.2f}   {'hidden ' + format(1 - b['comm_exposed_s'] / b['comm_total_s'], '.0%') if b['comm_total_s'] else ''}")
    print("\nwhole run              s      share")
    for key, label in (("training_s", "training"), ("eval_s", "evaluation"), ("startup_s", "start-up")):
        print(f"  {label:<16} {rb[key]:9.1f}   {rb[key] / pred.time_to_train_s:7.1%}")
    d = pred.details
    print(f"\nmemory per rank {d['memory_per_rank_bytes'] / 2**30:.2f} GiB of {d['memory_available_bytes'] / 2**30:.2f} GiB"
          + (f"; gradient accumulation over {d['accumulation_steps']} micro-batches of {d['micro_batch']}"
             if d["accumulation_steps"] > 1 else ""))
    algs = sorted(set(d["bucket_algorithms"]))
    print(f"{d['buckets']} gradient buckets, allreduce by {', '.join(algs)}")
    return 0
