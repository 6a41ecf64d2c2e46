"""Entry point of the ``perfmodel`` command: ``main(argv) -> int``.

Toolkit errors (bad input, infeasible configurations) print one line ``perfmodel: error: ...`` on stderr
and return 2; an unexpected exception prints one line too (``--debug`` shows the traceback) and returns 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from hardware.errors import ToolkitError

__all__ = ["main", "console_entry", "SUBCOMMANDS"]

#: subcommand name -> module implementing it (imported lazily, so e.g. torch is only loaded when needed)
SUBCOMMANDS: dict[str, str] = {
    "tour": "perfmodel.cli.tour_cmd",
    "hardware": "perfmodel.cli.hardware_cmd",
    "workload": "perfmodel.cli.workload_cmd",
    "predict": "perfmodel.cli.predict_cmd",
    "simulate": "perfmodel.cli.simulate_cmd",
    "sweep": "perfmodel.cli.sweep_cmd",
    "plan": "perfmodel.cli.plan_cmd",
    "validate": "perfmodel.cli.validate_cmd",
    "run": "perfmodel.cli.run_cmd",
    "bench": "perfmodel.cli.bench_cmd",
    "calibrate": "perfmodel.cli.calibrate_cmd",
    "cluster": "perfmodel.cli.cluster_cmd",
}


class _Parser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one line and exit code 2, like every other input error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise ToolkitError(f"{self.prog}: {message}")


#: one-line help of each subcommand, so that ``perfmodel --help`` imports no subcommand module
SUMMARIES: dict[str, str] = {
    "tour": "tour of the hardware catalog and workload tables with single-device compute predictions",
    "hardware": "list and show device and system specs",
    "workload": "list, show and extract per-layer workload tables",
    "predict": "analytic prediction of time to train, with the per-iteration breakdown",
    "simulate": "discrete-event simulation: step-time distribution, contention, stragglers, traces",
    "sweep": "evaluate a grid of configurations (nodes x batch x optimizer x algorithm x system)",
    "plan": "cheapest configuration meeting a deadline, fastest within a budget, Pareto front",
    "validate": "predictions against measurements and published results",
    "run": "run the configuration for real with MPI + PyTorch and measure it",
    "bench": "microbenchmarks: allreduce latency/bandwidth per algorithm, per-layer compute, GEMM, memory",
    "calibrate": "measure this machine (compute, allreduce, overheads) and write a calibrated system spec",
    "cluster": "emulated cluster on this machine (network namespaces, shaped links) for runs across hosts",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that subcommand's module is imported and configured (the others
    are listed with their one-line summaries), which keeps start-up fast."""
    parser = _Parser(prog="perfmodel", description="Predict, explain and measure time to train.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=SUMMARIES.get(name, ""))
            continue
        module = importlib.import_module(modname)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first token that is one), or None."""
    for tok in argv:
        if tok in SUBCOMMANDS:
            return tok
        if not tok.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser(only=_chosen(argv) or "")
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except ToolkitError as exc:
        print(f"perfmodel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perfmodel: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if debug:
            raise
        print(f"perfmodel: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


def console_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
