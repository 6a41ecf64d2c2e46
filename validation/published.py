"""Predictions checked against published results: every timed row of the published tables is mapped to a
run configuration on a catalog system, predicted with :func:`perfmodel.predict.predict`, and compared.

Inputs: ``perfmodel/data/published_results.csv`` (the package's copy of the reference table) and
``perfmodel/data/published_extra.csv`` (timed facts of PAPERS.md that the reference table lacks; same
columns). A row is *timed* when it has ``time_to_train_s`` or ``images_per_s``; every timed row is either
predicted or reported as skipped with the reason, never dropped silently.

How a row becomes a configuration (each rule below names its assumption in the row's ``notes``)
----------------------------------------------------------------------------------------------
- System: the ``hardware`` text is matched against :data:`SYSTEM_RULES` (first match wins). TPU, M40,
  P40, MN-1, ABCI and unnamed systems have no catalog system and are skipped with that reason.
- Model: :data:`MODEL_RULES` (``ResNet-50 v1.5`` is priced with the ``resnet50`` table: approximation).
- Nodes: the row's ``nodes``, else ``device_count / devices_per_node``; ranks per node: the row's
  "N ranks" / "N workers" when stated (Intel Caffe runs several ranks per socket), else one per device.
- Optimizer: "LARS" -> lars, "K-FAC" / "natural gradient" -> kfac, anything else -> sgd.
- Precision: MLPerf GPU submissions and rows saying "mixed precision" -> fp16 (tensor cores); else fp32.
- Epochs: the row's own (``"72/76"`` -> the mean), never the convergence model, so that a comparison
  isolates the time model from the convergence model. A time row without epochs is skipped.
- Quantity: ``time_to_train_s`` when the row has it (with epochs), else ``images_per_s`` (the predicted
  training throughput ``batch / iteration_s``, without evaluation).
- Evaluation: the predictor's term (a forward pass over the validation set every epoch), except where a
  row states its own evaluation cost (:data:`STATED_EVALUATION`: Intel's MLPerf v0.5 CPU run, about 20
  minutes per per-epoch evaluation); then the stated cost replaces the predictor's term, which is
  equivalent to subtracting it from the published time.

Output record of a row (:func:`compare`)
--------------------------------------
``quantity`` is ``"time_to_train_s"`` or ``"images_per_s"``. Time rows carry ``published_s`` and
``predicted_s`` (whole run: training + evaluation + start-up); throughput rows carry
``published_images_per_s`` and ``predicted_images_per_s`` and have ``published_s = predicted_s = None``.
``error_pct = 100 * (predicted - published) / published`` on the row's quantity, so a positive error means
"predicted slower" for a time and "predicted faster" for a throughput. (On a time row,
``published_images_per_s`` is the table's own figure, often derived from the time with every overhead in
it, and ``predicted_images_per_s`` the predicted training throughput: informative, not compared.)
``role`` is ``"calibration"`` for the rows that calibrated a device's efficiency curve
(:data:`validation.calibrate_published.CALIBRATION_PLAN`, identified in the package's own files only) and
``"validation"`` otherwise; calibration rows are kept out of the validation statistics. ``scope`` is
``"single-node"`` or ``"multi-node"``.
"""
from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from hardware.catalog import load_system
from hardware.errors import SpecError, ToolkitError
from perfmodel.config import RunConfig, load_config
from perfmodel.predict import Prediction, predict

__all__ = [
    "DATA_DIR", "PUBLISHED_CSV", "PUBLISHED_EXTRA_CSV", "DEFAULT_FILES", "COLUMNS", "SYSTEM_RULES",
    "MODEL_RULES", "STATED_EVALUATION", "StatedEvaluation", "PublishedRow", "RowSelector", "RowPlan", "RowSkipped",
    "load_published", "timed_rows", "map_system", "map_model", "map_optimizer", "parse_epochs", "plan_row",
    "predict_plan", "compare", "error_stats", "validate_published",
]

