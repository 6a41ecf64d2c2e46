"""``perfmodel calibrate``: measure this machine and write the calibrated ``local`` system spec.

    perfmodel calibrate [--out FILE.toml] [--quick] [--json] [--report FILE.json] [--merge REPORT.json ...]
                        [--timeout S]

Runs ``bench compute`` (1, 2 and 4 ranks sharing the CPU) and ``bench allreduce`` (2, 3 and 4 ranks, every
algorithm) and fits the device (GEMM peak, memory bandwidth, one efficiency curve per number of ranks
sharing the CPU, a per-layer framework overhead, per-workload factors), the allreduce models (closed-form
alpha/beta/gamma per algorithm and a measured profile per rank count, MPI's own included) and the
executor's per-iteration overheads; see :mod:`executor.calibrate`. ``--quick`` measures much less (two
models, 1-2 ranks, 2-rank allreduce up to 1 MiB; well under a minute) for tests and smoke checks.

Where it writes: ``--out FILE.toml`` (and the device file ``FILE-cpu.toml`` next to it); without ``--out``,
to ``$TTT_LOCAL_SPEC`` when that is set, else ``~/.config/ttt-perfmodel/local.toml`` (honouring
``XDG_CONFIG_HOME``), which the system id ``local`` then resolves to (:mod:`hardware.catalog`). Use the
file with ``perfmodel predict --system FILE`` and ``perfmodel hardware show FILE``.

``--json`` prints the fitted parameters with their residuals (the raw benchmark documents go to
``--report``). ``--merge REPORT.json``: this host's speed drifts, and one calibration is one moment of it;
the fit is made on the sessions in the earlier reports and this one together (per measured item the
geometric mean over the sessions, :func:`executor.calibrate.combine_sessions`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from hardware.errors import ConfigError
from perfmodel.cli.output import print_json

__all__ = ["HELP", "configure", "run", "default_output"]

HELP = "measure this machine (compute, allreduce, overheads) and write a calibrated system spec"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="system spec file to write (.toml; the device file goes next "
                        "to it); default: $TTT_LOCAL_SPEC or ~/.config/ttt-perfmodel/local.toml")
    parser.add_argument("--quick", action="store_true", help="few models, sizes and rank counts (< 1 minute)")
    parser.add_argument("--timeout", type=float, default=900.0, help="time limit of each benchmark job, seconds")
    parser.add_argument("--report", default=None, help="also write the full report (raw benchmarks) as JSON")
    parser.add_argument("--merge", action="append", default=[], metavar="REPORT.json",
                        help="an earlier calibration's --report of the same plan on this host (repeatable): fit "
                             "on its sessions and this one together (geometric mean per measured item)")
    parser.add_argument("--json", action="store_true", help="print the fitted parameters as JSON")


def default_output() -> Path:
    """``$TTT_LOCAL_SPEC`` when set and not empty, else the user location of the calibrated ``local``."""
    from hardware.catalog import LOCAL_SPEC_ENV, user_local_spec_path

    env = os.environ.get(LOCAL_SPEC_ENV, "").strip()
    return Path(env).expanduser() if env else user_local_spec_path()


def _summary(report: dict[str, Any], system_file: Path, device_file: Path) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if k != "raw_sessions"}
    out["system_file"], out["device_file"] = str(system_file), str(device_file)
    return out


def _sessions_of(path: str) -> list[dict[str, Any]]:
    """The raw calibration sessions in an earlier ``--report`` file."""
    import json

    from executor.calibrate import normalise_raw

    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError("--merge", "merge", path, f"cannot read a calibration report ({exc})") from None
    sessions = doc.get("raw_sessions") if isinstance(doc, dict) else None
    if not isinstance(sessions, list) or not sessions:
        raise ConfigError("--merge", "merge", path, "no 'raw_sessions' (write it with perfmodel calibrate --report)")
    try:
        return [normalise_raw(s) for s in sessions]
    except ConfigError as exc:
        raise ConfigError("--merge", "merge", path, f"a session is not usable ({exc.reason})") from None


def run(args: argparse.Namespace) -> int:
    from executor.calibrate import FULL, QUICK, calibrate, write_spec

    out = Path(args.out).expanduser() if args.out else default_output()
    if out.suffix != ".toml":
        raise ConfigError("--out", "out", str(out), "the spec file name must end in .toml")
    if not args.timeout > 0:
        raise ConfigError("--timeout", "timeout", args.timeout, "must be > 0 seconds")
    earlier, seen = [], set()
    for path in args.merge:   # bad files fail before any measurement; a session in two reports counts once
        for sess in _sessions_of(path):
            key = (sess.get("host"), sess.get("date"))
            if key not in seen:
                seen.add(key)
                earlier.append(sess)
    say = None if args.json else (lambda msg: print(f"calibrate: {msg}", file=sys.stderr, flush=True))
    report = calibrate(QUICK if args.quick else FULL, progress=say, timeout_s=args.timeout, earlier=earlier)
    system_file, device_file = write_spec(report, out)
    if args.report:
        from executor.measurement import write_json_atomic

        write_json_atomic(args.report, report)
    summary = _summary(report, system_file, device_file)
    if args.json:
        print_json(summary)
        return 0
    d, fit, ov = report["device"], report["compute_fit"], report["overheads"]
    merged = f"; fitted on {report['sessions']} sessions" if report.get("sessions", 1) > 1 else ""
    print(f"calibrated {report['host']} ({report['plan']}, {report['elapsed_s']:.0f} s{merged})")
    print(f"  system file  {system_file}\n  device file  {device_file}")
    print(f"  GEMM peak    {d['peak_flops_fp32'] / 1e9:.1f} GFLOP/s fp32, {d['peak_flops_fp64'] / 1e9:.1f} fp64 "
          f"({report['machine']['cpu_count']} threads)")
    print(f"  memory       triad {d['memory_bw_Bps'] / 1e9:.2f} GB/s, copy {d['copy_bw_Bps'] / 1e9:.2f} GB/s; "
          f"reduction {1e-9 / d['reduce_gamma_s_per_B']:.2f} GB/s")
    print(f"  layer overhead {d['layer_overhead_s'] * 1e6:.1f} us per layer and pass")
    for k, c in sorted(d["curves"].items(), key=lambda kv: int(kv[0])):
        print(f"  efficiency with {k} rank(s) sharing: eff_max {c['eff_max']:.3f}, batch_half {c['batch_half']:.2f}")
    for k, by in sorted(d["workload_scale"].items(), key=lambda kv: int(kv[0])):
        print(f"  workload factors, {k} rank(s): " + ", ".join(f"{m} {v:.2f}" for m, v in by.items()))
    print(f"  compute fit: step rms error {fit['generic_rms_rel_err']:.1%} (max {fit['generic_max_abs_rel_err']:.1%});"
          f" with the workload factors {fit['rms_rel_err']:.1%} (max {fit['max_abs_rel_err']:.1%})")
    for alg, e in report["allreduce_fit"].items():
        cf = e.get("closed_form")
        if cf:
            print(f"  allreduce {alg:<18} alpha {cf['alpha_s'] * 1e6:8.2f} us  beta {cf['beta_s_per_B'] * 1e9:7.4f} ns/B"
                  f"  gamma {cf['gamma_s_per_B'] * 1e9:7.4f} ns/B  (rms {cf['rms_rel_err']:.1%})")
        for p, prof in sorted(e["profiles"].items(), key=lambda kv: int(kv[0])):
            print(f"  allreduce {alg:<18} p={p}: {prof['alpha_s'] * 1e6:8.2f} us + {prof['beta_s_per_B'] * 1e9:7.4f} ns/B"
                  f" x n  (rms {prof['rms_rel_err']:.1%}, max {prof['max_abs_rel_err']:.1%})")
    print(f"  overheads    step {ov['step_s'] * 1e6:.1f} us, bucketer {ov['bucketer_s'] * 1e6:.1f} us + "
          f"{ov['grad_hook_s'] * 1e6:.2f} us per layer, optimizer kernel {ov['kernel_launch_s'] * 1e6:.2f} us")
    return 0
