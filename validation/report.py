"""The validation report: Markdown and a self-contained HTML page built from the point results of
:mod:`validation.loop` and their summary.

``write_report(out_dir, results, summary)`` writes ``out_dir/report.md`` (figures as files in
``out_dir/plots/``) and ``out_dir/report.html`` (the same content, figures embedded as base64 PNG data
URIs, inline CSS, no external resource: it opens from disk with no server). Every file is written
atomically (temporary file in the same folder + ``os.replace``).

Both documents are rendered from one list of sections, so they always say the same thing:

1. Headline: mean/max absolute and signed (bias) error of the iteration time, analytic and simulated,
   next to the measurement's own noise (an error within the noise is as good as it gets).
2. Predicted vs measured iteration time (scatter, y = x, +-10 % band).
3. Errors per component (table and per-configuration bars).
4. Scaling curves (images/s vs ranks per model, per-rank batch and optimizer).
5. Step-time distributions (measured vs simulated CDFs, p50/p99).
6. Time to accuracy (when ``summary["time_to_accuracy"]`` is present).
7. Published results (when ``summary["published"]`` is present: the dict of
   :func:`validation.published.validate_published`).
8. Every configuration, one row each; then the machine and software the measurements ran on.

Conventions: times per iteration in milliseconds, errors in percent, signed errors
``100 (predicted - measured) / measured`` (positive: the model predicts slower than measured), every
column header names its unit, a missing value is an em dash. The per-point *noise band* is
``max(2 SEM, run-to-run)`` (percent of the mean): an error inside it cannot be told apart from zero.
"""
from __future__ import annotations

import base64
import html
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from validation import plots as P
from validation.errors import COMPONENTS, summarise_errors

from perfmodel.atomic import atomic_write

__all__ = ["DEFAULT_TITLE", "write_report", "build_sections", "render_markdown", "render_html", "build_figures",
           "noise_band_pct"]

DEFAULT_TITLE = "Validation report: predicted vs measured training time"
DASH = "—"
#: tolerance of the "within 10 %" / "within the noise" comparisons (0.11 / 0.1 is 10.000000000000002 %)
_EPS = 1e-9


# ==========================================================================================================
# Formatting
# ==========================================================================================================
def _pct(x: float | None, signed: bool = False, digits: int = 1) -> str:
    if x is None:
        return DASH
    x = round(x, digits) + 0.0  # no "-0.0"
    if x == 0:
        return f"{0:.{digits}f}"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _ms(seconds: float | None) -> str:
    return DASH if seconds is None else f"{1e3 * seconds:,.2f}"


def _num(x: float | None, digits: int = 1) -> str:
    return DASH if x is None else f"{x:,.{digits}f}"


def _err_class(e: float | None) -> str:
    if e is None:
        return ""
    a = abs(e) - _EPS
    return "good" if a <= 10 else "fair" if a <= 25 else "poor"


def noise_band_pct(result: Mapping[str, Any]) -> float | None:
    """The point's noise band in percent: max(2 x SEM, run-to-run half-range); None when unmeasured."""
    n = (result.get("measurement") or {}).get("noise") or {}
    parts = [2 * n["sem_pct"] if n.get("sem_pct") is not None else None, n.get("repeat_pct")]
    parts = [p for p in parts if p is not None]
    return max(parts) if parts else None


def _iter_err(result: Mapping[str, Any], method: str) -> float | None:
    return (((result.get("errors") or {}).get(method) or {}).get("iteration") or {}).get("error_pct")


# ==========================================================================================================
# Document model: sections of blocks, rendered to Markdown and HTML
# ==========================================================================================================
@dataclass
class Cell:
    """A table cell: text and an optional CSS class (HTML only)."""

    text: str
    cls: str = ""


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    align: str = ""  # one 'l' or 'r' per column; default: first column left, others right
    caption: str = ""
    css: str = ""  # extra CSS class of the HTML table ("compact": the wide table of every configuration)


@dataclass
class Figure:
    name: str  # file stem in plots/ and key in the figures dict
    alt: str
    caption: str


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Any] = field(default_factory=list)  # str (paragraph) | ("note", str) | ("list", [...]) |
    #                                                   ("cards", [(label, value, sub)]) | Table | Figure


