"""``perfmodel validate`` (measured mode): the whole closed loop on this machine, as one resumable job.

1. Calibrate: the benchmarks of ``perfmodel calibrate``, as sessions spread over the matrix's passes (one
   for the quick matrix, one before each of the full one's three passes: :data:`CALIBRATION_SESSIONS`),
   merged into one spec, ``OUT/calibration/local.toml``.
2. The validation matrix (:mod:`validation.matrix`): the real runs, one per point in each pass over the
   matrix (:data:`DEFAULT_REPEATS`); after the last, per point the analytic prediction and simulation on the
   calibrated spec, and the errors (:mod:`validation.loop`).
   Between the points, the noise-floor control (:mod:`validation.control`): the error a perfect model would
   show on this host.
3. Time to accuracy on the bundled digits (:mod:`validation.tta`), predicted leave-one-out.
4. Predictions against published results (:mod:`validation.published`).
5. The report (:mod:`validation.report`): ``OUT/report.md`` and ``OUT/report.html``; the summary in
   ``OUT/summary.json``.

Every step writes its results as files, so a second call with the same ``OUT`` measures only what is missing
(it predicts every point again, and refits the spec where sessions were added).
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

__all__ = ["validate_measured", "QUICK_TTA_BATCHES", "FULL_TTA_BATCHES", "CALIBRATION_SESSIONS", "DEFAULT_REPEATS",
           "SessionCalibration", "session_starts"]

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


#: calibration sessions per matrix, spread over its passes (:func:`validation.loop.run_matrix`; the full
#: matrix: one before each of its three passes), predicting from all of them merged
#: (:func:`executor.calibrate.combine_sessions`): one session is one moment of this host's drifting speed,
#: and its error would bias every prediction alike. Never more sessions than passes.
CALIBRATION_SESSIONS = {"quick": 1, "full": 3}

#: runs per point (each in its own pass over the matrix) unless ``--repeats`` says otherwise
DEFAULT_REPEATS = {"quick": 1, "full": 3}


def session_starts(passes: int, sessions: int) -> list[int]:
    """Index of the pass before which each calibration session is measured (the first: 0)."""
    return [round(j * passes / sessions) for j in range(sessions)]


class SessionCalibration:
    """The loop's calibration: sessions stored as ``OUT/calibration/session-J.json`` (raw measurements), and
    the spec ``OUT/calibration/local.toml`` fitted to every session measured so far (reused when it already
    is). Sessions already stored are not measured again."""

    def __init__(self, out: Path, quick: bool, say: Callable[[str], None], sessions: int = 1):
        from executor.calibrate import FULL, QUICK

        self.folder, self.plan, self.say, self.sessions = out / "calibration", QUICK if quick else FULL, say, sessions
        self.spec = self.folder / "local.toml"

    def _raw(self, j: int) -> dict[str, Any] | None:
        path = self.folder / f"session-{j}.json"
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            from executor.calibrate import normalise_raw

            normalise_raw(doc)
        except (ValueError, ToolkitError) as exc:
            self.say(f"calibration: not reusing {path}: {exc}")
            return None
        return doc if doc.get("plan", self.plan.name) == self.plan.name else None

    def ensure(self, j: int, before_pass: int | None = None) -> Path:
        """Sessions 1..``j`` measured (a missing one now, recorded as measured before pass index
        ``before_pass`` of the matrix), and the spec fitted to them (or to more: a resumed run keeps the fit to every
        session it has); returns the spec's path."""
        from executor.calibrate import fit_calibration, measure_calibration, write_spec

        raws = []
        for i in range(1, j + 1):
            raw = self._raw(i)
            if raw is None:
                self.say(f"calibration session {i}/{self.sessions}: measuring this machine "
                         "(compute, allreduce, overheads)")
                raw = measure_calibration(self.plan, progress=lambda m, i=i: self.say(f"calibration {i}: {m}"))
                raw["before_pass"] = before_pass if i == j else None
                write_json_atomic(self.folder / f"session-{i}.json", raw)
            raws.append(raw)
        dates = [str(r.get("date")) for r in raws]
        fitted = self.fitted_dates()
        if fitted is not None and fitted[:len(dates)] == dates and reusable_calibration(self.spec) is None:
            return self.spec
        self.say(f"calibration: fitting the spec to {j} session(s)")
        report = fit_calibration(self.plan, raws, progress=lambda m: self.say(f"calibration: {m}"))
        write_spec(report, self.spec)
        # the report names the sessions fitted: written last, so that it never claims a spec not yet written
        write_json_atomic(self.folder / "report.json", {k: v for k, v in report.items() if k != "raw_sessions"})
        return self.spec

    def fitted_dates(self) -> list[str] | None:
        """Dates of the sessions the spec is fitted to (None: no complete fit)."""
        try:
            dates = json.loads((self.folder / "report.json").read_text()).get("session_dates")
        except (OSError, ValueError, AttributeError):
            return None
        return dates if isinstance(dates, list) and self.spec.exists() else None

    def factors(self) -> dict[str, Any]:
        """The fitted per-rank-count EMPIRICAL factors: ``loop_compute`` (the executor-loop compute factor)
        and ``step_tail`` (mean over typical step), each ``{"2": 1.1, ...}``; empty when not measured or
        nothing is fitted yet; with a loop factor also ``loop_reference`` (``model``, ``per_rank_batch``); with a
        compute fit ``compute_fit``, its relative step errors without and with the per-workload factors."""
        try:
            rep = json.loads((self.folder / "report.json").read_text())
            found = {"loop_compute": rep.get("loop_compute", {}).get("scale", {}),
                     "step_tail": rep.get("step_tail", {})}
            rows = rep.get("loop_compute", {}).get("rows") or []
        except (OSError, ValueError, AttributeError):
            return {"loop_compute": {}, "step_tail": {}}
        out: dict[str, Any] = {k: ({str(r): float(v) for r, v in d.items()} if isinstance(d, dict) else {})
                               for k, d in found.items()}
        if rows and isinstance(rows[0], dict) and "model" in rows[0]:
            out["loop_reference"] = {"model": str(rows[0]["model"]), "per_rank_batch": int(rows[0]["batch"])}
        fit = rep.get("compute_fit") or {}
        if isinstance(fit, dict) and "generic_rms_rel_err" in fit:   # the compute model's fit to the benchmark
            out["compute_fit"] = {k: float(fit[k]) for k in ("generic_rms_rel_err", "generic_max_abs_rel_err",
                                                             "rms_rel_err", "max_abs_rel_err") if k in fit}
        return out

    def measured_before(self) -> list[int | None]:
        """Per stored session, the pass index it was measured before (None: not recorded)."""
        out = []
        for i in range(1, self.sessions + 1):
            raw = self._raw(i)
            if raw is None:
                break
            out.append(raw.get("before_pass"))
        return out


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
    name = "quick" if quick else "full"
    reps = repeats if repeats is not None else DEFAULT_REPEATS[name]
    cal = SessionCalibration(out, quick, say, min(CALIBRATION_SESSIONS[name], reps))
    system = str(cal.ensure(1, before_pass=0))
    points = MATRICES[name]()
    starts = session_starts(reps, cal.sessions)

    def before_pass(r: int, n: int) -> None:
        for j, at in enumerate(starts, start=1):
            if at == r:
                cal.ensure(j, before_pass=r)

    def progress(i: int, n: int, label: str) -> None:
        if i < n:
            say(f"[{i + 1}/{n}] {label}")

    from validation.control import CONTROL_POINT

    summary = run_matrix(points, out, system=system, repeats=reps, progress=progress, control=CONTROL_POINT,
                         control_every=2 if quick else 8, before_pass=before_pass)
    dates = cal.fitted_dates() or []
    summary["calibration"] = {"sessions": len(dates), "dates": dates, "before_passes": cal.measured_before(),
                              **cal.factors()}
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
