"""Figures of the validation report, returned as PNG bytes (matplotlib, Agg backend, imported only when a
figure is drawn, so importing this module costs nothing).

Every figure is ``FIG_WIDTH_IN`` inches wide and rendered at ``DPI`` dots per inch (twice the 100 px/inch of
the report's layout, so that it stays sharp on high-density screens); the HTML report shows it 800 px wide.
A figure function returns ``None`` when there is nothing to draw (no family with two rank counts, no
distribution samples, ...); the report then says so in words.

Inputs are point results as written by :mod:`validation.loop` (keys ``id``, ``point``, ``prediction``,
``simulation``, ``measurement``, ``errors``), the ``time_to_accuracy`` block of the summary, and the dict
of :func:`validation.published.validate_published`. Times are plotted in milliseconds (iterations) or in
the unit named on the axis (time to accuracy, published runs); errors in percent, signed
``100 (predicted - measured) / measured`` (positive: the model is pessimistic/slow).
"""
from __future__ import annotations

import io
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "DPI", "FIG_WIDTH_IN", "COMPONENT_LABELS", "short_id", "per_rank_batch", "images_per_s", "time_unit",
    "scaling_families", "representative", "distribution_points", "percentile",
    "png_predicted_vs_measured", "png_component_errors", "png_scaling", "png_step_distributions",
    "png_time_to_accuracy", "png_published",
]

#: rendering resolution (dots per inch); figures are FIG_WIDTH_IN * DPI pixels wide
DPI = 200
#: width of every figure in inches (800 CSS px at 100 px per inch)
FIG_WIDTH_IN = 8.0
#: component -> label used in figures and tables (keys of validation.errors.COMPONENTS)
COMPONENT_LABELS: dict[str, str] = {
    "iteration": "iteration (whole step)",
    "compute": "compute (fwd + bwd)",
    "comm_total": "communication, total",
    "comm_exposed": "communication, exposed",
    "optimizer": "optimizer step",
}
_COMPONENT_COLORS = {"iteration": "#1f3b73", "compute": "#4C72B0", "comm_total": "#DD8452",
                     "comm_exposed": "#C44E52", "optimizer": "#55A868"}
_RANK_COLORS = {1: "#4C72B0", 2: "#DD8452", 4: "#55A868", 8: "#C44E52", 16: "#8172B3"}
_MEASURED = "#1f3b73"
_ANALYTIC = "#DD8452"
_SIMULATED = "#55A868"
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "figure.facecolor": "white",
    "axes.facecolor": "white", "savefig.facecolor": "white",
}


# ==========================================================================================================
# Data helpers (shared with validation.report)
# ==========================================================================================================
def short_id(result: Mapping[str, Any]) -> str:
    """The point id without its trailing 8-hex-digit hash (``resnet20-r2-b64-sgd-auto-25MB-ov``)."""
    pid = str(result.get("id", "?"))
    head, _, tail = pid.rpartition("-")
    return head if head and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail) else pid


def per_rank_batch(result: Mapping[str, Any]) -> int:
    """Images per rank per iteration (global batch / ranks)."""
    p = result["point"]
    return int(p["batch"]) // max(1, int(p["ranks"]))


def images_per_s(result: Mapping[str, Any], which: str) -> float | None:
    """Training throughput (images/s) = global batch / iteration time, of ``which`` in
    ``("measurement", "prediction", "simulation")``; None when that record has no iteration time."""
    rec = result.get(which) or {}
    t = rec.get("iteration_s")
    return float(result["point"]["batch"]) / float(t) if t else None


def time_unit(max_seconds: float) -> tuple[str, float]:
    """A readable unit for durations up to ``max_seconds``: (name, seconds per unit)."""
    if max_seconds < 600:
        return "s", 1.0
    if max_seconds < 36_000:
        return "min", 60.0
    return "h", 3600.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation) of ``values``; None when empty."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return float(np.percentile(v, q)) if v.size else None