def _tables_rows(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(results, key=lambda r: (str(r["point"]["model"]), int(r["point"]["ranks"]),
                                          int(r["point"]["batch"]), str(r["point"]["optimizer"]),
                                          str(r["point"].get("allreduce")), float(r["point"].get("bucket_mb", 0)),
                                          not r["point"].get("overlap", True), str(r.get("id"))))


def _components(summary: Mapping[str, Any], results: Sequence[Mapping[str, Any]], method: str) -> dict:
    key = "components" if method == "analytic" else "simulation_components"
    return summary.get(key) or summarise_errors(results, method)


def _headline(results, summary) -> Section:
    s = Section("headline", "1. Headline")
    n = summary.get("configs", len(results))
    ana = _components(summary, results, "analytic").get("iteration", {})
    sim = _components(summary, results, "simulation").get("iteration", {})
    mape = summary.get("mape_iteration", ana.get("mape"))
    maxape = summary.get("max_ape_iteration", ana.get("max_ape"))
    bias = summary.get("bias_iteration", ana.get("bias"))
    noise = summary.get("noise") or {}
    sem, rep = noise.get("median_sem_pct"), noise.get("median_repeat_pct")

    def counts(method: str) -> tuple[str, str]:
        errs = [(_iter_err(r, method), noise_band_pct(r)) for r in results]
        errs = [(e, b) for e, b in errs if e is not None]
        if not errs:
            return DASH, DASH
        in10 = sum(abs(e) <= 10 + _EPS for e, _ in errs)
        inn = sum(b is not None and abs(e) <= b + _EPS for e, b in errs)
        return f"{in10} of {len(errs)}", f"{inn} of {len(errs)}"

    a10, anoise = counts("analytic")
    s10, snoise = counts("simulation")
    noise_txt = f"{_pct(sem, digits=2)} %" if sem is not None else "not measured"
    s.blocks.append(("cards", [
        ("configurations", str(n), "measured and predicted"),
        ("analytic: mean |error|", f"{_pct(mape)} %", f"max {_pct(maxape)} %, bias {_pct(bias, True)} %"),
        ("simulation: mean |error|", f"{_pct(sim.get('mape'))} %",
         f"max {_pct(sim.get('max_ape'))} %, bias {_pct(sim.get('bias'), True)} %"),
        ("measurement noise", noise_txt,
         "median SEM" + (f"; run-to-run {_pct(rep, digits=2)} %" if rep is not None else "")),
    ] + ([("noise floor: perfect model", f"{_pct(summary['noise_floor']['mape'])} %",
           f"max {_pct(summary['noise_floor']['max_ape'])} % over {summary['noise_floor']['count']} control runs")]
         if (summary.get("noise_floor") or {}).get("mape") is not None else [])))
    machine = _machine_line(results)
    s.blocks.append(f"**{n} configurations** of data-parallel training were run for real{machine} and predicted "
                    "twice: by the analytic model and by the discrete-event simulation. The error is that of the "
                    "mean iteration time, `100 (predicted − measured) / measured`; positive means the model "
                    "predicts slower than measured.")
    s.blocks.append(Table(
        ["iteration time", "analytic model", "simulation"],
        [["mean absolute error, MAPE (%)", _pct(mape), _pct(sim.get("mape"))],
         ["max absolute error (%)", _pct(maxape), _pct(sim.get("max_ape"))],
         ["bias, mean signed error (%)", _pct(bias, True), _pct(sim.get("bias"), True)],
         ["within ±10 % (configurations)", a10, s10],
         ["within the measurement noise (configurations)", anoise, snoise]]))
    raw = summary.get("raw_components", {}).get("iteration") or {}
    sf = summary.get("speed_factor")
    if raw.get("mape") is not None:
        s.blocks.append(("note",
                         "**Host speed:** this machine's speed drifts by tens of percent within seconds (other "
                         "virtual machines share its cores and memory). Every run times a fixed reference "
                         "workload after each iteration, as the calibration did beside its measurements "
                         "(`executor.speed_probe`), and the errors above compare the prediction scaled by "
                         "*speed factor* = probe during the run / probe during the calibration"
                         + (f" (here {sf['min']:.2f} to {sf['max']:.2f}, median {sf['median']:.2f})" if sf else "")
                         + f". Without that scaling (raw) the analytic model's MAPE is {_pct(raw['mape'])} %, "
                         f"max {_pct(raw.get('max_ape'))} %, bias {_pct(raw.get('bias'), True)} %. The scaling removes "
                         "the drift only approximately: the probe is a small workload, and when the host is slow it "
                         "tends to slow down more than a training step does, so large factors over-correct."))
    sessions = summary.get("calibration") or {}
    if sessions.get("sessions", 1) > 1:
        s.blocks.append(("note",
                         f"**Calibration sessions:** the calibration was measured {sessions['sessions']} times"
                         + (f", before passes {', '.join(str(i + 1) for i in at)} over the matrix"
                            if (at := [i for i in sessions.get("before_passes") or [] if i is not None]) else "")
                         + ", and every prediction uses all of them merged (per measured item the geometric "
                         "mean over the sessions, `executor.calibrate.combine_sessions`); every point was run "
                         "first and predicted after the last run, from the calibration alone. One session is one "
                         "moment of the host's drifting speed: alone, its error would shift every prediction with "
                         "the same number of ranks alike."))

    def per_rank(values: Mapping[str, float]) -> str:
        return ", ".join(f"{v:.3f} at {k} rank{'s' if str(k) != '1' else ''}"
                         for k, v in sorted(values.items(), key=lambda kv: int(kv[0])))

    loop, tail = sessions.get("loop_compute") or {}, sessions.get("step_tail") or {}
    ref = sessions.get("loop_reference") or {}
    if loop:
        what = (f"{ref['model']} at {ref['per_rank_batch']} images per rank, SGD, 25 MB buckets"
                if ref.get("model") else "SGD")
        s.blocks.append(("note",
                         "**Compute inside the executor's loop:** each calibration session also ran the executor "
                         f"for real on a reference configuration that is not a matrix point ({what}) at every "
                         "rank count, and compared its forward + backward with the compute "
                         "benchmark's for the same model and batch, after the host speed probe and the bucketer's "
                         "hooks (`executor.calibrate.fit_loop_compute`). Every prediction multiplies its compute "
                         f"by that EMPIRICAL factor (here {per_rank(loop)}): the same layers run at a slightly "
                         "different speed in the training loop than in the benchmark, by an amount that depends "
                         "on how many ranks share the host; its cause is not known."))
    fit = sessions.get("compute_fit") or {}
    if fit:
        s.blocks.append(("note",
                         "**Compute:** the calibration benchmarks every matrix model at its per-rank batches; the "
                         "per-layer model (roofline with one efficiency curve per number of ranks sharing the "
                         "host, and a per-layer framework cost) fits those steps with an rms error of "
                         f"{fit.get('generic_rms_rel_err', 0):.1%} (max {fit.get('generic_max_abs_rel_err', 0):.1%}). "
                         "Each benchmarked workload also carries an EMPIRICAL factor per sharing and batch, "
                         "interpolated in log(batch) between the batches measured "
                         "(`hardware.specs.DeviceSpec.workload_factor`): a workload whose time grows with the "
                         "batch its own way (activations leaving the caches, fully connected layers that read "
                         "the same weights at any batch) keeps its measured step at each of them."))
    if tail:
        s.blocks.append(("note",
                         "**Typical and mean times:** every calibrated time is a benchmark's typical one (the "
                         "median of the fastest half of its repetitions, robust against other work on the host), "
                         "while a run's iteration time is a mean. The predictions multiply compute and optimizer "
                         "times by the calibrated *step tail*, the benchmark's own median over typical step time "
                         f"(here {per_rank(tail)}; `executor.calibrate.compute_step_tail`), and every run is "
                         "normalised by its typical probe sample, the calibration's statistic."))
    floor = summary.get("noise_floor")
    if floor and floor.get("mape") is not None:
        s.blocks.append(("note",
                         f"**Noise floor (control):** `{floor['point']}` was run right after the calibration (the "
                         f"reference) and again at {floor['count']} places between the points"
                         + (f" (in each of the {k} passes; the reference merged over the passes and the runs at "
                            "one place combined like a point's runs)"
                            if (k := max([int(x.get('runs') or 1) for x in floor.get('runs') or []] or [1])) > 1
                            else "")
                         + ". Taking the reference as a perfect "
                         "model's prediction, scaled by the same speed factor, the later runs give a mean "
                         f"|error| of {_pct(floor['mape'])} %, a max of {_pct(floor['max_ape'])} % and a bias of "
                         f"{_pct(floor['bias'], True)} %; unscaled {_pct(floor['mape_raw'])} % / "
                         f"{_pct(floor['max_ape_raw'])} %. Model errors of that size cannot be told apart from "
                         "the host's drift (`validation.control`)."))
    if rep is not None:
        rep_txt = f"the run-to-run spread of repeated runs is {_pct(rep, digits=2)} % (median half-range)"
        if noise.get("median_repeat_normalised_pct") is not None:
            rep_txt += (f", {_pct(noise['median_repeat_normalised_pct'], digits=2)} % after each run's speed "
                        "normalisation")
    else:
        rep_txt = "run-to-run spread not measured (every point ran once)"
    sem_txt = (f"the median standard error (SEM) of a measured mean iteration time is {noise_txt}" if sem is not None
               else "the standard error (SEM) of the measured means is unknown (no per-iteration times)")
    s.blocks.append(("note",
                     f"**Measurement noise:** {sem_txt}; {rep_txt}. "
                     "**An error within the noise is as good as it gets**: the "
                     "measurement itself is uncertain by that much, so a prediction that close cannot be told "
                     "apart from a perfect one. A point counts as *within the noise* when |error| ≤ "
                     "max(2 × SEM, run-to-run) of that point."))
    return s


def _machine_line(results) -> str:
    for r in results:
        m = (r.get("measurement") or {}).get("machine") or {}
        if m:
            bits = [m.get("hostname"), f"{m['cpus']} CPUs" if m.get("cpus") else None,
                    f"{m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else None]
            return " on " + ", ".join(str(b) for b in bits if b) + f" (system `{r.get('system', 'local')}`)"
    return ""


def _scatter(results) -> Section:
    s = Section("scatter", "2. Predicted vs measured iteration time")
    s.blocks.append(Figure("predicted_vs_measured", "predicted vs measured iteration time",
                           "One marker per configuration and method (filled circle: analytic model, open triangle: "
                           "simulation; colour: rank count; a grey line joins the two predictions of one "
                           "configuration). On the diagonal the prediction is exact; the grey band is ±10 %."))
    return s


def _component_section(results, summary) -> Section:
    s = Section("components", "3. Errors per component")
    ana = _components(summary, results, "analytic")
    sim = _components(summary, results, "simulation")
    rows = []
    for c in COMPONENTS:
        a, m = ana.get(c, {}), sim.get(c, {})
        rows.append([P.COMPONENT_LABELS.get(c, c), str(a.get("n", 0)),
                     Cell(_pct(a.get("mape")), _err_class(a.get("mape"))), _pct(a.get("max_ape")),
                     _pct(a.get("bias"), True),
                     Cell(_pct(m.get("mape")), _err_class(m.get("mape"))), _pct(m.get("max_ape")),
                     _pct(m.get("bias"), True)])
    s.blocks.append(Table(["component", "n (configs)", "analytic MAPE (%)", "analytic max APE (%)",
                           "analytic bias (%)", "simulated MAPE (%)", "simulated max APE (%)", "simulated bias (%)"],
                          rows, caption="n: configurations where the component was scored (a component measured "
                                        "below 2 ms per iteration, such as the communication of a one-rank run, "
                                        "is not: a percentage of nothing is not information)."))
    s.blocks.append(Figure("component_errors", "signed error per configuration and component",
                           "Signed error of each scored component of the analytic model, per configuration."))
    return s


def _scaling_section(results) -> Section:
    s = Section("scaling", "4. Scaling curves")
    fams = P.scaling_families(results)
    if not fams:
        s.blocks.append("No (model, per-rank batch, optimizer) family was measured at two or more rank counts.")
        return s
    s.blocks.append(Figure("scaling", "throughput vs ranks",
                           "Measured (solid) and predicted (dashed: analytic, dotted: simulated) training "
                           "throughput per family with at least two rank counts. Where a family has several "
                           "configurations at one rank count, the curve goes through the one with the default "
                           "communication settings (auto algorithm, 25 MB buckets, overlap); the others are the "
                           "small markers."))
    rows = []
    for (model, prb, opt), by_rank in fams.items():
        reps = {k: P.representative(v) for k, v in by_rank.items()}
        base = reps.get(1)
        for k, r in reps.items():
            m, a, sm = (P.images_per_s(r, w) for w in ("measurement", "prediction", "simulation"))

            def eff(which: str, val: float | None) -> str:
                b = P.images_per_s(base, which) if base else None
                return _pct(100 * val / (k * b)) if val and b else DASH
            e = 100 * (a - m) / m if a and m else None
            rows.append([model, str(prb), opt, str(k), _num(m), _num(a), Cell(_pct(e, True), _err_class(e)),
                         _num(sm), eff("measurement", m), eff("prediction", a)])
    s.blocks.append(Table(["model", "per-rank batch (images)", "optimizer", "ranks", "measured (images/s)",
                           "analytic (images/s)", "analytic error (%)", "simulated (images/s)",
                           "measured efficiency (%)", "analytic efficiency (%)"], rows, align="lrlrrrrrrr",
                          caption="Efficiency: throughput at k ranks over k times the family's one-rank throughput "
                                  "(same source: measured over measured, predicted over predicted)."))
    return s


def _distribution_section(results) -> Section:
    s = Section("distributions", "5. Step-time distributions")
    pts = P.distribution_points(results)
    if not pts:
        s.blocks.append("No point has both measured per-iteration times and simulated samples.")
        return s
    s.blocks.append(Figure("step_distributions", "step-time CDFs, measured vs simulated",
                           "Cumulative distribution of the per-iteration time: measured (slowest rank of each "
                           "iteration, after warm-up) and simulated (the simulator's samples, with the per-rank "
                           "jitter calibrated on the one-rank runs, so the multi-rank spread is a prediction)."))
    rows = []
    for r in pts:
        mt = r["measurement"]["iteration_times_s"]
        st = r["simulation"]["iteration_samples_s"]
        m50, m99, s50, s99 = (P.percentile(mt, 50), P.percentile(mt, 99), P.percentile(st, 50),
                              P.percentile(st, 99))
        e50 = 100 * (s50 - m50) / m50 if m50 else None
        e99 = 100 * (s99 - m99) / m99 if m99 else None
        rows.append([P.short_id(r), str(r["point"]["ranks"]), str(len(mt)), _ms(m50), _ms(s50),
                     Cell(_pct(e50, True), _err_class(e50)), _ms(m99), _ms(s99),
                     Cell(_pct(e99, True), _err_class(e99))])
    s.blocks.append(Table(["configuration", "ranks", "measured iterations (n)", "measured p50 (ms)",
                           "simulated p50 (ms)", "p50 error (%)", "measured p99 (ms)", "simulated p99 (ms)",
                           "p99 error (%)"], rows, align="lrrrrrrrr",
                          caption="The p99 of a few measured iterations is close to their maximum; read it as "
                                  "'the slowest iterations', not as a precise tail."))
    return s


def _tta_section(tta: Mapping[str, Any] | None) -> Section:
    s = Section("tta", "6. Time to accuracy")
    if not tta:
        s.blocks.append("Time to accuracy was not part of this validation.")
        return s
    rows = tta.get("rows") or []
    target = tta.get("target_top1")
    tgt = DASH if target is None else f"{100 * target:.1f} %" if target <= 1 else f"{target:g} %"
    s.blocks.append(f"Wall time until the top-1 accuracy reaches **{tgt}**, predicted (time model × convergence "
                    f"model) and measured: mean |error| **{_pct(tta.get('mape'))} %**, max "
                    f"**{_pct(tta.get('max_ape'))} %** over {len(rows)} runs.")
    if not rows:
        return s
    unit, scale = P.time_unit(max([float(r.get("measured_s") or 0) for r in rows]
                                  + [float(r.get("predicted_s") or 0) for r in rows]))
    digits = 1 if unit != "h" else 2
    trows = []
    for r in rows:
        fit = r.get("fit_on") or []
        e = r.get("error_pct")
        trows.append([str(r.get("model", DASH)), str(r.get("batch", DASH)), str(r.get("optimizer", DASH)),
                      str(r.get("ranks", DASH)),
                      _num(r["measured_s"] / scale if r.get("measured_s") is not None else None, digits),
                      _num(r["predicted_s"] / scale if r.get("predicted_s") is not None else None, digits),
                      Cell(_pct(e, True), _err_class(e)), _num(r.get("measured_epochs"), 2),
                      _num(r.get("predicted_epochs"), 2),
                      ", ".join(str(b) for b in fit) + (" (in fit)" if r.get("batch") in fit else "") if fit else DASH])
    s.blocks.append(Table(["model", "batch (global, images)", "optimizer", "ranks", f"measured ({unit})",
                           f"predicted ({unit})", "error (%)", "measured epochs", "predicted epochs",
                           "convergence fit on batches"], trows, align="lrlrrrrrrl",
                          caption="A row whose batch is among the batches the convergence model was fitted on is "
                                  "in-sample for the epochs; the others are predictions."))
    s.blocks.append(Figure("time_to_accuracy", "time to accuracy, predicted vs measured",
                           "Measured and predicted wall time to the target; the signed error is written above each "
                           "pair (hatched: batch in the convergence fit)."))
    return s


def _published_section(pub: Mapping[str, Any] | None) -> Section:
    s = Section("published", "7. Published results")
    if not pub:
        s.blocks.append("The comparison with published results was not part of this validation "
                        "(`perfmodel validate --published`).")
        return s
    rows = pub.get("rows") or []
    val = pub.get("validation") or {}
    scope = val.get("by_scope") or {}
    cal = pub.get("calibration") or {}
    s.blocks.append(f"Every timed row of the published tables mapped to a catalog system and predicted: median "
                    f"|error| **{_pct(pub.get('median_abs_error_pct'))} %**, max "
                    f"**{_pct(pub.get('max_abs_error_pct'))} %** over **{pub.get('count', DASH)} validation rows**"
                    + ("" if not scope else " (" + "; ".join(
                        f"{k}: {v.get('count', 0)} rows, median {_pct(v.get('median_abs_error_pct'))} %, max "
                        f"{_pct(v.get('max_abs_error_pct'))} %" for k, v in scope.items() if v.get("count")) + ")")
                    + (f". {cal.get('count')} calibration rows (they fitted the devices' efficiency curves, so "
                       "they are shown but not scored)" if cal.get("count") else "") + ".")
    trows = []
    for r in rows:
        time_row = r.get("quantity") == "time_to_train_s"
        e = r.get("error_pct")
        trows.append([str(r.get("paper", DASH)), str(r.get("system", DASH)), str(r.get("nodes", DASH)),
                      str(r.get("batch", DASH)),
                      _num(r["published_s"] / 60, 1) if time_row and r.get("published_s") is not None else DASH,
                      _num(r["predicted_s"] / 60, 1) if time_row and r.get("predicted_s") is not None else DASH,
                      _num(r.get("published_images_per_s"), 0) if not time_row else DASH,
                      _num(r.get("predicted_images_per_s"), 0) if not time_row else DASH,
                      Cell(_pct(e, True), _err_class(e) if r.get("role") == "validation" else "muted"),
                      str(r.get("role", DASH))])
    s.blocks.append(Table(["paper", "system", "nodes", "batch (global, images)", "published time (min)",
                           "predicted time (min)", "published (images/s)", "predicted (images/s)", "error (%)",
                           "role"], trows, align="llrrrrrrrl",
                          caption="A row compares either the time to train (minutes; + = predicted slower) or, when "
                                  "the paper gives no time, the throughput (images/s; + = predicted faster)."))
    s.blocks.append(Figure("published", "published vs predicted, signed error per row",
                           "Signed error per published row, in the order of the table."))
    skipped = pub.get("skipped") or []
    if skipped:
        s.blocks.append(f"**{len(skipped)} timed rows skipped**, with the reason:")
        s.blocks.append(Table(["row", "paper", "hardware", "reason"],
                              [[str(k.get("row", DASH)), str(k.get("paper", DASH)), str(k.get("hardware", DASH)),
                                str(k.get("reason", DASH))] for k in skipped], align="llll"))
    return s


def _emulated_section(doc: Mapping[str, Any]) -> Section:
    """Predicted against measured on the emulated cluster (``benchmarks/bench_emulated.py --out FILE``)."""
    s = Section("emulated", "9. Emulated cluster: shaped links between network namespaces")
    summ = doc.get("summary") or {}
    s.blocks.append("Ranks in separate network namespaces (`perfmodel cluster up`), MPICH over TCP through "
                    "links with a set rate and one-way delay (a single switch, or a two-level tree with an "
                    "oversubscribed uplink). Measured: the executor's allreduce benchmark per algorithm and "
                    "size, and training iterations; predicted: the `emulated` system spec that `cluster up` "
                    "wrote from its link calibration"
                    + (" (a line fitted to the measured time of one exchange per message size, and, at every "
                       "inter-node step of a collective, what the measurement at that step's size differs from "
                       "the line: `perfmodel.network.exchange_residual_s`"
                       + ("; on 3 or more hosts the ring's steps are priced at the measured time of one ring step "
                          "per message size: `perfmodel.network.ring_residual_s`"
                          if any((e.get("measured_link") or {}).get("ring_sizes") for e in doc.get("results", []))
                          else "") + ")."
                       if any((e.get("measured_link") or {}).get("sizes") for e in doc.get("results", [])) else "."))
    rows = []
    by_opt = summ.get("iterations_by_optimizer") or {}
    for label, a in ([("allreduce >= 1 MiB", summ.get("allreduce_1MiB_and_above")),
                      ("allreduce >= 1 MiB, networks this machine cannot drive (excluded above)",
                       summ.get("saturated_allreduce_1MiB_and_above")),
                      ("training iterations", summ.get("iterations")),
                      ("training iterations, without the speed factor", summ.get("iterations_unscaled"))]
                     + ([(f"training iterations, {o}", v) for o, v in by_opt.items()] if len(by_opt) > 1 else [])):
        a = a or {}
        if a.get("count"):
            within = a.get("within_10pct")
            rows.append([label, str(a["count"]), _pct(a.get("mean_abs_pct")), _pct(a.get("median_abs_pct")),
                         _pct(a.get("max_abs_pct")), f"{within} of {a['count']}" if within is not None else DASH])
    if rows:
        s.blocks.append(Table(["comparison", "points", "mean |error| (%)", "median |error| (%)", "max |error| (%)",
                               "within ±10 %"], rows))
    nets = []
    for e in doc.get("results", []):
        al = e.get("allreduce") or []
        big = [abs(r["error_pct"]) for r in al if r.get("bytes", 0) >= (1 << 20)]
        its = [abs(r["error_pct"]) for r in e.get("iterations") or []]
        ml = e.get("measured_link") or {}
        nets.append([e.get("description", "?"),
                     f"{ml['rate_Bps'] * 8 / 1e9:.2f} Gbit/s, {ml['latency_s'] * 1e6:.0f} us" if ml.get("rate_Bps") else DASH,
                     _pct(sum(big) / len(big)) if big else DASH, _pct(max(big)) if big else DASH,
                     _pct(sum(its) / len(its)) if its else DASH,
                     "error: " + e["error"] if e.get("error") else "; ".join(
                         x for x in ("saturated" if e.get("saturated") else "", _lateness_note(e)) if x)])
    if nets:
        s.blocks.append(Table(["network", "link calibration", "allreduce mean |err| (%)", "allreduce max |err| (%)",
                               "iteration mean |err| (%)", "note"], nets, align="llrrrl", css="compact"))
    s.blocks.append(Figure("emulated", "Emulated cluster: predicted against measured",
                           "Left: allreduce time per algorithm and size (1 MiB and above); right: training "
                           "iterations. The line is y = x, the band ±10 %; hollow markers: networks this machine "
                           "cannot drive at the configured rate."))
    return s


def _lateness_note(entry: Mapping[str, Any]) -> str:
    """How late the emulated cluster's switch was during the allreduce benchmark (files from 2026-12-07 22:50
    on record it: benchmarks/bench_emulated.py), as a note; empty when not recorded."""
    late = entry.get("switch_allreduce") or {}
    if not late.get("frames"):
        return ""
    return (f"switch late {late['late_mean_s'] * 1e6:.0f} us on average, "
            f"{100 * late['late_over_100us_share']:.0f} % of frames over 100 us")


def _config_section(results) -> Section:
    s = Section("configurations", "8. Every configuration")
    rows = []
    any_rep = any(((r.get("measurement") or {}).get("noise") or {}).get("repeat_pct") is not None for r in results)
    for r in _tables_rows(results):
        p = r["point"]
        meas = r.get("measurement") or {}
        alg = str(p.get("allreduce", DASH))
        used = meas.get("allreduce_algorithm")
        if used and used != alg:
            alg = f"{alg} → {used}"
        ea, es = _iter_err(r, "analytic"), _iter_err(r, "simulation")
        band = noise_band_pct(r)
        inside = DASH if band is None or ea is None else ("yes" if abs(ea) <= band + _EPS else "no")
        noise = (meas.get("noise") or {})
        row = [Cell(P.short_id(r), "id"), str(p["model"]), str(p["ranks"]), str(p["batch"]), str(p["optimizer"]), alg,
               f"{float(p.get('bucket_mb', 0)):g}", "yes" if p.get("overlap", True) else "no",
               _ms(meas.get("iteration_s")), _ms((r.get("prediction") or {}).get("iteration_s")),
               Cell(_pct(ea, True), _err_class(ea)), _ms((r.get("simulation") or {}).get("iteration_s")),
               Cell(_pct(es, True), _err_class(es)), _pct(noise.get("sem_pct"), digits=2)]
        if any_rep:
            row.append(_pct(noise.get("repeat_pct"), digits=2))
        row.append(Cell(inside, "good" if inside == "yes" else ""))
        rows.append(row)
    headers = ["configuration", "model", "ranks", "batch (global, images)", "optimizer", "allreduce algorithm",
               "bucket (MB)", "overlap", "measured (ms)", "analytic (ms)", "analytic error (%)", "simulated (ms)",
               "simulated error (%)", "noise, SEM (%)"]
    if any_rep:
        headers.append("noise, run-to-run (%)")
    headers.append("analytic within noise")
    align = "llrrlllr" + "r" * (len(headers) - 9) + "l"
    s.blocks.append(Table(headers, rows, align=align, css="compact",
                          caption="Times are mean seconds per iteration in ms (measured: slowest rank; of a point's runs, "
                                  "one in each pass over the matrix, the run with the median speed-normalised "
                                  "time). 'auto → mpi': the algorithm the run resolved 'auto' to. Within "
                                  "noise: |analytic error| ≤ max(2 × SEM, run-to-run)."))
    return s


def _setup_section(results) -> Section | None:
    for r in results:
        meas = r.get("measurement") or {}
        sw, m = meas.get("software") or {}, meas.get("machine") or {}
        if sw or m:
            s = Section("setup", "Measurement setup")
            items = []
            if m:
                bits = [m.get("hostname"), " ".join(str(m[k]) for k in ("system", "release", "machine") if m.get(k)),
                        m.get("processor"), f"{m['cpus']} CPUs" if m.get("cpus") else None,
                        f"{m['memory_bytes'] / 2**30:.1f} GiB memory" if m.get("memory_bytes") else None]
                items.append("machine: " + ", ".join(str(b) for b in bits if b))
            if sw:
                items.append("software: " + ", ".join(f"{k} {v}" for k, v in sw.items() if v is not None))
            cpr = sorted({str(x.get("measurement", {}).get("cores_per_rank")) for x in results
                          if x.get("measurement", {}).get("cores_per_rank") is not None})
            if cpr:
                items.append("cores per rank: " + ", ".join(cpr))
            s.blocks.append(("list", items))
            return s
    return None


def build_sections(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> list[Section]:
    """The report's sections (headline first), independent of the output format."""
    secs = [_headline(results, summary), _scatter(results), _component_section(results, summary),
            _scaling_section(results), _distribution_section(results),
            _tta_section(summary.get("time_to_accuracy")), _published_section(summary.get("published")),
            _config_section(results)]
    if summary.get("emulated"):
        secs.append(_emulated_section(summary["emulated"]))
    setup = _setup_section(results)
    return secs + ([setup] if setup else [])


def build_figures(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, by name (figures with nothing to draw are left out)."""
    makers: dict[str, Callable[[], bytes | None]] = {
        "predicted_vs_measured": lambda: P.png_predicted_vs_measured(results),
        "component_errors": lambda: P.png_component_errors(results),
        "scaling": lambda: P.png_scaling(results),
        "step_distributions": lambda: P.png_step_distributions(P.distribution_points(results)),
    }
    if summary.get("time_to_accuracy"):
        makers["time_to_accuracy"] = lambda: P.png_time_to_accuracy(summary["time_to_accuracy"])
    if summary.get("published"):
        makers["published"] = lambda: P.png_published(summary["published"])
    if summary.get("emulated"):
        makers["emulated"] = lambda: P.png_emulated(summary["emulated"])
    out = {}
    for name, make in makers.items():
        png = make()
        if png:
            out[name] = png
    return out


# ==========================================================================================================
# Markdown
# ==========================================================================================================
def _md_cell(c: Any) -> str:
    text = c.text if isinstance(c, Cell) else str(c)
    return text.replace("|", "\\|").replace("\n", " ")


def _align(t: Table) -> str:
    return t.align or ("l" + "r" * (len(t.headers) - 1))


def _md_table(t: Table) -> str:
    al = _align(t)
    lines = ["| " + " | ".join(_md_cell(h) for h in t.headers) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in al) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    return "\n".join(lines)


def render_markdown(sections: Sequence[Section], figures: Mapping[str, bytes], title: str = DEFAULT_TITLE,
                    generated: str = "") -> str:
    """The report as Markdown; figures are referenced as ``plots/<name>.png``."""
    out = [f"# {title}", ""]
    if generated:
        out += [f"*{generated}*", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, Table):
                out += [_md_table(b), ""]
            elif isinstance(b, Figure):
                if b.name in figures:
                    out += [f"![{b.alt}](plots/{b.name}.png)", "", f"*{b.caption}*", ""]
                else:
                    out += [f"*(no figure: nothing to draw for {b.alt})*", ""]
            elif b[0] == "note":
                out += ["> " + b[1], ""]
            elif b[0] == "list":
                out += [f"- {item}" for item in b[1]] + [""]
            # "cards" are an HTML rendering of the headline table: nothing to add in Markdown
    return "\n".join(out).rstrip() + "\n"


# ==========================================================================================================
# HTML
# ==========================================================================================================
_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde1e8; --accent:#1f3b73; --bg:#ffffff; --soft:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--soft); color:var(--fg);
  font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 48px; background:var(--bg); min-height:100vh;
  box-shadow:0 0 0 1px var(--line); }
h1 { font-size:26px; margin:0 0 4px; color:var(--accent); }
h2 { font-size:19px; margin:36px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); color:var(--accent); }
p { margin:8px 0; }
.generated { color:var(--muted); font-size:12.5px; margin-bottom:16px; }
nav { font-size:13px; margin:8px 0 6px; display:flex; flex-wrap:wrap; gap:4px 16px; }
nav a { color:var(--accent); text-decoration:none; white-space:nowrap; }
nav a:hover { text-decoration:underline; }
code { font:12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  background:var(--soft); padding:1px 4px; border-radius:3px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(170px, 1fr)); gap:12px; margin:14px 0 16px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; background:var(--soft); }
.card .label { font-size:12px; color:var(--muted); text-transform:uppercase; letter-spacing:.03em; }
.card .value { font-size:26px; font-weight:650; color:var(--accent); margin:2px 0; font-variant-numeric:tabular-nums; }
.card .sub { font-size:12px; color:var(--muted); }
.note { border-left:4px solid #e0a040; background:#fff8ec; padding:10px 14px; margin:12px 0;
  border-radius:0 6px 6px 0; }
.tablewrap { overflow-x:auto; margin:10px 0 4px; }
table { border-collapse:collapse; font-size:12.5px; font-variant-numeric:tabular-nums; }
th, td { padding:4px 9px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef1f6; font-weight:600; text-align:left; vertical-align:bottom; }
tbody tr:nth-child(even) td { background:#fafbfc; }
td.r, th.r { text-align:right; }
td.l, th.l { text-align:left; }
td.good { color:#1e7b34; font-weight:600; }
td.fair { color:#a86400; font-weight:600; }
td.poor { color:#b3261e; font-weight:600; }
td.muted { color:var(--muted); }
table.compact { font-size:11.5px; }
table.compact th, table.compact td { padding:3px 6px; }
td.id { font:11px/1.35 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace;
  min-width:215px; }
.caption, figcaption { color:var(--muted); font-size:12.5px; margin:4px 0 10px; max-width:800px; }
figure { margin:14px 0; }
figure img { display:block; width:800px; max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
ul { margin:6px 0; padding-left:22px; }
li { margin:2px 0; font-size:13px; }
@media (max-width:760px) { .cards { grid-template-columns:repeat(2, 1fr); } main { padding:16px; } }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.dataset.plots = ok + "/" + imgs.length;
});
"""


def _inline(text: str) -> str:
    """Escape ``text`` and render the Markdown subset used in the report (``**bold**``, ``*em*``, ``code``)."""
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", t)
    return t


def _html_table(t: Table) -> str:
    al = _align(t)
    head = "".join(f'<th class="{a}">{html.escape(h)}</th>' for h, a in zip(t.headers, al))
    body = []
    for row in t.rows:
        cells = []
        for c, a in zip(row, al):
            text, cls = (c.text, c.cls) if isinstance(c, Cell) else (str(c), "")
            cells.append(f'<td class="{a}{" " + cls if cls else ""}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = f' class="{t.css}"' if t.css else ""
    out = (f'<div class="tablewrap"><table{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
           "</table></div>")
    if t.caption:
        out += f'<p class="caption">{_inline(t.caption)}</p>'
    return out


def render_html(sections: Sequence[Section], figures: Mapping[str, bytes], title: str = DEFAULT_TITLE,
                generated: str = "") -> str:
    """The report as one self-contained HTML page (figures as base64 PNG data URIs, inline CSS and script)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head><body><main>",
             f"<h1>{html.escape(title)}</h1>"]
    if generated:
        parts.append(f'<div class="generated">{_inline(generated)}</div>')
    parts.append("<nav>" + "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections) + "</nav>")
    for s in sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, str):
                parts.append(f"<p>{_inline(b)}</p>")
            elif isinstance(b, Table):
                parts.append(_html_table(b))
            elif isinstance(b, Figure):
                if b.name in figures:
                    data = base64.b64encode(figures[b.name]).decode("ascii")
                    parts.append(f'<figure><img alt="{html.escape(b.alt)}" width="800" '
                                 f'src="data:image/png;base64,{data}">'
                                 f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
                else:
                    parts.append(f'<p class="caption">(no figure: nothing to draw for {html.escape(b.alt)})</p>')
            elif b[0] == "note":
                parts.append(f'<div class="note">{_inline(b[1])}</div>')
            elif b[0] == "list":
                parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "cards":
                parts.append('<div class="cards">' + "".join(
                    f'<div class="card"><div class="label">{html.escape(lab)}</div>'
                    f'<div class="value">{html.escape(val)}</div><div class="sub">{html.escape(sub)}</div></div>'
                    for lab, val, sub in b[1]) + "</div>")
        parts.append("</section>")
    parts += ["</main>", f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


# ==========================================================================================================
# Writing
# ==========================================================================================================
def _atomic_write(path: Path, data: str | bytes) -> Path:
    return atomic_write(path, data)


def write_report(out_dir: str | os.PathLike, results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                 title: str = DEFAULT_TITLE) -> dict[str, str]:
    """Write ``out_dir/report.md`` (with ``out_dir/plots/*.png``) and the self-contained
    ``out_dir/report.html``.

    Parameters
    ----------
    out_dir : folder to write into (created if missing).
    results : point results as written by :func:`validation.loop.compare_point`.
    summary : :func:`validation.loop.summary_of` of those results, optionally with ``time_to_accuracy``
        and ``published`` (the dict of :func:`validation.published.validate_published`).
    title : the report's title.

    Returns
    -------
    ``{"markdown": path, "html": path}`` (strings).
    """
    out = Path(out_dir)
    results = list(results)
    sections = build_sections(results, summary)
    figures = build_figures(results, summary)
    for name, png in figures.items():
        _atomic_write(out / "plots" / f"{name}.png", png)
    generated = (f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from {len(results)} point "
                 "results; errors are 100 (predicted − measured) / measured.")
    md = _atomic_write(out / "report.md", render_markdown(sections, figures, title, generated))
    page = _atomic_write(out / "report.html", render_html(sections, figures, title, generated))
    return {"markdown": str(md), "html": str(page)}
