"""Calibration of the devices' efficiency curves on published single-node rows.

The compute model prices a layer at ``FLOP / (peak * eff(b))`` (or its memory time, whichever is larger),
with ``eff(b) = eff_max * b / (b + batch_half)`` per device and precision (:mod:`perfmodel.compute`). This
module chooses ``eff_max`` (and ``batch_half`` when two rows at different per-rank batches allow it) so
that :func:`perfmodel.predict.predict`, run with the row's own epochs, reproduces the row. The values and
their ``[sources]`` strings are written into ``hardware/data/devices/<id>.toml`` by
``scripts/calibrate_published.py``; ``--check`` verifies that the stored values still reproduce the fit.

Which row calibrates which device (:data:`CALIBRATION_PLAN`)
------------------------------------------------------------
- ``p100-sxm2`` fp32: Goyal et al. 2017, 1 Big Basin server (8 P100), batch 256, 90 epochs, 104,400 s.
- ``v100-sxm2`` fp16: MLPerf v0.6 NVIDIA 1x DGX-1, batch 1,664 (208/GPU), 56/60 epochs, 6,913.2 s.
- ``v100-sxm3`` fp16: MLPerf v0.6 NVIDIA 1x DGX-2, batch 3,328 (208/GPU), 60 epochs, 3,472.4 s.
- ``xeon-8180`` fp32: MLPerf v0.5 Intel 1 node x 2 sockets, batch 128 (4 ranks x 32), 61/62/63 epochs,
  624,126.7 s, of which about 62 x 20 min is the stated per-epoch CPU evaluation (that stated cost
  replaces the predictor's evaluation term, see :data:`validation.published.STATED_EVALUATION`).
- ``xeon-phi-7250`` fp32: no single-node KNL row exists. The only KNL measurement without I/O is Bae et
  al.'s 4-KNL data-in-memory row (316 img/s at batch 512, 4 nodes); it is used -- the one documented
  exception to "single-node rows only" -- and is excluded from the validation statistics.

Curves set by assumption from a calibrated one (:data:`DERIVED_CURVES`): ``xeon-8160`` fp32 = ``xeon-8180``
fp32 (same Skylake-SP core, AVX-512 units and memory system: the same fraction of nominal peak);
``v100-sxm2`` and ``v100-sxm3`` fp32 = ``p100-sxm2`` fp32 (no fp32 V100 row in the reference data).

``batch_half`` is identifiable only from two rows of one device at different per-rank batches. No device
has such a pair from one software generation: the DGX-1 rows share 208/GPU, and the DGX-2 pair (v0.5 at
256/GPU, v0.6 at 208/GPU) is faster per image at the *smaller* batch because the software changed, which
would need ``batch_half < 0``. So every ``batch_half`` keeps its value (an assumption, said in its source);
:func:`fit_two_rows` implements the two-row fit for when such data exist.

Multi-node rows are never used (except the KNL row above): they are what the model must predict.

Mechanics: a trial value is evaluated by writing a copy of the device file (only its efficiency lines
changed, :func:`render_device`) and of the system file (pointing at that device copy) into a temporary
directory and predicting the row on that system path -- the real loader and predictor, no shortcuts.
"""
from __future__ import annotations

import math
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from scipy.optimize import brentq

from hardware.catalog import DEVICES_DIR, SYSTEMS_DIR, load_device, load_system
from hardware.errors import SpecError, ToolkitError
from validation.published import (
    DEFAULT_FILES, PublishedRow, RowPlan, RowSelector, load_published, plan_row, predict_plan,
)

from perfmodel.atomic import atomic_write

__all__ = [
    "CalibrationTarget", "DerivedCurve", "CALIBRATION_PLAN", "DERIVED_CURVES", "CalibrationError", "FitResult",
    "calibration_rows", "render_device", "TrialCatalog", "fit_one_row", "fit_two_rows", "fit_target",
    "fit_all", "write_results", "reproduce_rows", "check", "main", "round4", "EFF_BOUNDS", "BATCH_HALF_BOUNDS",
    "CHECK_TOLERANCE_PCT",
]

#: search interval of eff_max (the catalog requires (0, 1])
EFF_BOUNDS: tuple[float, float] = (0.005, 1.0)
#: search interval of batch_half for the two-row fit (images)
BATCH_HALF_BOUNDS: tuple[float, float] = (0.0, 1024.0)
#: a calibration row must be reproduced by the stored values within this many percent
CHECK_TOLERANCE_PCT: float = 1.0