def _comm_key(result: Mapping[str, Any]) -> tuple:
    p = result["point"]
    return (p.get("allreduce") != "auto", not p.get("overlap", True), abs(float(p.get("bucket_mb", 25.0)) - 25.0),
            str(result.get("id")))


def representative(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Of several results at one rank count, the one with the default communication settings (``auto``
    algorithm, overlap on, bucket closest to 25 MB); ties broken by id."""
    return min(results, key=_comm_key)


def scaling_families(results: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int, str], dict[int, list]]:
    """Families (model, per-rank batch, optimizer) measured at two or more rank counts.

    Returns ``{(model, per_rank_batch, optimizer): {ranks: [results...]}}`` in sorted order; every result
    of a family at one rank count is kept (the curve goes through :func:`representative`).
    """
    fam: dict[tuple[str, int, str], dict[int, list]] = {}
    for r in results:
        if not (r.get("measurement") or {}).get("iteration_s"):
            continue
        p = r["point"]
        fam.setdefault((str(p["model"]), per_rank_batch(r), str(p["optimizer"])), {}).setdefault(
            int(p["ranks"]), []).append(r)
    return {k: dict(sorted(v.items())) for k, v in sorted(fam.items()) if len(v) >= 2}


def _has_samples(r: Mapping[str, Any]) -> bool:
    return bool((r.get("measurement") or {}).get("iteration_times_s")) and bool(
        (r.get("simulation") or {}).get("iteration_samples_s"))


def distribution_points(results: Sequence[Mapping[str, Any]], max_multi: int = 3) -> list[Mapping[str, Any]]:
    """The points whose step-time distributions the report shows: up to ``max_multi`` multi-rank points
    (largest rank counts first, preferring different models/optimizers and default communication
    settings) and, first in the list, the one-rank reference of the same model (same per-rank batch and
    optimizer when there is one)."""
    cand = [r for r in results if _has_samples(r)]
    multi = sorted((r for r in cand if int(r["point"]["ranks"]) > 1),
                   key=lambda r: (-int(r["point"]["ranks"]),) + _comm_key(r))
    chosen: list[Mapping[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for r in multi:  # first pass: one per (model, optimizer)
        key = (r["point"]["model"], r["point"]["optimizer"])
        if key not in seen and len(chosen) < max_multi:
            chosen.append(r)
            seen.add(key)
    for r in multi:  # second pass: fill up
        if len(chosen) >= max_multi:
            break
        if r not in chosen:
            chosen.append(r)
    singles = [r for r in cand if int(r["point"]["ranks"]) == 1]
    ref = None
    if singles:
        anchor = chosen[0] if chosen else singles[0]
        ref = min(singles, key=lambda r: (r["point"]["model"] != anchor["point"]["model"],
                                          per_rank_batch(r) != per_rank_batch(anchor),
                                          r["point"]["optimizer"] != anchor["point"]["optimizer"]) + _comm_key(r))
    return ([ref] if ref is not None else []) + chosen


# ==========================================================================================================
# Rendering
# ==========================================================================================================
def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _figure(height_in: float, **kw):
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig = plt.figure(figsize=(FIG_WIDTH_IN, height_in), layout="constrained", **kw)
    return plt, fig


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def _plain_log_ticks(ax, axis: str = "both") -> None:
    """Label a log axis with plain numbers (50, 100, 200, ...) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    for a in ([ax.xaxis, ax.yaxis] if axis == "both" else [ax.xaxis] if axis == "x" else [ax.yaxis]):
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.set_major_formatter(fmt)
        a.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _diagonal(ax, lo: float, hi: float, log: bool, labels: bool = False) -> None:
    """Predicted-against-measured axes: the y = x line with a +-10 % band, equal scales from ``lo`` to
    ``hi`` (log-log with plain tick labels when ``log``)."""
    line = np.geomspace(max(lo, 1e-9), hi, 200) if log else np.linspace(lo, hi, 200)
    ax.fill_between(line, 0.9 * line, 1.1 * line, color="#999999", alpha=0.18, lw=0,
                    label="±10 %" if labels else None)
    ax.plot(line, line, color="#555555", lw=1.0, label="y = x (perfect)" if labels else None)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")


def _wide(values: Sequence[float], ratio: float = 8.0) -> bool:
    v = [x for x in values if x and x > 0]
    return bool(v) and max(v) / min(v) > ratio


# ------------------------------------------------------------------------------------------------ scatter
def png_predicted_vs_measured(results: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Predicted vs measured iteration time (ms), one analytic and one simulated marker per configuration,
    coloured by rank count, with y = x and a +-10 % band; log-log when the times span more than 8x."""
    pts = [r for r in results if (r.get("measurement") or {}).get("iteration_s")]
    if not pts:
        return None
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        _, fig = _figure(6.2)
        ax = fig.add_subplot()
        meas = np.array([1e3 * r["measurement"]["iteration_s"] for r in pts])
        ana = np.array([1e3 * (r.get("prediction") or {}).get("iteration_s", np.nan) for r in pts], dtype=float)
        sim = np.array([1e3 * ((r.get("simulation") or {}).get("iteration_s") or np.nan) for r in pts], dtype=float)
        every = np.concatenate([meas, ana[np.isfinite(ana)], sim[np.isfinite(sim)]])
        lo, hi = float(every.min()), float(every.max())
        log = _wide(list(every))
        if log:
            lo, hi = lo / 1.4, hi * 1.4
        else:
            pad = 0.08 * (hi - lo or hi)
            lo, hi = max(0.0, lo - pad), hi + pad
        _diagonal(ax, lo, hi, log, labels=True)
        for m, a, s in zip(meas, ana, sim):  # tie the two predictions of one configuration together
            if np.isfinite(a) and np.isfinite(s):
                ax.plot([m, m], [a, s], color="#bbbbbb", lw=0.7, zorder=1)
        ranks = np.array([int(r["point"]["ranks"]) for r in pts])
        for k in sorted(set(ranks.tolist())):
            sel = ranks == k
            color = _RANK_COLORS.get(k, "#333333")
            ax.scatter(meas[sel], ana[sel], marker="o", s=42, color=color, edgecolor="white", lw=0.6, zorder=3,
                       label=f"analytic, {k} rank{'s' if k > 1 else ''}")
            ax.scatter(meas[sel], sim[sel], marker="^", s=46, facecolor="none", edgecolor=color, lw=1.3,
                       zorder=3, label=f"simulated, {k} rank{'s' if k > 1 else ''}")
        ax.set_xlabel("measured iteration time (ms)")
        ax.set_ylabel("predicted iteration time (ms)")
        ax.set_title(f"Predicted vs measured iteration time, {len(pts)} configurations"
                     + (" (log-log)" if log else "") + "\nabove the line: predicted slower than measured")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return _png(plt, fig)


# ------------------------------------------------------------------------------------- component errors
def png_component_errors(results: Sequence[Mapping[str, Any]], method: str = "analytic",
                         clip_pct: float = 300.0) -> bytes | None:
    """Horizontal grouped bars: per configuration, the signed error (%) of every scored component of
    ``method`` (``analytic`` or ``simulation``); bars beyond +-``clip_pct`` are clipped and labelled."""
    rows = [r for r in results if (r.get("errors") or {}).get(method)]
    if not rows:
        return None
    comps = [c for c in COMPONENT_LABELS
             if any((r["errors"][method].get(c) or {}).get("error_pct") is not None for r in rows)]
    if not comps:
        return None
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        _, fig = _figure(max(3.2, 1.4 + 0.26 * len(rows) * max(1.0, len(comps) / 4)))
        ax = fig.add_subplot()
        n = len(comps)
        h = 0.8 / n
        y0 = np.arange(len(rows))[::-1].astype(float)
        vals_all = []
        for j, c in enumerate(comps):
            ys, vals = [], []
            for y, r in zip(y0, rows):
                e = (r["errors"][method].get(c) or {}).get("error_pct")
                if e is None:
                    continue
                ys.append(y + 0.4 - (j + 0.5) * h)
                vals.append(float(e))
            vals_all += vals
            shown = np.clip(vals, -clip_pct, clip_pct)
            ax.barh(ys, shown, height=h * 0.92, color=_COMPONENT_COLORS[c], label=COMPONENT_LABELS[c])
            for y, v, s in zip(ys, vals, shown):
                if v != s:
                    ax.text(s, y, f" {v:+.0f} % ", va="center", ha="left" if v > 0 else "right", fontsize=6.5)
        ax.axvspan(-10, 10, color="#999999", alpha=0.15, lw=0, label="±10 %", zorder=0)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(y0, [short_id(r) for r in rows], fontsize=7)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="y", visible=False)
        big = max([abs(v) for v in vals_all] + [10.0])
        lim = min(big, clip_pct) * 1.12 + (25 if big > clip_pct else 0)
        ax.set_xlim(-lim if min(vals_all + [0]) < 0 else -lim * 0.15, lim)
        ax.set_xlabel("signed error (%)   (positive: predicted slower than measured)")
        what = "analytic model" if method == "analytic" else "simulation"
        fig.suptitle(f"Per-configuration error by component ({what}); "
                     "components measured below 2 ms per iteration are not scored", fontsize=9.5)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
        return _png(plt, fig)


# -------------------------------------------------------------------------------------------- scaling
def png_scaling(results: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Images/s vs ranks per family (model, per-rank batch, optimizer) with two or more rank counts: measured
    (solid), analytic (dashed), simulated (dotted); one panel per model. Other configurations of a family
    at the same rank count (other algorithm, bucket, overlap) are drawn as small unconnected markers."""
    fams = scaling_families(results)
    if not fams:
        return None
    models = sorted({k[0] for k in fams})
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        _, fig = _figure(0.6 + 3.4 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        cmap = plt.get_cmap("tab10")
        color_of = {k: cmap(i % 10) for i, k in enumerate(fams)}
        for ax, model in zip(axes.flat, models):
            all_ranks: set[int] = set()
            for key, by_rank in fams.items():
                if key[0] != model:
                    continue
                color = color_of[key]
                ranks = list(by_rank)
                all_ranks.update(ranks)
                reps = [representative(by_rank[k]) for k in ranks]
                label = f"{key[1]} img/rank, {key[2]}"
                ax.plot(ranks, [images_per_s(r, "measurement") for r in reps], "-o", color=color, lw=1.8, ms=5,
                        label=label)
                ax.plot(ranks, [images_per_s(r, "prediction") for r in reps], "--s", color=color, lw=1.2, ms=4,
                        mfc="white")
                sims = [images_per_s(r, "simulation") for r in reps]
                if all(s is not None for s in sims):
                    ax.plot(ranks, sims, ":^", color=color, lw=1.2, ms=4, mfc="white")
                for k, rs in by_rank.items():
                    others = [r for r in rs if r is not representative(rs)]
                    if others:
                        ax.scatter([k] * len(others), [images_per_s(r, "measurement") for r in others], marker="o",
                                   s=12, color=color, alpha=0.45, lw=0)
            ax.set_xscale("log", base=2)
            ticks = sorted(all_ranks)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_xlim(min(ticks) / 1.25, max(ticks) * 1.25)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("ranks")
            ax.set_ylabel("throughput (images/s)")
            ax.set_title(model)
            ax.legend(loc="best", frameon=False, fontsize=7)
        for ax in list(axes.flat)[len(models):]:
            ax.set_visible(False)
        from matplotlib.lines import Line2D
        style = [Line2D([], [], color="#444444", ls="-", marker="o", label="measured"),
                 Line2D([], [], color="#444444", ls="--", marker="s", mfc="white", label="analytic prediction"),
                 Line2D([], [], color="#444444", ls=":", marker="^", mfc="white", label="simulated prediction"),
                 Line2D([], [], color="#444444", ls="", marker="o", ms=4, alpha=0.45,
                        label="measured, other comm. settings")]
        fig.legend(handles=style, loc="outside lower center", ncol=4, frameon=False)
        fig.suptitle("Scaling: throughput vs ranks per (model, per-rank batch, optimizer)", fontsize=10)
        return _png(plt, fig)


# ------------------------------------------------------------------------------------ distributions
def png_step_distributions(points: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Empirical CDFs of the measured per-iteration times (slowest rank) and of the simulated samples, one
    panel per point (from :func:`distribution_points`), with p50 (dashed) and p99 (dotted) marked."""
    pts = [r for r in points if _has_samples(r)]
    if not pts:
        return None
    ncols = 2 if len(pts) > 1 else 1
    nrows = math.ceil(len(pts) / ncols)
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        _, fig = _figure(0.5 + 2.9 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, r in zip(axes.flat, pts):
            meas = np.sort(1e3 * np.asarray(r["measurement"]["iteration_times_s"], dtype=float))
            sim = np.sort(1e3 * np.asarray(r["simulation"]["iteration_samples_s"], dtype=float))
            for data, color, label in ((meas, _MEASURED, "measured"), (sim, _SIMULATED, "simulated")):
                y = np.arange(1, data.size + 1) / data.size
                p50, p99 = np.percentile(data, 50), np.percentile(data, 99)
                ax.step(np.concatenate([[data[0]], data]), np.concatenate([[0.0], y]), where="post", color=color,
                        lw=1.6, label=f"{label}, n = {data.size}\np50 {p50:,.1f} ms, p99 {p99:,.1f} ms")
                ax.axvline(p50, color=color, ls="--", lw=0.9)
                ax.axvline(p99, color=color, ls=":", lw=1.1)
            both = np.concatenate([meas, sim])
            if _wide(list(both), 4.0):
                ax.set_xscale("log")
                _plain_log_ticks(ax, "x")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("iteration time (ms)")
            ax.set_ylabel("fraction of iterations ≤ x")
            # a CDF leaves its lower-right corner empty
            ax.legend(loc="lower right", fontsize=6.8, framealpha=0.92, edgecolor="#cccccc")
            ranks = int(r["point"]["ranks"])
            ax.set_title(f"{short_id(r)}" + ("  (one-rank reference)" if ranks == 1 else ""), fontsize=8.5)
        for ax in list(axes.flat)[len(pts):]:
            ax.set_visible(False)
        fig.suptitle("Step-time distributions (CDF): measured vs simulated; dashed = p50, dotted = p99",
                     fontsize=10)
        return _png(plt, fig)


# ---------------------------------------------------------------------------------- time to accuracy
def _tta_label(row: Mapping[str, Any]) -> str:
    ranks = row.get("ranks")
    return f"B={row.get('batch')}, {row.get('optimizer')}\n{ranks} rank{'s' if ranks != 1 else ''}"


def png_time_to_accuracy(tta: Mapping[str, Any]) -> bytes | None:
    """Paired bars per row of the time-to-accuracy block: measured and predicted wall time to reach the
    target, the signed error written above; rows whose batch the convergence model was fitted on are
    hatched (in-sample)."""
    rows = [r for r in tta.get("rows", []) if r.get("measured_s") is not None or r.get("predicted_s") is not None]
    if not rows:
        return None
    unit, scale = time_unit(max([float(r.get("measured_s") or 0) for r in rows]
                                + [float(r.get("predicted_s") or 0) for r in rows]))
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        _, fig = _figure(4.4)
        ax = fig.add_subplot()
        x = np.arange(len(rows), dtype=float)
        w = 0.38
        meas = [float(r["measured_s"]) / scale if r.get("measured_s") is not None else 0.0 for r in rows]
        pred = [float(r["predicted_s"]) / scale if r.get("predicted_s") is not None else 0.0 for r in rows]
        fitted = [r.get("batch") in (r.get("fit_on") or []) for r in rows]
        ax.bar(x - w / 2, meas, w, color=_MEASURED)
        bars = ax.bar(x + w / 2, pred, w, color=_ANALYTIC)
        for b, f in zip(bars, fitted):
            if f:
                b.set_hatch("///")
                b.set_edgecolor("white")
        top = max(meas + pred + [1e-12])
        for xi, r, m, p in zip(x, rows, meas, pred):
            e = r.get("error_pct")
            if e is not None:
                ax.text(xi, max(m, p) + 0.02 * top, f"{e:+.1f} %", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, top * 1.15)
        ax.set_xticks(x, [_tta_label(r) for r in rows], fontsize=7.5)
        ax.grid(axis="x", visible=False)
        ax.set_ylabel(f"wall time to target ({unit})")
        from matplotlib.patches import Patch
        handles = [Patch(color=_MEASURED, label="measured"), Patch(color=_ANALYTIC, label="predicted")]
        if any(fitted):
            handles.append(Patch(facecolor=_ANALYTIC, hatch="///", edgecolor="white",
                                 label="predicted, batch in the convergence fit"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        target = tta.get("target_top1")
        tgt = ("" if target is None else f": top-1 ≥ {100 * target:.1f} %" if target <= 1
               else f": top-1 ≥ {target:g} %")
        fig.suptitle(f"Time to accuracy{tgt} — predicted vs measured (error above the bars)", fontsize=10)
        return _png(plt, fig)


# -------------------------------------------------------------------------------------------- published
def _pub_label(row: Mapping[str, Any]) -> str:
    paper = str(row.get("paper", "?")).split(" (")[0]
    if "," in paper and "et al" not in paper:  # "You, Zhang, Hsieh, ... 2018" -> "You et al. 2018"
        year = re.search(r"(19|20)\d\d", paper)
        paper = paper.split(",")[0] + " et al." + (f" {year.group(0)}" if year else "")
    if len(paper) > 26:
        paper = paper[:25] + "…"
    q = "img/s" if row.get("quantity") == "images_per_s" else "time"
    return f"{paper} · {row.get('system', '?')} ×{row.get('nodes', '?')} · B={row.get('batch', '?')} ({q})"


def png_published(published: Mapping[str, Any]) -> bytes | None:
    """Horizontal bars of the signed error (%) of every predicted published row (validation rows blue,
    calibration rows grey with grey labels), in table order, with the +-10 % band."""
    rows = [r for r in published.get("rows", []) if r.get("error_pct") is not None]
    if not rows:
        return None
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        _, fig = _figure(max(3.0, 1.3 + 0.24 * len(rows)))
        ax = fig.add_subplot()
        y = np.arange(len(rows))[::-1]
        err = np.array([float(r["error_pct"]) for r in rows])
        calib = [r.get("role", "validation") != "validation" for r in rows]
        colors = ["#AAAAAA" if c else "#4C72B0" for c in calib]
        ax.axvspan(-10, 10, color="#999999", alpha=0.15, lw=0, zorder=0)
        ax.barh(y, err, color=colors, height=0.7)
        ax.axvline(0, color="#333333", lw=0.8)
        for yi, e, c in zip(y, err, calib):
            ax.text(e, yi, f" {e:+.1f} % " if abs(e) >= 0.05 else " 0.0 % ", va="center",
                    ha="left" if e >= 0 else "right", fontsize=6.8, color="#777777" if c else "#222222")
        lo, hi = min(-12.0, float(err.min())), max(12.0, float(err.max()))
        pad = 0.18 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_yticks(y, [_pub_label(r) for r in rows], fontsize=7)
        for lab, c in zip(ax.get_yticklabels(), calib):
            if c:
                lab.set_color("#888888")
                lab.set_fontstyle("italic")
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("signed error (%)   (time: + = predicted slower; img/s: + = predicted faster)")
        from matplotlib.patches import Patch
        fig.legend(handles=[Patch(color="#4C72B0", label="validation row"),
                            Patch(color="#AAAAAA", label="calibration row (fitted, not scored)"),
                            Patch(color="#999999", alpha=0.3, label="±10 %")],
                   loc="outside lower center", ncol=3, frameon=False)
        med, mx = published.get("median_abs_error_pct"), published.get("max_abs_error_pct")
        if med is not None:
            fig.suptitle(f"Published results: median |error| {med:.1f} %, max {mx:.1f} % "
                         f"over {published.get('count', '?')} validation rows", fontsize=10)
        return _png(plt, fig)


# --------------------------------------------------------------------------------------- emulated cluster
_ALG_MARKERS = {"ring": "o", "recursive_doubling": "s", "halving_doubling": "D", "hierarchical": "v", "mpi": "^"}


def png_emulated(doc: Mapping[str, Any]) -> bytes | None:
    """Two panels from ``benchmarks/bench_emulated.py --out``: allreduce (>= 1 MiB; marker per algorithm,
    colour per link rate) and training iterations, predicted against measured (ms, log-log), y = x, +-10 %."""
    ar, it = [], []
    for e in doc.get("results", []):
        rate = float((e.get("network") or {}).get("link_gbps") or 0.0)
        sat = bool(e.get("saturated"))
        ar += [(r, rate, sat) for r in e.get("allreduce") or [] if r.get("bytes", 0) >= (1 << 20)]
        it += [(r, rate, sat) for r in e.get("iterations") or []]
    if not ar and not it:
        return None
    plt = _pyplot()
    rates = sorted({rate for _, rate, _ in ar + it})
    cmap = plt.get_cmap("viridis")
    color = {r: cmap(0.15 + 0.7 * i / max(1, len(rates) - 1)) for i, r in enumerate(rates)}
    with plt.rc_context(_STYLE):
        _, fig = _figure(4.6)
        axes = fig.subplots(1, 2)
        for ax, rows, title in ((axes[0], ar, "allreduce, 1 MiB and above"), (axes[1], it, "training iterations")):
            if not rows:
                ax.set_axis_off()
                continue
            meas = np.array([1e3 * r["measured_s"] for r, _, _ in rows])
            pred = np.array([1e3 * r["predicted_s"] for r, _, _ in rows])
            lo, hi = float(min(meas.min(), pred.min())) / 1.3, float(max(meas.max(), pred.max())) * 1.3
            _diagonal(ax, lo, hi, log=True)
            for (r, rate, sat), m, p in zip(rows, meas, pred):
                mk = _ALG_MARKERS.get(r.get("algorithm", ""), "o")
                c = color[rate]
                ax.scatter([m], [p], marker=mk, s=30, facecolor="none" if sat else c, edgecolor=c, lw=1.0, zorder=3)
            ax.set_xlabel("measured (ms)")
            ax.set_ylabel("predicted (ms)")
            ax.set_title(f"{title} ({len(rows)})")
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker="o", ls="", color=color[r], label=f"{r:g} Gbit/s") for r in rates]
        algs = sorted({r.get("algorithm") for r, _, _ in ar if r.get("algorithm") in _ALG_MARKERS})
        handles += [Line2D([], [], marker=_ALG_MARKERS[a], ls="", mfc="none", color="#333333", label=a.replace("_", " "))
                    for a in algs]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        return _png(plt, fig)
