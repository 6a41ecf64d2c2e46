"""``perfmodel simulate``: discrete-event simulation of one configuration (variance, contention, tails)."""
from __future__ import annotations

import argparse

from hardware.errors import ConfigError
from perfmodel.cli.output import fmt_num, print_json, print_table
from perfmodel.config import add_config_arguments, config_from_args
from perfmodel.sim.variability import DISTRIBUTIONS, Variability
from perfmodel.simulate import DEFAULT_ITERATIONS, NETWORK_MODELS, simulate, tail_vs_ranks

HELP = "discrete-event simulation: step-time distribution (mean, p50, p99), contention, Chrome trace"


def _ranks_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid rank list {text!r} (expected e.g. 8,64,512)") from None
    if not out:
        raise argparse.ArgumentTypeError("empty rank list")
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    g = parser.add_argument_group("simulation")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.add_argument("--trace", metavar="FILE", help="write a Chrome/Perfetto trace (open in ui.perfetto.dev)")
    g.add_argument("--seed", type=int, help="random seed (default: the config's run.seed)")
    g.add_argument("--iterations", type=int,
                   help=f"iterations to simulate (default {DEFAULT_ITERATIONS})")
    g.add_argument("--jitter-cv", type=float,
                   help="per-rank, per-iteration compute jitter: coefficient of variation (default 0)")
    g.add_argument("--jitter-dist", choices=[d for d in DISTRIBUTIONS if d != "none"],
                   help="jitter distribution (default normal)")
    g.add_argument("--straggler-prob", type=float,
                   help="probability that a rank straggles in an iteration (default 0)")
    g.add_argument("--straggler-slowdown", type=float,
                   help="compute multiplier of a straggler (default 1)")
    g.add_argument("--background-gbps", type=float,
                   help="background traffic demanded on every inter-node link, Gbit/s (default 0)")
    g.add_argument("--max-inflight-buckets", type=int,
                   help="bucket allreduces in flight at once (default 1, the analytic model's rule)")
    g.add_argument("--network", choices=NETWORK_MODELS,
                   help="flows: always simulate collectives as flows; auto: only when they can contend")
    g.add_argument("--tail-ranks", type=_ranks_list, metavar="N,N,...",
                   help="also report p50/p99 of the step time at these rank counts (weak scaling)")


_DEFAULTS = {"iterations": DEFAULT_ITERATIONS, "jitter_cv": 0.0, "jitter": None, "straggler_prob": 0.0,
             "straggler_slowdown": 1.0, "background_gbps": 0.0, "max_inflight_buckets": 1, "network": "auto"}


def _settings(args: argparse.Namespace, cfg) -> None:
    """Fill unset simulation flags from the config's [simulation] section, then the defaults."""
    sim = dict(cfg.simulation)
    if "jitter" in sim and sim["jitter"] == "none":
        sim["jitter"] = None
    for key, default in _DEFAULTS.items():
        attr = "jitter_dist" if key == "jitter" else key
        if getattr(args, attr, None) is None:
            value = sim.get(key, default)
            setattr(args, attr, int(value) if key in ("iterations", "max_inflight_buckets") else value)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    _settings(args, cfg)
    var = Variability.from_options(args.jitter_cv, args.jitter_dist, args.straggler_prob, args.straggler_slowdown,
                                   source="command line")
    if args.jitter_dist is not None and args.jitter_cv == 0:
        raise ConfigError("command line", "jitter_cv", 0.0, f"--jitter-dist {args.jitter_dist} needs --jitter-cv > 0")
    seed = cfg.seed if args.seed is None else args.seed
    kw = dict(seed=seed, iterations=args.iterations, jitter=var, background_gbps=args.background_gbps,
              max_inflight_buckets=args.max_inflight_buckets, network=args.network)
    res = simulate(cfg, trace_path=args.trace, **kw)
    tail = tail_vs_ranks(cfg, args.tail_ranks, **kw) if args.tail_ranks else None
    if args.json:
        out = res.to_dict()
        if tail is not None:
            out["tail_vs_ranks"] = tail
        print_json(out)
        return 0
    p, c, b = res.prediction, res.config, res.breakdown
    sim = res.simulation
    print(f"{c.model} on {p.system}: {c.nodes} nodes x {p.ranks_per_node} ranks = {p.ranks} ranks, global batch "
          f"{c.batch}, {c.optimizer}; {sim['iterations_simulated']} iterations simulated, seed {sim['seed']}")
    v = sim["variability"]
    print(f"variability: {v['distribution']} jitter cv {v['cv']:g}, stragglers p={v['straggler_prob']:g} "
          f"x{v['straggler_slowdown']:g}; background {sim['background_gbps']:g} Gb/s; "
          f"{sim['max_inflight_buckets']} bucket(s) in flight; network: {sim['network']['model']}")
    print(f"\niteration  mean {res.iteration_s * 1e3:.2f} ms   p50 {res.iteration_p50_s * 1e3:.2f} ms   "
          f"p99 {res.iteration_p99_s * 1e3:.2f} ms   (analytic {p.iteration_s * 1e3:.2f} ms)")
    print(f"slowest-rank factor: mean {sim['mean_max_factor']:.4f} (expected max of {p.ranks}: "
          f"{sim['expected_max_factor']:.4f})")
    print(f"time to train {fmt_num(res.time_to_train_s)} s (analytic {fmt_num(p.time_to_train_s)} s), "
          f"{res.images_per_s:,.0f} images/s, scaling efficiency {res.scaling_efficiency:.1%}")
    rows = [(label, b[key] * 1e3, p.breakdown.get(key, 0.0) * 1e3) for key, label in (
        ("forward_s", "forward"), ("backward_s", "backward"), ("comm_total_s", "comm total"),
        ("comm_exposed_s", "exposed comm"), ("optimizer_s", "optimizer"), ("io_s", "input pipeline"),
        ("sync_wait_s", "wait for slowest"))]
    print()
    print_table(rows, ["per iteration", "simulated ms", "analytic ms"])
    if tail is not None:
        print("\ntail vs ranks (weak scaling)")
        print_table([(t["ranks"], t["iteration_s"] * 1e3, t["iteration_p50_s"] * 1e3, t["iteration_p99_s"] * 1e3,
                      t["analytic_iteration_s"] * 1e3, t["expected_max_factor"]) for t in tail],
                    ["ranks", "mean ms", "p50 ms", "p99 ms", "analytic ms", "E[max factor]"])
    if args.trace:
        print(f"\ntrace written to {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    return 0