DATA_DIR = Path(__file__).resolve().parents[1] / "perfmodel" / "data"
PUBLISHED_CSV = DATA_DIR / "published_results.csv"
PUBLISHED_EXTRA_CSV = DATA_DIR / "published_extra.csv"
DEFAULT_FILES: tuple[Path, ...] = (PUBLISHED_CSV, PUBLISHED_EXTRA_CSV)
COLUMNS: tuple[str, ...] = ("paper", "model", "hardware", "device_count", "nodes", "global_batch", "optimizer",
                            "epochs", "top1", "time_to_train_s", "images_per_s", "scaling_efficiency", "notes",
                            "source")


class RowSkipped(ToolkitError):
    """A timed published row that cannot be predicted; the message is the reason."""


# ==========================================================================================================
# Rows
# ==========================================================================================================
def _opt_float(text: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _opt_int(text: str) -> int | None:
    v = _opt_float(text)
    return int(v) if v is not None and v == int(v) else None


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published-results table, fields as in the file (numbers parsed where they are plain).

    ``line`` is the 1-based record number in its file (the header is record 0), so ``row_id`` =
    ``"published_results.csv:4"`` names the fourth data row.
    """

    file: str
    line: int
    paper: str
    model: str
    hardware: str
    device_count: int | None
    nodes: int | None
    global_batch: str
    optimizer: str
    epochs: str
    top1: float | None
    time_to_train_s: float | None
    images_per_s: float | None
    notes: str
    source: str

    @property
    def row_id(self) -> str:
        return f"{Path(self.file).name}:{self.line}"

    @property
    def batch(self) -> int | None:
        """Global batch when it is a plain integer, else None."""
        return _opt_int(self.global_batch)

    @property
    def timed(self) -> bool:
        """True when the row reports a time to train or a throughput."""
        return self.time_to_train_s is not None or self.images_per_s is not None

    def short_paper(self, width: int = 34) -> str:
        """The paper's name without its parenthesised identifiers, at most ``width`` characters."""
        name = self.paper.split(" (")[0].split(" [")[0].strip()
        return name if len(name) <= width else name[: width - 1] + "…"


def load_published(paths: Iterable[str | Path] | None = None) -> list[PublishedRow]:
    """Read published-results CSV files (default :data:`DEFAULT_FILES`); every file must have :data:`COLUMNS`."""
    rows: list[PublishedRow] = []
    for path in (DEFAULT_FILES if paths is None else paths):
        p = Path(path)
        try:
            fh = p.open(newline="", encoding="utf-8")
        except OSError as exc:
            raise SpecError(str(p), "path", str(p), f"cannot read: {exc.strerror or exc}") from None
        with fh:
            reader = csv.DictReader(fh)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise SpecError(str(p), "header", reader.fieldnames, f"missing columns {', '.join(missing)}")
            for i, rec in enumerate(reader, start=1):
                g = {k: (rec.get(k) or "").strip() for k in COLUMNS}
                rows.append(PublishedRow(
                    file=str(p), line=i, paper=g["paper"], model=g["model"], hardware=g["hardware"],
                    device_count=_opt_int(g["device_count"]), nodes=_opt_int(g["nodes"]),
                    global_batch=g["global_batch"], optimizer=g["optimizer"], epochs=g["epochs"],
                    top1=_opt_float(g["top1"]), time_to_train_s=_opt_float(g["time_to_train_s"]),
                    images_per_s=_opt_float(g["images_per_s"]), notes=g["notes"], source=g["source"]))
    return rows


def timed_rows(rows: Iterable[PublishedRow]) -> list[PublishedRow]:
    """The rows that report a time to train or a throughput."""
    return [r for r in rows if r.timed]


@dataclass(frozen=True)
class RowSelector:
    """Identifies one published row by content (robust to row order): paper prefix, exact hardware text,
    global batch, and the reported time or throughput."""

    paper: str
    hardware: str
    global_batch: int
    time_to_train_s: float | None = None
    images_per_s: float | None = None
    model: str | None = None

    def matches(self, row: PublishedRow) -> bool:
        return (row.paper.startswith(self.paper) and row.hardware == self.hardware
                and row.batch == self.global_batch
                and (self.model is None or row.model == self.model)
                and (self.time_to_train_s is None or row.time_to_train_s == self.time_to_train_s)
                and (self.images_per_s is None or row.images_per_s == self.images_per_s))

    def find(self, rows: Sequence[PublishedRow]) -> PublishedRow:
        """The one row this selector names; SpecError when there is none or more than one."""
        hits = [r for r in rows if self.matches(r)]
        if len(hits) != 1:
            raise SpecError("published results", "row", f"{self.paper} / {self.hardware} / {self.global_batch}",
                            f"selector matches {len(hits)} rows, expected exactly one")
        return hits[0]


# ==========================================================================================================
# Mapping rules (data)
# ==========================================================================================================
#: (regex on the hardware text, catalog system or None, note when mapped / reason when skipped); first match
SYSTEM_RULES: tuple[tuple[str, str | None, str], ...] = (
    (r"^$", None, "hardware not given in the row"),
    (r"not named", None, "system not identified: the row names no machine (e.g. Codreanu et al.'s 104,448 cores "
     "are 1,536 KNL nodes or 2,176 SKX nodes); node count, batch and epochs of the run are not published"),
    (r"\bTPU\b", None, "no catalog system: Google TPU (no TPU device in the catalog; no TPU FLOP/s figure in "
     "hardware_specs.md)"),
    (r"\bM40\b", None, "no catalog system: NVIDIA M40 (no M40 device in the catalog)"),
    (r"\bP40\b", None, "no catalog system: NVIDIA P40 (no P40 device in the catalog)"),
    (r"MN-1", None, "no catalog system: PFN MN-1 (its network is not in hardware_specs.md)"),
    (r"ABCI", None, "no catalog system: ABCI (4 x V100 + 2 x EDR per node) is not in the catalog"),
    (r"AWS|8124M", None, "no catalog system: AWS c5.18xlarge (Xeon 8124M; no device spec)"),
    (r"Big Basin", "big-basin-p100", ""),
    (r"DGX-2H", "dgx2-v100", "DGX-2H (higher-power V100-SXM3-H) priced as the DGX-2: the H variant is not "
     "modelled separately (approximation)"),
    (r"DGX-2", "dgx2-v100", ""),
    (r"DGX-1", "dgx1-v100", ""),
    (r"V100 x8 \(Google Cloud VM\)", "dgx1-v100", "approximation: Google Cloud VM with 8 x V100 priced as one "
     "DGX-1 node (V100-SXM2 16 GB and the DGX-1 NVLink hybrid cube-mesh assumed; the VM's GPU variant and "
     "topology are not in hardware_specs.md)"),
    (r"Stampede2 SKX|Xeon Platinum 8160", "stampede2-skx", ""),
    (r"Xeon Platinum 8180", "intel-8180-10gbe", ""),
    (r"Nurion|KNL testbed", "stampede2-knl", "Bae et al. ran on KISTI Nurion KNL nodes (Xeon Phi 7250, "
     "Omni-Path); Nurion is not in the catalog: priced on stampede2-knl, same device and fabric (approximation)"),
    (r"Xeon Phi 7250|\bKNL\b", "stampede2-knl", "KNL run priced on TACC Stampede2's KNL partition"),
)

#: (regex on the model text, workload table, note)
MODEL_RULES: tuple[tuple[str, str, str], ...] = (
    (r"^ResNet-50 v1\.5$", "resnet50", "ResNet-50 v1.5 priced with the resnet50 workload table (v1.5 moves "
     "the stride-2 to the 3x3 convolutions: slightly more FLOPs; approximation)"),
    (r"^ResNet-50$", "resnet50", ""),
    (r"^ResNet-101$", "resnet101", ""),
    (r"^AlexNet$", "alexnet", ""),
)


@dataclass(frozen=True)
class StatedEvaluation:
    """A row that states its own evaluation cost: ``seconds_per_eval`` every epoch (``evals = floor(epochs)``)."""

    selector: RowSelector
    seconds_per_eval: float
    must_say: str
    citation: str


#: rows whose evaluation cost is stated in the table (replaces the predictor's evaluation term)
STATED_EVALUATION: tuple[StatedEvaluation, ...] = (
    StatedEvaluation(
        RowSelector("MLPerf Training v0.5 - intel", "Intel Xeon Platinum 8180 (1 node x 2 sockets; Intel Caffe)",
                    128, time_to_train_s=624126.7),
        seconds_per_eval=20 * 60.0, must_say="~20 min/eval",
        citation="published_results.csv notes: per-epoch CPU evaluation, ~20 min/eval visible in the MLPerf "
                 "v0.5 logs"),
)


def map_system(hardware: str) -> tuple[str, str]:
    """Catalog system id and mapping note for a row's hardware text; :class:`RowSkipped` when there is none."""
    for pattern, system, note in SYSTEM_RULES:
        if re.search(pattern, hardware):
            if system is None:
                raise RowSkipped(note)
            return system, note
    raise RowSkipped(f"no catalog system matches hardware '{hardware}'")


def map_model(model: str) -> tuple[str, str]:
    """Workload table and note for a row's model text; :class:`RowSkipped` when there is no table."""
    for pattern, table, note in MODEL_RULES:
        if re.search(pattern, model):
            return table, note
    raise RowSkipped(f"no workload table for model '{model}'")


def map_optimizer(text: str) -> tuple[str, str]:
    """Optimizer cost family (sgd / lars / kfac) and note for a row's optimizer text."""
    t = text.lower()
    if "lars" in t:
        return "lars", ""
    if "k-fac" in t or "kfac" in t or "natural gradient" in t:
        return "kfac", ""
    if "rmsprop" in t:
        return "sgd", "RMSprop warm-up priced as momentum SGD (approximation)"
    return "sgd", "" if (not t or "sgd" in t or "momentum" in t) else f"optimizer '{text}' priced as SGD"


def parse_epochs(text: str) -> float | None:
    """Epochs of a row: a number, or the mean of several runs' counts (``"72/76"`` -> 74); None otherwise."""
    text = (text or "").strip()
    if not text:
        return None
    parts = text.split("/")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        return None
    return sum(vals) / len(vals)


def _ranks_per_node(row: PublishedRow) -> int | None:
    """Ranks per node stated in the row ("4 ranks x32", "2 workers/node"), else None."""
    m = re.search(r"(\d+)\s+(?:Caffe\s+)?(?:ranks|workers)\b", f"{row.optimizer} {row.notes}")
    return int(m.group(1)) if m else None


def _stated_eval(row: PublishedRow) -> StatedEvaluation | None:
    for se in STATED_EVALUATION:
        if se.selector.matches(row):
            if se.must_say not in row.notes:
                raise SpecError(row.row_id, "notes", row.notes[:60],
                                f"expected the stated evaluation cost '{se.must_say}' (data changed?)")
            return se
    return None


# ==========================================================================================================
# Plans and predictions
# ==========================================================================================================
@dataclass(frozen=True)
class RowPlan:
    """How one published row is predicted: the configuration and the quantity compared."""

    row: PublishedRow
    model: str
    system: str
    nodes: int
    ranks_per_node: int | None
    batch: int
    optimizer: str
    precision: str
    epochs: float | None
    quantity: str
    published: float
    stated_eval_s_per_epoch: float | None = None
    eval_citation: str = ""
    notes: tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        return "single-node" if self.nodes == 1 else "multi-node"

    def config(self, system: str | None = None) -> RunConfig:
        """The run configuration (``system`` overrides the catalog id, e.g. with a trial spec path)."""
        return load_config(model=self.model, precision=self.precision, batch=self.batch, optimizer=self.optimizer,
                           epochs=self.epochs if self.epochs is not None else 1.0,
                           system=system or self.system, nodes=self.nodes, ranks_per_node=self.ranks_per_node)


def plan_row(row: PublishedRow) -> RowPlan:
    """Map a timed row to a :class:`RowPlan`; :class:`RowSkipped` (with the reason) when it cannot be."""
    if not row.timed:
        raise RowSkipped("no time to train or throughput in the row")
    notes: list[str] = []
    system_id, note = map_system(row.hardware)
    notes.append(note)
    model, note = map_model(row.model)
    notes.append(note)
    batch = row.batch
    if batch is None:
        raise RowSkipped(f"global batch not published as a number ('{row.global_batch}')")
    system = load_system(system_id)
    nodes = row.nodes
    if nodes is None:
        if row.device_count and row.device_count % system.devices_per_node == 0:
            nodes = row.device_count // system.devices_per_node
            notes.append(f"nodes derived: {row.device_count} devices / {system.devices_per_node} per node")
        else:
            raise RowSkipped("node count not published")
    rpn = _ranks_per_node(row)
    if rpn is not None and rpn != system.devices_per_node:
        notes.append(f"{rpn} ranks per node as stated ({system.devices_per_node} devices per node)")
    elif rpn == system.devices_per_node:
        rpn = None
    optimizer, note = map_optimizer(row.optimizer)
    notes.append(note)
    fp16 = "mixed precision" in f"{row.optimizer} {row.notes}".lower() or (
        row.paper.startswith("MLPerf") and system.device.kind == "gpu")
    precision = "fp16" if fp16 else "fp32"
    if fp16:
        notes.append("mixed precision -> fp16 (tensor-core peak)")
    epochs = parse_epochs(row.epochs)
    if "/" in row.epochs and epochs is not None:
        notes.append(f"epochs {row.epochs} (several runs) -> mean {epochs:g}")
    if row.time_to_train_s is not None and epochs is not None:
        quantity, published = "time_to_train_s", row.time_to_train_s
    elif row.images_per_s is not None:
        quantity, published = "images_per_s", row.images_per_s
        epochs = None
    else:
        raise RowSkipped("time to train without the number of epochs (a time comparison would test the "
                         "convergence model, not the time model)")
    se = _stated_eval(row)
    plan = RowPlan(row=row, model=model, system=system_id, nodes=nodes, ranks_per_node=rpn, batch=batch,
                   optimizer=optimizer, precision=precision, epochs=epochs, quantity=quantity,
                   published=published,
                   stated_eval_s_per_epoch=se.seconds_per_eval if se else None,
                   eval_citation=se.citation if se else "", notes=tuple(n for n in notes if n))
    try:
        plan.config()
    except ToolkitError as exc:
        raise RowSkipped(f"configuration rejected: {exc}") from None
    return plan


def predict_plan(plan: RowPlan, system: str | None = None) -> tuple[float, Prediction, dict[str, Any]]:
    """Predict ``plan`` (optionally on another spec of its system); return (predicted quantity, prediction,
    extra fields: evaluation seconds and where they came from)."""
    pred = predict(plan.config(system))
    rb = pred.run_breakdown
    if plan.quantity == "images_per_s":
        return pred.images_per_s, pred, {"eval_s": None, "eval_source": "not included (throughput)"}
    if plan.stated_eval_s_per_epoch is not None:
        n_evals = math.floor(pred.epochs + 1e-9)
        eval_s = n_evals * plan.stated_eval_s_per_epoch
        total = rb["training_s"] + rb["startup_s"] + eval_s
        return total, pred, {"eval_s": eval_s, "eval_source": f"stated: {n_evals} x "
                             f"{plan.stated_eval_s_per_epoch:g} s ({plan.eval_citation}); replaces the "
                             f"predictor's {rb['eval_s']:.0f} s"}
    return pred.time_to_train_s, pred, {"eval_s": rb["eval_s"], "eval_source": "predictor (every epoch)"}


def compare(plan: RowPlan, role: str = "validation", system: str | None = None) -> dict[str, Any]:
    """Predict ``plan`` and return its output record (see the module docstring for the fields)."""
    value, pred, extra = predict_plan(plan, system)
    row = plan.row
    dpn = load_system(plan.system).devices_per_node
    err = 100.0 * (value - plan.published) / plan.published
    time_row = plan.quantity == "time_to_train_s"
    b = pred.breakdown
    return {
        "row": row.row_id, "paper": row.paper, "model": row.model, "workload": plan.model,
        "hardware": row.hardware, "system": plan.system, "nodes": plan.nodes, "devices": plan.nodes * dpn,
        "ranks": pred.ranks, "ranks_per_node": pred.ranks_per_node, "batch": plan.batch,
        "per_rank_batch": pred.per_device_batch, "optimizer": plan.optimizer, "precision": plan.precision,
        "epochs": plan.epochs, "quantity": plan.quantity,
        "published_s": plan.published if time_row else None,
        "predicted_s": value if time_row else None,
        "published_images_per_s": plan.published if not time_row else row.images_per_s,
        "predicted_images_per_s": value if not time_row else pred.images_per_s,
        "error_pct": err, "role": role, "scope": plan.scope,
        "iteration_s": pred.iteration_s, "compute_s": b["compute_s"], "comm_exposed_s": b["comm_exposed_s"],
        "optimizer_s": b["optimizer_s"], "io_s": b["io_s"], **extra,
        "notes": list(plan.notes), "source": row.source,
    }


def error_stats(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Count, median and max of ``|error_pct|`` (None when empty)."""
    errs = [abs(r["error_pct"]) for r in records]
    return {"count": len(errs), "median_abs_error_pct": statistics.median(errs) if errs else None,
            "max_abs_error_pct": max(errs) if errs else None}


def validate_published(paths: Iterable[str | Path] | None = None,
                       progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Compare every timed published row with its prediction.

    Returns the JSON-ready summary: ``rows`` (one record per predicted row), ``median_abs_error_pct`` and
    ``max_abs_error_pct`` over the validation rows, ``count`` (validation rows), ``validation`` (the same
    statistics, also by scope: single-node / multi-node), ``calibration`` (the statistics of the rows that
    calibrated the efficiency curves, with the list of them), ``skipped`` (row, paper, hardware, reason) and
    ``files``.
    """
    from validation.calibrate_published import calibration_rows  # the plan lives with the fit

    files = [str(p) for p in (DEFAULT_FILES if paths is None else paths)]
    rows = load_published(files)
    timed = timed_rows(rows)
    calib = {r.row_id: dev for r, dev in calibration_rows(load_published(DEFAULT_FILES))}
    records, skipped = [], []
    for i, row in enumerate(timed):
        if progress:
            progress(i, len(timed), f"{row.short_paper()} {row.model} [{row.hardware[:40]}]")
        # calibration rows are identified in the default files; other files are validation only
        is_calib = Path(row.file).resolve() in {p.resolve() for p in DEFAULT_FILES} and row.row_id in calib
        try:
            plan = plan_row(row)
            rec = compare(plan, "calibration" if is_calib else "validation")
        except ToolkitError as exc:  # RowSkipped, or a configuration the predictor rejects (infeasible)
            reason = str(exc) if isinstance(exc, RowSkipped) else f"prediction failed: {exc}"
            skipped.append({"row": row.row_id, "paper": row.paper, "model": row.model, "hardware": row.hardware,
                            "published_s": row.time_to_train_s, "published_images_per_s": row.images_per_s,
                            "reason": reason})
            continue
        if is_calib:
            rec["calibrates"] = calib[row.row_id]
        records.append(rec)
    if progress:
        progress(len(timed), len(timed), "done")
    val = [r for r in records if r["role"] == "validation"]
    cal = [r for r in records if r["role"] == "calibration"]
    vs = error_stats(val)
    return {
        "rows": records,
        "median_abs_error_pct": vs["median_abs_error_pct"], "max_abs_error_pct": vs["max_abs_error_pct"],
        "count": vs["count"],
        "validation": {**vs, "by_scope": {s: error_stats([r for r in val if r["scope"] == s])
                                          for s in ("single-node", "multi-node")}},
        "calibration": {**error_stats(cal), "rows": [f"{r['row']} -> {r['calibrates']}" for r in cal]},
        "skipped": skipped,
        "counts": {"timed_rows": len(timed), "predicted": len(records), "skipped": len(skipped)},
        "files": files,
    }
