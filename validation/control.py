"""Noise-floor control of the validation loop: the error a *perfect* model would show on this host.

A prediction is compared with a run taken minutes later, and on a shared virtual machine the host's speed
drifts meanwhile (:mod:`executor.speed_probe`). The speed probe removes most of that drift, not all of it.
How much is left is measured here, with a positive control: one configuration of the matrix (the *control
point*) is run right after the calibration (the *reference* run) and again after every few points of the
matrix. The reference run stands for a model that is exactly right at calibration time: it "predicts" every
later control run as ``reference iteration x (probe now / probe at the reference run)``, the same correction
the model's predictions get. The errors of those predictions are the floor below which no model's errors can
be told apart from noise on this host, for runs of the matrix's length.

Files (resumable, like the points): ``OUT/control/reference.json`` and ``OUT/control/after-NNN.json`` (the
control run after the matrix's NNN-th point). A matrix measured in passes adds ``reference-pass-R.json`` and
``after-NNN-pass-R.json`` for pass R > 1. The references are merged like the calibration sessions (geometric
mean), and the runs at one place of the passes are combined as a point's runs are
(:func:`validation.loop.combine_runs`: the run with the median speed-normalised time), so that the floor is
that of the matrix's measurements, not of single runs.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from executor.measurement import write_json_atomic
from validation.errors import error_stats
from validation.matrix import Point

__all__ = ["CONTROL_POINT", "control_name", "control_error", "ensure_control", "load_controls", "summarise_controls"]

#: the control configuration: two ranks (so communication and the straggler wait are in it), ResNet-20 at 32
#: per rank, SGD, MPI's own allreduce with overlap; a point of the quick matrix, and like the full matrix's
#: ResNet-20 points at two ranks
CONTROL_POINT = Point("resnet20", 2, 64)


def control_name(after: int | None, pass_no: int = 1) -> str:
    """Name of the control run after the matrix's ``after``-th point in pass ``pass_no`` (1-based); with
    ``after`` None, the pass's reference run (before its first point)."""
    base = "reference" if after is None else f"after-{after:03d}"
    return base if pass_no <= 1 else f"{base}-pass-{pass_no}"


def _folder(out_dir: str | Path) -> Path:
    return Path(out_dir) / "control"


def ensure_control(out_dir: str | Path, name: str, measure: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """The control measurement ``name`` (``reference`` or ``after-NNN``) from ``OUT/control``, measured with
    ``measure()`` and stored first when it is not there yet."""
    path = _folder(out_dir) / f"{name}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass  # never half-written (atomic); a foreign file is measured again
    doc = {"name": name, **dict(measure())}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return doc


def load_controls(out_dir: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The reference run and the later control runs (in matrix order) stored in ``OUT/control``. With a
    reference run in every pass (``reference``, ``reference-pass-R``), the reference is their geometric mean
    (iteration time and speed probe), as the calibration sessions are merged
    (:func:`executor.calibrate.combine_sessions`)."""
    folder = _folder(out_dir)
    refs = []
    runs = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(f.read_text())
        except ValueError:
            continue
        if f.stem == "reference" or f.stem.startswith("reference-pass-"):
            refs.append(doc)
        elif f.stem.startswith("after-"):
            runs.append(doc)
    ref = None
    if len(refs) == 1:
        ref = refs[0]
    elif refs:
        probes = [r.get("speed_probe_s") for r in refs]
        ref = {"name": "reference", "point_id": refs[0].get("point_id"), "runs": len(refs),
               "iteration_s": statistics.geometric_mean([float(r["iteration_s"]) for r in refs]),
               "speed_probe_s": statistics.geometric_mean([float(p) for p in probes]) if all(probes) else None}
    return ref, runs


def control_error(reference: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, float | None]:
    """Percent errors of the perfect model's prediction of ``run`` from ``reference``: ``error_pct`` with the
    speed-probe correction (None without probes) and ``error_raw_pct`` without; ``100 (predicted - measured) /
    measured`` as everywhere in the report."""
    ref_s, meas_s = float(reference["iteration_s"]), float(run["iteration_s"])
    p_ref, p_run = reference.get("speed_probe_s"), run.get("speed_probe_s")
    factor = float(p_run) / float(p_ref) if p_ref and p_run else None
    return {"speed_factor": factor,
            "error_pct": 100.0 * (ref_s * factor - meas_s) / meas_s if factor else None,
            "error_raw_pct": 100.0 * (ref_s - meas_s) / meas_s}


def _grouped(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The control runs grouped by their place in the matrix (``after-NNN`` of every pass), each group
    combined as a point's runs are; in matrix order."""
    from validation.loop import combine_runs

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(str(r.get("name", "")).split("-pass-")[0], []).append(r)
    return [dict(combine_runs(g), name=name, runs=len(g)) for name, g in sorted(groups.items())]


def summarise_controls(reference: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The noise floor: count, MAPE, max and bias of the control errors, scaled and raw (None without a
    reference or any later run). Runs at the same place of several passes count once (combined)."""
    if reference is None or not runs:
        return None
    rows = []
    for r in _grouped(runs):
        e = control_error(reference, r)
        rows.append({"name": r.get("name"), "runs": r.get("runs", 1), "measured_s": r["iteration_s"], **e})
    scaled = error_stats(r["error_pct"] for r in rows if r["error_pct"] is not None)
    raw = error_stats(r["error_raw_pct"] for r in rows)
    return {"point": reference.get("point_id", CONTROL_POINT.id), "reference_s": reference["iteration_s"],
            "count": len(rows), "mape": scaled["mape"], "max_ape": scaled["max_ape"], "bias": scaled["bias"],
            "mape_raw": raw["mape"], "max_ape_raw": raw["max_ape"],
            "bias_raw": raw["bias"], "runs": rows}