class CalibrationError(ToolkitError):
    """A calibration row cannot be reproduced within the allowed parameter range."""


@dataclass(frozen=True)
class CalibrationTarget:
    """One device curve and the published row(s) that calibrate it.

    ``exception`` is non-empty when a multi-node row is used (and says why); ``why`` says why these rows.
    """

    device: str
    precision: str
    selectors: tuple[RowSelector, ...]
    why: str
    exception: str = ""


@dataclass(frozen=True)
class DerivedCurve:
    """A curve copied from a calibrated one by a stated assumption."""

    device: str
    precision: str
    from_device: str
    from_precision: str
    assumption: str


CALIBRATION_PLAN: tuple[CalibrationTarget, ...] = (
    CalibrationTarget(
        "p100-sxm2", "fp32",
        (RowSelector("Goyal et al. 2017", "NVIDIA Tesla P100 (Big Basin server, NVLink)", 256, time_to_train_s=104400),),
        why="the only single-node timed P100 row"),
    CalibrationTarget(
        "v100-sxm2", "fp16",
        (RowSelector("MLPerf Training v0.6 (Jul 2019) - NVIDIA", "NVIDIA V100-SXM2-16GB (1x DGX-1)", 1664,
                     time_to_train_s=6913.2),),
        why="newest single-node DGX-1 submission (v0.6, NGC 19.05); the v0.5 1x DGX-1 row has the same "
            "208 images per GPU, so the pair cannot identify batch_half, and it stays a validation row"),
    CalibrationTarget(
        "v100-sxm3", "fp16",
        (RowSelector("MLPerf Training v0.6 (Jul 2019) - NVIDIA", "NVIDIA V100-SXM3-32GB (1x DGX-2)", 3328,
                     time_to_train_s=3472.4),),
        why="newest single-node DGX-2 submission (v0.6, NGC 19.05) of the catalog part V100-SXM3-32GB (not "
            "the higher-power -H); with the v0.5 1x DGX-2 row (256/GPU, NGC 18.11) batch_half would have to "
            "be negative (v0.6 is faster per image at the smaller batch: a software change), so it is kept"),
    CalibrationTarget(
        "xeon-8180", "fp32",
        (RowSelector("MLPerf Training v0.5 - intel", "Intel Xeon Platinum 8180 (1 node x 2 sockets; Intel Caffe)", 128,
                     time_to_train_s=624126.7),),
        why="the only single-node timed Xeon row"),
    CalibrationTarget(
        "xeon-phi-7250", "fp32",
        (RowSelector("Bae et al. 2019", "Intel Xeon Phi 7250 KNL testbed (data in memory, no disk I/O)", 512,
                     images_per_s=316, model="ResNet-50"),),
        why="the only KNL measurement without I/O",
        exception="no single-node KNL row exists in the reference data: this 4-node row is the only available "
                  "KNL data and is excluded from the validation statistics"),
)

DERIVED_CURVES: tuple[DerivedCurve, ...] = (
    DerivedCurve("xeon-8160", "fp32", "xeon-8180", "fp32",
                 "the same Skylake-SP microarchitecture (same core, 2 AVX-512 FMA units per core [VPU], 6 DDR4-2666 "
                 "channels [AMC]) reaches the same fraction of its nominal peak; no single-node timed 8160 row"),
    DerivedCurve("v100-sxm2", "fp32", "p100-sxm2", "fp32",
                 "the same fraction of fp32 peak as the P100; no fp32 V100 row in the reference data"),
    DerivedCurve("v100-sxm3", "fp32", "p100-sxm2", "fp32",
                 "the same fraction of fp32 peak as the P100; no fp32 V100 row in the reference data"),
)


def calibration_rows(rows: Sequence[PublishedRow] | None = None) -> list[tuple[PublishedRow, str]]:
    """(row, "device precision") for every calibration row of :data:`CALIBRATION_PLAN`."""
    rows = load_published(DEFAULT_FILES) if rows is None else rows
    return [(sel.find(rows), f"{t.device} {t.precision}") for t in CALIBRATION_PLAN for sel in t.selectors]


def round4(x: float) -> float:
    """``x`` rounded to 4 significant digits (how values are stored)."""
    return float(f"{x:.4g}")


