"""``perfmodel run``: execute the run configuration for real (MPI + PyTorch) and write a measurement."""
from __future__ import annotations

import argparse

from perfmodel.cli.output import print_json
from perfmodel.config import add_config_arguments, config_from_args

HELP = "run the configuration for real with MPI + PyTorch and measure it"


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--ranks", type=int, required=True, help="number of ranks (processes)")
    parser.add_argument("--iterations", type=int, help="measured iterations (default: the config's run.iterations)")
    parser.add_argument("--warmup-iterations", type=int, help="warm-up iterations, recorded and excluded")
    parser.add_argument("--out", help="measurement file (JSON, written atomically)")
    parser.add_argument("--trace", metavar="DIR", help="write one Chrome trace per rank into DIR")
    parser.add_argument("--data", help="synthetic (default), digits (bundled real data) or an ImageNet-style folder")
    parser.add_argument("--micro-batch", type=int, help="per-rank micro-batch (gradient accumulation)")
    parser.add_argument("--backend", choices=("mpi", "torch"), default="mpi",
                        help="mpi: mpi4py with the toolkit's algorithms or MPI's own (default); torch: "
                             "torch.distributed (gloo on CPU, nccl on GPU)")
    parser.add_argument("--launcher", choices=("mpiexec", "srun", "none"),
                        help="default: none for one rank, mpiexec otherwise")
    parser.add_argument("--hostfile", help="MPICH hydra host file (lines host:slots) for multi-host runs")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill the job after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the measurement summary as JSON")


def run(args: argparse.Namespace) -> int:
    from executor.launch import launch  # the executor is only imported by the commands that run things

    cfg = config_from_args(args)
    if args.data:
        cfg = cfg.replace(data=args.data)
    if args.micro_batch is not None and args.micro_batch < 1:
        from hardware.errors import ConfigError
        raise ConfigError("--micro-batch", "micro_batch", args.micro_batch, "must be >= 1")
    m = launch(cfg, args.ranks, iterations=args.iterations, warmup_iterations=args.warmup_iterations,
               out=args.out, trace_dir=args.trace, backend=args.backend, launcher=args.launcher,
               hostfile=args.hostfile, timeout_s=args.timeout,
               extra={"micro_batch": args.micro_batch} if args.micro_batch else None)
    summary = {k: m.get(k) for k in ("config_hash", "ranks", "per_rank_batch", "iteration_s", "iteration_p50_s",
                                     "iteration_p99_s", "iteration_std_s", "images_per_s", "measured_iterations",
                                     "breakdown", "allreduce_algorithm", "backend", "cores_per_rank")}
    summary["out"] = args.out
    if args.json:
        print_json(summary)
        return 0
    c = m["config"]
    print(f"{c['model']} x {m['ranks']} ranks ({m['per_rank_batch']} images per rank, {m.get('cores_per_rank')} "
          f"cores per rank), {c['optimizer']}, allreduce {m.get('allreduce_algorithm') or '-'} ({m['backend']})")
    b = m["breakdown"]
    print(f"iteration {m['iteration_s'] * 1e3:.1f} ms (p50 {m['iteration_p50_s'] * 1e3:.1f}, p99 "
          f"{m['iteration_p99_s'] * 1e3:.1f}), {m['images_per_s']:.1f} images/s over {m['measured_iterations']} "
          f"iterations")
    for key in ("forward_s", "backward_s", "comm_exposed_s", "comm_total_s", "optimizer_s", "io_s"):
        print(f"  {key[:-2]:<14} {b[key] * 1e3:9.2f} ms")
    if args.out:
        print(f"measurement written to {args.out}")
    return 0
