"""``perfmodel validate`` (measured mode): the whole closed loop on this machine, as one resumable job.

1. Calibrate once: ``perfmodel calibrate`` writes ``OUT/calibration/local.toml`` (reused when present).
2. The validation matrix (:mod:`validation.matrix`): per point, analytic prediction and simulation on the
   calibrated spec, then the real run, then the errors (:mod:`validation.loop`). Between the points, the
   noise-floor control (:mod:`validation.control`): the error a perfect model would show on this host.
3. Time to accuracy on the bundled digits (:mod:`validation.tta`), predicted leave-one-out.
4. Predictions against published results (:mod:`validation.published`).
5. The report (:mod:`validation.report`): ``OUT/report.md`` and ``OUT/report.html``; the summary in
   ``OUT/summary.json``.

Every step writes its results as files, so a second call with the same ``OUT`` only does what is missing.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from executor.measurement import write_json_atomic
from hardware.errors import ConfigError, ToolkitError
from validation.loop import load_points, run_matrix
from validation.matrix import MATRICES

__all__ = ["validate_measured", "QUICK_TTA_BATCHES", "FULL_TTA_BATCHES"]

QUICK_TTA_BATCHES = (32, 64, 128, 256)
FULL_TTA_BATCHES = (32, 64, 128, 256, 512)


def reusable_calibration(spec: Path) -> str | None:
    """Why the calibrated spec in an output folder cannot be reused (None: it can). A spec written by an
    older toolkit lacks the host speed probe references that the comparison needs, and one that does not
    load (changed schema, edited by hand) is measured again rather than trusted."""
    from hardware.catalog import load_system

    try:
        cal = load_system(spec).calibration
    except ToolkitError as exc:
        return f"it does not load ({exc})"
    if cal is None or not cal.speed_probe_s:
        return "it has no host speed probe references (written by an older toolkit)"
    return None


def _calibrate(out: Path, quick: bool, say: Callable[[str], None]) -> Path:
    spec = out / "calibration" / "local.toml"
    if spec.exists():
        why = reusable_calibration(spec)
        if why is None:
            say(f"calibration: reusing {spec}")
            return spec
        say(f"calibration: not reusing {spec}: {why}")
    from executor.calibrate import FULL, QUICK, calibrate, write_spec

    say("calibration: measuring this machine (compute, allreduce, overheads)")
    report = calibrate(QUICK if quick else FULL, progress=lambda m: say(f"calibration: {m}"))
    write_json_atomic(out / "calibration" / "report.json", {k: v for k, v in report.items() if k != "raw"})
    system_file, _ = write_spec(report, spec)
    return system_file


def load_emulated(path: str | os.PathLike) -> dict[str, Any]:
    """The results of ``benchmarks/bench_emulated.py --out FILE`` (``summary`` and ``results``); a file that is
    not such a document is a :class:`ConfigError` naming it."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("--emulated", "emulated", str(path), f"cannot read it as JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list) or not isinstance(doc.get("summary"), dict):
        raise ConfigError("--emulated", "emulated", str(path),
                          "not a bench_emulated result (expected 'summary' and 'results')")
    return doc


def validate_measured(out_dir: str | os.PathLike, *, quick: bool = False, repeats: int | None = None,
                      say: Callable[[str], None] | None = None, published: bool = True,
                      emulated: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the closed loop into ``out_dir`` and return the summary (contract keys: ``configs``,
    ``mape_iteration``, ``max_ape_iteration``, ``report``). ``emulated``: a ``bench_emulated`` result file
    to include in the report (copied to ``out_dir/emulated.json``, which later runs reuse)."""
    out = Path(out_dir).expanduser().resolve()
    emu = load_emulated(emulated) if emulated is not None else None  # bad file: fail before any work
    out.mkdir(parents=True, exist_ok=True)
    if emu is not None:
        write_json_atomic(out / "emulated.json", emu)
    elif (out / "emulated.json").is_file():
        emu = load_emulated(out / "emulated.json")
    say = say or (lambda msg: print(f"validate: {msg}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    system = str(_calibrate(out, quick, say))
    name = "quick" if quick else "full"
    points = MATRICES[name]()
    reps = repeats if repeats is not None else (1 if quick else 2)

    def progress(i: int, n: int, label: str) -> None:
        if i < n:
            say(f"[{i + 1}/{n}] {label}")

    from validation.control import CONTROL_POINT

    summary = run_matrix(points, out, system=system, repeats=reps, progress=progress, control=CONTROL_POINT,
                         control_every=2 if quick else 4)
    from validation.tta import run_tta

    say("time to accuracy on the bundled digits")
    tta = run_tta(out, batches=QUICK_TTA_BATCHES if quick else FULL_TTA_BATCHES, system=system,
                  progress=lambda i, n, label: say(f"[{i + 1}/{n}] {label}"))
    summary["time_to_accuracy"] = tta
    if published:
        from validation.published import validate_published

        say("predictions against published results")
        summary["published"] = validate_published()
    if emu is not None:
        summary["emulated"] = emu
    wanted = {p.id for p in points}
    results = [r for r in load_points(out) if r["id"] in wanted]
    from validation.report import write_report

    paths = write_report(out, results, summary)
    summary.update({"matrix": name, "repeats": reps, "system_spec": system, "report": paths["html"],
                    "report_markdown": paths["markdown"], "out": str(out),
                    "wall_s": time.perf_counter() - start})
    write_json_atomic(out / "summary.json", summary)
    return summary