# ==========================================================================================================
# Device files: rewrite only the efficiency lines and their sources
# ==========================================================================================================
def _num(x: float) -> str:
    """A TOML number, exactly as given (``8``, ``0.4563``); stored values are rounded by :func:`round4` first."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_device(text: str, precision: str, eff_max: float | None = None, batch_half: float | None = None,
                  sources: Mapping[str, str] | None = None) -> str:
    """``text`` of a device TOML with ``[efficiency.<precision>]`` values and their ``[sources]`` lines replaced.

    Only the lines ``eff_max = ...`` / ``batch_half_images = ...`` of that section and the source lines
    ``"efficiency.<precision>.eff_max" = ...`` / ``...batch_half_images" = ...`` change (values written
    exactly as given: trial values keep full precision, stored ones are rounded first); a missing line is a
    SpecError (this never adds fields).
    """
    want = {"eff_max": eff_max, "batch_half_images": batch_half}
    src = dict(sources or {})
    section = None
    done: set[str] = set()
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        m = re.match(r"\s*\[([^\]]+)\]\s*$", line)
        if m:
            section = m.group(1).strip()
        elif section == f"efficiency.{precision}":
            km = re.match(r"(\s*)(eff_max|batch_half_images)(\s*=\s*)([^#\n]*?)(\s*(?:#.*)?)(\n?)$", line)
            if km and want[km.group(2)] is not None:
                line = (f"{km.group(1)}{km.group(2)}{km.group(3)}{_num(want[km.group(2)])}"
                        f"{km.group(5)}{km.group(6)}")
                done.add(km.group(2))
        elif section == "sources":
            for key, citation in src.items():
                if re.match(rf'\s*"{re.escape(key)}"\s*=', line):
                    line = f'"{key}" = {_toml_str(citation)}\n'
                    done.add(key)
        out.append(line)
    for name, v in want.items():
        if v is not None and name not in done:
            raise SpecError("render_device", f"efficiency.{precision}.{name}", v, "no such line in the device file")
    for key, citation in src.items():
        if key not in done:
            raise SpecError("render_device", f'sources."{key}"', citation, "no such source line in the device file")
    new = "".join(out)
    tomllib.loads(new)  # never produce a file the loader cannot read
    return new


def _write_atomic(path: Path, text: str) -> None:
    atomic_write(path, text)


# ==========================================================================================================
# Trial specs: copies of the catalog files with trial efficiency values
# ==========================================================================================================
class TrialCatalog:
    """A temporary directory of trial device/system files (use as a context manager).

    Each call writes new files (unique names), so the loader's (path, mtime, size) cache never returns a
    stale spec.
    """

    def __enter__(self) -> "TrialCatalog":
        self._tmp = tempfile.TemporaryDirectory(prefix="perfmodel-calibrate-")
        self.dir = Path(self._tmp.name)
        self._n = 0
        return self

    def __exit__(self, *exc: Any) -> None:
        self._tmp.cleanup()

    def system_path(self, system_id: str, precision: str, eff_max: float, batch_half: float) -> str:
        """Path of a copy of catalog system ``system_id`` whose device has the trial curve at ``precision``."""
        sys_text = (SYSTEMS_DIR / f"{system_id}.toml").read_text(encoding="utf-8")
        dev_ref = tomllib.loads(sys_text)["node"]["device"]
        dev_text = (DEVICES_DIR / f"{dev_ref}.toml").read_text(encoding="utf-8")
        self._n += 1
        dev_path = self.dir / f"{dev_ref}-trial{self._n}.toml"
        dev_path.write_text(render_device(dev_text, precision, eff_max, batch_half), encoding="utf-8")
        new_sys, n = re.subn(r'(?m)^(\s*device\s*=\s*)"[^"]*"', lambda m: m.group(1) + _toml_str(str(dev_path)),
                             sys_text, count=1)
        if n != 1:
            raise SpecError(str(SYSTEMS_DIR / f"{system_id}.toml"), "node.device", None, "line not found")
        sys_path = self.dir / f"{system_id}-trial{self._n}.toml"
        sys_path.write_text(new_sys, encoding="utf-8")
        return str(sys_path)


# ==========================================================================================================
# Fits
# ==========================================================================================================
def _per_rank_batch(plan: RowPlan) -> int:
    rpn = plan.ranks_per_node or load_system(plan.system).devices_per_node
    return plan.batch // (plan.nodes * rpn)


def _log_residual(plan: RowPlan, precision: str, eff_max: float, batch_half: float, cat: TrialCatalog) -> float:
    value, _, _ = predict_plan(plan, cat.system_path(plan.system, precision, eff_max, batch_half))
    return math.log(value / plan.published)


def fit_one_row(plan: RowPlan, precision: str, batch_half: float, cat: TrialCatalog) -> float:
    """eff_max that makes the prediction of ``plan`` equal its published value (1-D root find, brentq).

    The predicted time falls (the throughput rises) monotonically with eff_max, so one sign change in
    :data:`EFF_BOUNDS` means one root; none means the row cannot be reproduced (CalibrationError).
    """
    lo, hi = EFF_BOUNDS
    r_lo = _log_residual(plan, precision, lo, batch_half, cat)
    r_hi = _log_residual(plan, precision, hi, batch_half, cat)
    if r_lo * r_hi > 0:
        what = "slower" if (r_hi > 0) == (plan.quantity == "time_to_train_s") else "faster"
        raise CalibrationError(
            f"{plan.row.row_id}: {plan.quantity} {plan.published:g} cannot be reproduced with eff_max in "
            f"[{lo}, {hi}] at batch_half {batch_half:g}: the prediction stays {what} than published "
            f"(log ratio {r_lo:+.3f} at {lo}, {r_hi:+.3f} at {hi})")
    return float(brentq(lambda e: _log_residual(plan, precision, e, batch_half, cat), lo, hi, xtol=1e-7, rtol=1e-9))


def fit_two_rows(plan_a: RowPlan, plan_b: RowPlan, precision: str, cat: TrialCatalog) -> tuple[float, float]:
    """(eff_max, batch_half) reproducing two rows of one device at different per-rank batches.

    Row A fixes ``eff(b_a)``; for each ``batch_half`` that gives ``eff_max = eff(b_a) (b_a + batch_half) / b_a``
    (kept <= 1); a brentq over ``batch_half`` then matches row B. CalibrationError when the rows are not
    consistent with the saturating curve for ``batch_half`` in :data:`BATCH_HALF_BOUNDS` (e.g. the smaller
    batch is faster per image).
    """
    b_a, b_b = _per_rank_batch(plan_a), _per_rank_batch(plan_b)
    if b_a == b_b:
        raise CalibrationError(f"{plan_a.row.row_id} and {plan_b.row.row_id}: same per-rank batch ({b_a}); "
                               "batch_half is not identifiable")
    e_a = fit_one_row(plan_a, precision, 0.0, cat)  # eff(b_a) (= eff_max at batch_half 0)
    cap = min(BATCH_HALF_BOUNDS[1], b_a * (1.0 / e_a - 1.0) * 0.999)

    def g(bh: float) -> float:
        return _log_residual(plan_b, precision, min(1.0, e_a * (b_a + bh) / b_a), bh, cat)

    g_lo, g_hi = g(BATCH_HALF_BOUNDS[0]), g(cap)
    if g_lo * g_hi > 0:
        raise CalibrationError(
            f"{plan_a.row.row_id} ({b_a}/rank) and {plan_b.row.row_id} ({b_b}/rank) are not consistent with "
            f"eff(b) = eff_max b / (b + batch_half) for batch_half in [0, {cap:.4g}] (log ratio of row B "
            f"{g_lo:+.3f} at 0, {g_hi:+.3f} at {cap:.4g})")
    bh = float(brentq(g, BATCH_HALF_BOUNDS[0], cap, xtol=1e-4))
    return fit_one_row(plan_a, precision, bh, cat), bh


@dataclass(frozen=True)
class FitResult:
    """A curve to store: rounded values (4 significant digits), what was fitted, and the source strings."""

    device: str
    precision: str
    eff_max: float
    batch_half: float
    eff_max_exact: float
    fitted: tuple[str, ...]
    rows: tuple[str, ...]
    sources: Mapping[str, str]
    derived_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision, "eff_max": self.eff_max,
                "batch_half_images": self.batch_half, "eff_max_exact": self.eff_max_exact,
                "fitted": list(self.fitted), "rows": list(self.rows), "derived_from": self.derived_from,
                "sources": dict(self.sources)}


def _row_text(plan: RowPlan) -> str:
    r = plan.row
    what = (f"{r.epochs} epochs in {r.time_to_train_s:,.1f} s" if plan.quantity == "time_to_train_s"
            else f"{r.images_per_s:g} images/s")
    return (f"{Path(r.file).name} row {r.line} ({r.paper}; {r.hardware}; {plan.nodes} node{'s' * (plan.nodes > 1)}, "
            f"batch {plan.batch:,} = {_per_rank_batch(plan)}/rank; {what})")


def fit_target(target: CalibrationTarget, rows: Sequence[PublishedRow], cat: TrialCatalog) -> FitResult:
    """Fit one :class:`CalibrationTarget` (see :func:`fit_one_row`, :func:`fit_two_rows`)."""
    plans = [plan_row(sel.find(rows)) for sel in target.selectors]
    for p in plans:
        dev = load_system(p.system).device.id
        if dev != target.device or p.precision != target.precision:
            raise SpecError("CALIBRATION_PLAN", target.device, p.row.row_id,
                            f"row maps to {dev} {p.precision}, not {target.device} {target.precision}")
        if p.nodes != 1 and not target.exception:
            raise CalibrationError(f"{p.row.row_id}: multi-node row ({p.nodes} nodes) in the calibration of "
                                   f"{target.device} without a documented exception")
    current = load_device(target.device).efficiency_for(target.precision)
    if len(plans) == 1:
        bh = current.batch_half
        e = fit_one_row(plans[0], target.precision, bh, cat)
        fitted: tuple[str, ...] = ("eff_max",)
    elif len(plans) == 2:
        e, bh = fit_two_rows(plans[0], plans[1], target.precision, cat)
        bh = round4(bh)
        e = fit_one_row(plans[0], target.precision, bh, cat)
        fitted = ("eff_max", "batch_half_images")
    else:
        raise SpecError("CALIBRATION_PLAN", target.device, len(plans), "one or two rows per curve")
    eff = round4(e)
    p0 = plans[0]
    b0 = _per_rank_batch(p0)
    eval_note = ("; the row's stated ~20 min per-epoch CPU evaluation replaces the predictor's evaluation term"
                 if p0.stated_eval_s_per_epoch is not None else "")
    rows_text = " and ".join(_row_text(p) for p in plans)
    key = f"efficiency.{target.precision}"
    sources = {
        f"{key}.eff_max": (
            f"calibrated by scripts/calibrate_published.py on {rows_text}: perfmodel.predict "
            + ("with the row's epochs" if p0.quantity == "time_to_train_s" else "(training throughput)")
            + f" reproduces it at eff({b0}) = {eff * b0 / (b0 + bh):.4g} of {target.precision} peak"
            f"{eval_note}; why this row: {target.why}"
            + (f". EXCEPTION to single-node calibration: {target.exception}" if target.exception else "")),
        f"{key}.batch_half_images": (
            f"calibrated by scripts/calibrate_published.py together with eff_max on {rows_text}"
            if "batch_half_images" in fitted else
            f"assumption: half-efficiency batch of {bh:g} images (no source found), kept by "
            f"scripts/calibrate_published.py: the calibration row cannot identify it (see {key}.eff_max)"),
    }
    return FitResult(target.device, target.precision, eff, bh, e, fitted, tuple(p.row.row_id for p in plans),
                     sources)


def _derive(d: DerivedCurve, base: FitResult) -> FitResult:
    key = f"efficiency.{d.precision}"
    return FitResult(
        d.device, d.precision, base.eff_max, base.batch_half, base.eff_max_exact, (), base.rows, {
            f"{key}.eff_max": (f"assumption: same as {d.from_device} {d.from_precision}, {d.assumption}; set by "
                               f"scripts/calibrate_published.py from the value calibrated on {', '.join(base.rows)}"),
            f"{key}.batch_half_images": (f"assumption: same as {d.from_device} {d.from_precision}; set by "
                                         f"scripts/calibrate_published.py"),
        }, derived_from=f"{d.from_device} {d.from_precision}")


def fit_all(rows: Sequence[PublishedRow] | None = None) -> list[FitResult]:
    """Fit every target of :data:`CALIBRATION_PLAN`, then the :data:`DERIVED_CURVES`."""
    rows = load_published(DEFAULT_FILES) if rows is None else rows
    results: list[FitResult] = []
    with TrialCatalog() as cat:
        for target in CALIBRATION_PLAN:
            results.append(fit_target(target, rows, cat))
    by = {(r.device, r.precision): r for r in results}
    for d in DERIVED_CURVES:
        results.append(_derive(d, by[(d.from_device, d.from_precision)]))
    return results


def write_results(results: Sequence[FitResult]) -> list[Path]:
    """Rewrite the efficiency lines and their sources in the device files; return the files changed."""
    changed = []
    for device in dict.fromkeys(r.device for r in results):
        path = DEVICES_DIR / f"{device}.toml"
        old = text = path.read_text(encoding="utf-8")
        for r in results:
            if r.device == device:
                text = render_device(text, r.precision, r.eff_max, r.batch_half, r.sources)
        if text != old:
            _write_atomic(path, text)
            changed.append(path)
    return changed


def reproduce_rows(rows: Sequence[PublishedRow] | None = None) -> list[dict[str, Any]]:
    """Each calibration row predicted with the catalog as stored: published, predicted, error_pct."""
    out = []
    for row, label in calibration_rows(rows):
        plan = plan_row(row)
        value, _, _ = predict_plan(plan)
        out.append({"row": row.row_id, "calibrates": label, "paper": row.paper, "hardware": row.hardware,
                    "nodes": plan.nodes, "quantity": plan.quantity, "published": plan.published,
                    "predicted": value, "error_pct": 100.0 * (value - plan.published) / plan.published})
    return out


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def check(rows: Sequence[PublishedRow] | None = None) -> dict[str, Any]:
    """Verify the stored catalog: values and sources equal a fresh fit, and every calibration row is
    reproduced within :data:`CHECK_TOLERANCE_PCT`. Returns ``{"ok", "problems", "rows", "results"}``."""
    rows = load_published(DEFAULT_FILES) if rows is None else rows
    results = fit_all(rows)
    problems = []
    for r in results:
        cur = load_device(r.device)
        curve = cur.efficiency_for(r.precision)
        if not _close(curve.eff_max, r.eff_max):
            problems.append(f"{r.device} {r.precision}: stored eff_max {curve.eff_max:g}, fit gives {r.eff_max:g}")
        if not _close(curve.batch_half, r.batch_half):
            problems.append(f"{r.device} {r.precision}: stored batch_half_images {curve.batch_half:g}, "
                            f"fit gives {r.batch_half:g}")
        for key, text in r.sources.items():
            if cur.sources.get(key) != text:
                problems.append(f"{r.device}: [sources] \"{key}\" is not what the calibration writes")
    rep = reproduce_rows(rows)
    for x in rep:
        if not abs(x["error_pct"]) <= CHECK_TOLERANCE_PCT:
            problems.append(f"{x['row']} ({x['calibrates']}): predicted {x['predicted']:.6g} vs published "
                            f"{x['published']:.6g} ({x['error_pct']:+.2f}% > {CHECK_TOLERANCE_PCT}%)")
    return {"ok": not problems, "problems": problems, "rows": rep, "results": [r.to_dict() for r in results]}


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/calibrate_published.py [--check] [--dry-run] [--json]``: fit, write (or verify), report."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="calibrate_published.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify that the stored values reproduce the fit (exit 1 if not); writes nothing")
    ap.add_argument("--dry-run", action="store_true", help="fit and print, but do not write the device files")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    try:
        if args.check:
            rep = check()
            if args.json:
                print(json.dumps(rep, indent=2))
            else:
                for x in rep["rows"]:
                    print(f"{x['row']:<32} {x['calibrates']:<20} published {x['published']:>12,.1f}  predicted "
                          f"{x['predicted']:>12,.1f}  {x['error_pct']:+.3f}%")
                print("OK: stored efficiency curves reproduce the calibration" if rep["ok"] else
                      "MISMATCH:\n  " + "\n  ".join(rep["problems"]))
            return 0 if rep["ok"] else 1
        before = {(d, p): load_device(d).efficiency_for(p) for d, p in
                  [(t.device, t.precision) for t in CALIBRATION_PLAN] +
                  [(d.device, d.precision) for d in DERIVED_CURVES]}
        results = fit_all()
        changed = [] if args.dry_run else write_results(results)
        if args.json:
            print(json.dumps({"results": [r.to_dict() for r in results], "changed": [str(p) for p in changed],
                              "rows": [] if args.dry_run else reproduce_rows()}, indent=2))
            return 0
        for r in results:
            old = before[(r.device, r.precision)]
            how = f"from {r.derived_from}" if r.derived_from else f"on {', '.join(r.rows)}"
            print(f"{r.device:<14} {r.precision}  eff_max {old.eff_max:<7g} -> {r.eff_max:<7g} batch_half "
                  f"{r.batch_half:g}  ({how})")
        if not args.dry_run:
            print(f"wrote {len(changed)} device file(s)")
            for x in reproduce_rows():
                print(f"  {x['row']:<32} {x['calibrates']:<20} published {x['published']:>12,.1f}  predicted "
                      f"{x['predicted']:>12,.1f}  {x['error_pct']:+.3f}%")
        return 0
    except ToolkitError as exc:
        print(f"calibrate_published.py: error: {exc}", file=sys.stderr)
        return 2
