#!/usr/bin/env python3
"""Re-fit the ResNet-50 convergence model from the published results and rewrite its parameter file.

    python scripts/fit_convergence.py [--csv perfmodel/data/published_results.csv]
                                      [--out perfmodel/data/convergence.toml] [--check]

Reads the package's copy of the published results, selects the ResNet-50 convergence facts (rows with a
global batch, epochs and top-1), assigns each to an optimizer family or excludes it with a reason, fits
:func:`perfmodel.convergence.fit_convergence` per family and writes ``convergence.toml`` with the
parameters, the residuals and every row used or excluded. ``--check`` re-fits and compares with the
existing file instead of writing it (exit 1 on a mismatch).

Row selection (each rule names its reason in the TOML's ``excluded`` list):
- Only models whose name starts with ``ResNet-50`` and rows that report a top-1 accuracy.
- Method variants are excluded: Goyal's no-warmup and constant-warmup runs, learning-rate-rule and
  BN-init ablations, Collapsed-Ensemble / cyclic "collapse" schedules (a schedule, see
  ``collapsed_ensemble_epochs``), RMSprop warm-up (Akiba), batch-size control (Mikami), SP-NGD (an
  improved K-FAC follow-up), and the Bae et al. I/O study (an untuned LARS run, 2.4 points below You et
  al. at the same batch and epochs).
- ``epochs`` of several runs (``"72/76"``, MLPerf: distinct epoch counts at which runs reached the target)
  enter as their mean; ranges (``"90-120"``) and sums (``"85+5"``) are not used.
- Osawa et al.'s "75 % in 35 epochs for batches under 16,384" enters at batch 16,384 (its upper end).
- chainerkfac's ResNet-50-D table enters as "epochs to 75 %" (PAPERS.md §4), i.e. with top-1 = 75.0: its
  final accuracies (75.0-76.9) are lifted by the ResNet-50-D stem and mixup, which ResNet-50 lacks.
- All the Goyal et al. sweep points quoted in PAPERS.md §1 (76.3-76.5 to 8k, 75.2/72.5/66.0 at 16k/32k/64k)
  are rows of the CSV, so no extra data points are needed.

Fits: ``sgd`` fits all four parameters (its rows span 66-76.5 % and identify the ceiling); ``lars`` and
``kfac`` inherit ``a_max`` and ``k`` from ``sgd`` (their rows are censored at their targets) and fit
``e0_epochs`` and ``b_crit``. Residuals are in top-1 points; ``a_ref = 75.0`` for all three.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perfmodel.convergence import (  # noqa: E402
    CONVERGENCE_TOML, PUBLISHED_CSV, ConvergenceParams, ConvergenceRecord, convergence_residuals,
    fit_convergence, load_convergence,
)

__all__ = ["MODEL", "A_REF", "REFERENCE_TOP1", "FIT_PLAN", "UsedRow", "ExcludedRow", "FitResult",
           "parse_epochs", "select_rows", "fit_all", "render_toml", "main"]

MODEL = "resnet50"
#: reference accuracy anchoring e0 (percent)
A_REF = 75.0
#: default target of a run that names neither epochs nor a target: MLPerf Training v0.6's 75.9 %
REFERENCE_TOP1 = 75.9
#: (optimizer, family whose a_max and k it inherits or None)
FIT_PLAN: tuple[tuple[str, str | None], ...] = (("sgd", None), ("lars", "sgd"), ("kfac", "sgd"))
#: accuracy the chainerkfac ResNet-50-D table is taken to certify (PAPERS.md §4: "to ~75%")
RESNET50D_TOP1 = 75.0

#: (substring of the optimizer text, lower case) -> reason for excluding the row
_METHOD_VARIANTS: tuple[tuple[str, str], ...] = (
    ("no warmup", "method variant: no warmup (Goyal Table 1 ablation)"),
    ("constant warmup", "method variant: constant warmup (Goyal Table 1 ablation)"),
    ("reference lr", "learning-rate-rule ablation (Goyal Table 2a), not linear scaling + gradual warmup"),
    ("bn gamma", "BN gamma-init ablation (Goyal Table 2b)"),
    ("collapse", "Collapsed Ensemble / cyclic collapse schedule: a schedule, see collapsed_ensemble_epochs"),
    ("rmsprop", "different optimizer: RMSprop warm-up then momentum SGD with slow-start schedule (Akiba)"),
    ("batch-size control", "batch changes during training (batch-size control)"),
    ("sp-ngd", "SP-NGD: improved K-FAC follow-up (different method from Osawa et al. 2018's K-FAC)"),
)
#: (paper prefix) -> reason for excluding its rows
_PAPER_EXCLUSIONS: tuple[tuple[str, str], ...] = (
    ("Bae et al.", "I/O study with an untuned LARS run: 73.0 % at 32k/90 epochs vs 75.4 % for You et al. "
                   "at the same batch and epochs (outlier)"),
)


@dataclass(frozen=True)
class UsedRow:
    """A CSV row entering a fit, with the values actually used."""

    optimizer: str
    line: int
    paper: str
    model: str
    hardware: str
    batch: float
    epochs_raw: str
    epochs: float
    top1_raw: float
    top1: float
    note: str

    @property
    def record(self) -> ConvergenceRecord:
        return ConvergenceRecord(batch=self.batch, epochs=self.epochs, top1=self.top1)


@dataclass(frozen=True)
class ExcludedRow:
    """A ResNet-50 CSV row with a top-1 accuracy that no fit uses, and why."""

    line: int
    paper: str
    model: str
    batch_raw: str
    epochs_raw: str
    top1_raw: str
    reason: str


@dataclass(frozen=True)
class FitResult:
    """Everything the TOML records."""

    params: dict          # optimizer -> ConvergenceParams
    rows: dict            # optimizer -> list[UsedRow]
    excluded: list        # list[ExcludedRow]
    diagnostics: dict     # optimizer -> convergence_residuals(...)
    csv_sha256: str


def parse_epochs(text: str) -> float | None:
    """``"90"`` -> 90; ``"72/76"`` -> 74 (mean of the runs' epoch counts); ranges and sums -> None."""
    text = (text or "").strip()
    if not text or "-" in text or "+" in text:
        return None
    try:
        values = [float(x) for x in text.split("/")]
    except ValueError:
        return None
    return sum(values) / len(values)


def _parse_batch(text: str) -> tuple[float | None, str]:
    text = (text or "").strip()
    if text.startswith("<="):
        num = text[2:].split()[0]
        try:
            return float(num), f"batch '{text}' used at its upper end {float(num):g}"
        except ValueError:
            return None, ""
    try:
        return float(text), ""
    except ValueError:
        return None, ""


def _family(opt_text: str) -> str | None:
    low = opt_text.lower()
    if "k-fac" in low or "kfac" in low:
        return "kfac"
    if "lars" in low:
        return "lars"
    if "sgd" in low:
        return "sgd"
    return None


def select_rows(csv_path: Path | str = PUBLISHED_CSV) -> tuple[dict[str, list[UsedRow]], list[ExcludedRow]]:
    """Classify every ResNet-50 row with a top-1 accuracy: used by a family's fit, or excluded (with why)."""
    rows: dict[str, list[UsedRow]] = {opt: [] for opt, _ in FIT_PLAN}
    excluded: list[ExcludedRow] = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for line, r in enumerate(csv.DictReader(fh), start=2):
            model, top1_text = r["model"].strip(), r["top1"].strip()
            if not model.startswith("ResNet-50") or not top1_text:
                continue
            opt_text, paper = r["optimizer"], r["paper"].strip()

            def drop(reason: str) -> None:
                excluded.append(ExcludedRow(line, paper, model, r["global_batch"].strip(), r["epochs"].strip(),
                                            top1_text, reason))

            low = opt_text.lower()
            reason = next((why for key, why in _METHOD_VARIANTS if key in low), None) \
                or next((why for pre, why in _PAPER_EXCLUSIONS if paper.startswith(pre)), None)
            if reason:
                drop(reason)
                continue
            batch, batch_note = _parse_batch(r["global_batch"])
            epochs = parse_epochs(r["epochs"])
            family = _family(opt_text)
            if batch is None:
                drop("no single global batch")
                continue
            if epochs is None:
                drop("no epoch count" if not r["epochs"].strip() else f"epochs '{r['epochs'].strip()}' is not a count")
                continue
            if family is None:
                drop(f"optimizer '{opt_text}' is not one of sgd/lars/kfac")
                continue
            top1, notes = float(top1_text), [batch_note] if batch_note else []
            if "/" in r["epochs"]:
                notes.append(f"epochs '{r['epochs'].strip()}' (several runs) used as their mean")
            if model.startswith("ResNet-50-D"):
                if family != "kfac":
                    drop("ResNet-50-D outside the chainerkfac K-FAC table")
                    continue
                top1 = RESNET50D_TOP1
                notes.append(f"ResNet-50-D table used as epochs to {RESNET50D_TOP1}% (PAPERS.md section 4)")
            rows[family].append(UsedRow(family, line, paper, model, r["hardware"].strip(), batch,
                                        r["epochs"].strip(), epochs, float(top1_text), top1, "; ".join(notes)))
    return rows, excluded


def fit_all(csv_path: Path | str = PUBLISHED_CSV) -> FitResult:
    """Select the rows and fit every family of :data:`FIT_PLAN` (deterministic)."""
    rows, excluded = select_rows(csv_path)
    params: dict[str, ConvergenceParams] = {}
    diagnostics = {}
    for opt, inherit in FIT_PLAN:
        fixed = {"a_max": params[inherit].a_max, "k": params[inherit].k} if inherit else None
        records = [u.record for u in rows[opt]]
        params[opt] = fit_convergence(records, a_ref=A_REF, fixed=fixed, model=MODEL, optimizer=opt)
        diagnostics[opt] = convergence_residuals(params[opt], records)
    digest = hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
    return FitResult(params, rows, excluded, diagnostics, digest)


# ---- TOML output ---------------------------------------------------------------------------------------
def _s(text: str) -> str:
    return json.dumps(str(text), ensure_ascii=True)


def _f(value: float, digits: int = 10) -> str:
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    out = f"{value:.{digits}g}"
    return out if any(c in out for c in ".en") else out + ".0"


def render_toml(result: FitResult) -> str:
    """The parameter file's text (human-readable; parameters with 10 significant digits)."""
    out = [
        "# Convergence model of ResNet-50 on ImageNet-1k: epochs to a target top-1 vs global batch and optimizer.",
        "# GENERATED by scripts/fit_convergence.py from published_results.csv (this directory): do not edit;",
        "# re-run the script after changing the CSV. Form (perfmodel/convergence.py):",
        "#   epochs(B, t) = e0_epochs * ((a_max_top1 - a_ref_top1) / (a_max_top1 - t)) ** k * (1 + B / b_crit_images)",
        "# t and *_top1 in percent top-1, B in images. residual_top1 = top1_at(B, epochs_used) - top1_used (points);",
        "# pred_epochs = epochs_to_target(B, top1_used).",
        "",
        "[meta]",
        f"generator = {_s('scripts/fit_convergence.py')}",
        f"csv = {_s('published_results.csv')}",
        f"csv_sha256 = {_s(result.csv_sha256)}",
        f"epochs_parse = {_s('several runs (a/b/c): mean; ranges and sums: not used')}",
        f"residual = {_s('top-1 points: top1_at(batch, epochs) - top1 (least squares, scipy.optimize.least_squares)')}",
        "",
        f"[{MODEL}]",
        f"dataset = {_s('imagenet')}",
        f"optimizers = [{', '.join(_s(o) for o, _ in FIT_PLAN)}]",
        f"a_ref_top1 = {_f(A_REF)}",
        f"reference_top1 = {_f(REFERENCE_TOP1)}  # default target: MLPerf Training v0.6",
    ]
    for opt, inherit in FIT_PLAN:
        p, d = result.params[opt], result.diagnostics[opt]
        fitted = ["e0_epochs", "b_crit_images"] if inherit else ["e0_epochs", "a_max_top1", "k", "b_crit_images"]
        out += [
            "",
            f"[{MODEL}.{opt}]",
            f"e0_epochs = {_f(p.e0_epochs)}  # epochs to a_ref_top1 at a small batch",
            f"a_ref_top1 = {_f(p.a_ref)}",
            f"a_max_top1 = {_f(p.a_max)}  # ceiling" + (f" (inherited from {inherit})" if inherit else ""),
            f"k = {_f(p.k)}" + (f"  # inherited from {inherit}" if inherit else ""),
            f"b_crit_images = {_f(p.b_crit)}  # critical batch",
            f"fitted = [{', '.join(_s(x) for x in fitted)}]",
            f"shape_from = {_s(inherit or opt)}",
            f"n_rows = {len(result.rows[opt])}",
            f"rmse_top1 = {_f(d['rmse_top1'], 4)}",
            f"max_abs_residual_top1 = {_f(d['max_abs_top1'], 4)}",
            f"rmse_epochs_rel = {_f(d['rmse_epochs_rel'], 4)}  # RMS of log(pred_epochs / epochs_used)",
        ]
        for u, res, pe in zip(result.rows[opt], d["residual_top1"], d["pred_epochs"]):
            out += [
                "",
                f"[[{MODEL}.{opt}.rows]]",
                f"paper = {_s(u.paper)}",
                f"model = {_s(u.model)}",
                f"hardware = {_s(u.hardware)}",
                f"csv_line = {u.line}",
                f"batch = {_f(u.batch)}",
                f"epochs = {_s(u.epochs_raw)}",
                f"epochs_used = {_f(u.epochs, 6)}",
                f"top1 = {_f(u.top1_raw, 6)}",
                f"top1_used = {_f(u.top1, 6)}",
                f"residual_top1 = {_f(res, 3)}",
                f"pred_epochs = {_f(pe, 4)}",
            ]
            if u.note:
                out.append(f"note = {_s(u.note)}")
    for x in result.excluded:
        out += [
            "",
            f"[[{MODEL}.excluded]]",
            f"paper = {_s(x.paper)}",
            f"model = {_s(x.model)}",
            f"csv_line = {x.line}",
            f"batch = {_s(x.batch_raw)}",
            f"epochs = {_s(x.epochs_raw)}",
            f"top1 = {_s(x.top1_raw)}",
            f"reason = {_s(x.reason)}",
        ]
    return "\n".join(out) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    from perfmodel.atomic import atomic_write

    atomic_write(path, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=PUBLISHED_CSV, help="published results (default: package copy)")
    ap.add_argument("--out", type=Path, default=CONVERGENCE_TOML, help="parameter file to write")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)
    result = fit_all(args.csv)
    for opt, _ in FIT_PLAN:
        p, d = result.params[opt], result.diagnostics[opt]
        print(f"{opt:5s} e0={p.e0_epochs:7.3f} ep  a_max={p.a_max:7.3f}%  k={p.k:.4f}  b_crit={p.b_crit:9.0f}  "
              f"rows={len(result.rows[opt]):2d}  rmse={d['rmse_top1']:.3f} pts  "
              f"rmse_epochs={100 * d['rmse_epochs_rel']:.1f}%")
    if args.check:
        stored = load_convergence(MODEL, args.out)
        bad = [f"{opt}.{f}" for opt, _ in FIT_PLAN for f in ("e0_epochs", "a_max", "k", "b_crit")
               if not math.isclose(getattr(stored[opt], f), getattr(result.params[opt], f), rel_tol=1e-6)]
        print("check: " + ("OK" if not bad else "MISMATCH " + ", ".join(bad)))
        return 1 if bad else 0
    _write_atomic(args.out, render_toml(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
