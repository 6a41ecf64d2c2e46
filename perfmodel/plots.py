"""Plots of a sweep (PNG, matplotlib with the Agg backend, imported only when a plot is drawn).

- ``scaling.png``: images/s (left) and time to train (right) against nodes, log-log, one line per
  configuration that is not a node count (batch, optimizer, and whichever of system, algorithm, precision,
  bucket size and overlap vary in the sweep). Lines follow the batch dimension of the sweep: a fixed global
  batch (strong scaling) or a fixed per-device batch (weak scaling).
- ``breakdown.png``: per-iteration time split into compute, exposed communication, optimizer and input
  pipeline, one stacked bar per node count, for one slice of the sweep (the first system, optimizer,
  algorithm, precision, bucket size and overlap, and the largest batch; stated in the title), with the
  hidden part of communication outlined above the bars.

Files are written atomically (temporary file + ``os.replace``).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from hardware.errors import ConfigError

__all__ = ["write_sweep_plots", "plot_scaling", "plot_breakdown", "MAX_LINES"]

#: at most this many lines in the scaling plot (the rest are left out and counted in the title)
MAX_LINES = 24

_VARYING = ("system", "optimizer", "allreduce", "precision", "bucket_mb", "overlap")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    from perfmodel.sweep import atomic_write
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write(path, buf.getvalue())


def _ok(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status") == "ok" and r.get("time_to_train_s") is not None]


def _batch_key(rows: Sequence[Mapping[str, Any]]) -> str:
    """``global_batch`` when every (system, node count) of the sweep has the same global batches (a list
    of global batches was swept), else ``per_device_batch`` (the global batch scaled with the ranks)."""
    sets: dict = {}
    for r in rows:
        sets.setdefault((r.get("system"), r.get("nodes")), set()).add(r.get("global_batch"))
    return "global_batch" if len({frozenset(v) for v in sets.values()}) <= 1 else "per_device_batch"


def plot_scaling(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, batch_key: str | None = None) -> Path:
    """Scaling curves of the ``ok`` rows (see the module docstring); returns the path written.
    ``batch_key`` (``"global_batch"`` or ``"per_device_batch"``) names what stays fixed along a line;
    default: inferred from the rows."""
    plt = _pyplot()
    ok = _ok(rows)
    bkey = batch_key or _batch_key(rows)
    varying = [k for k in _VARYING if len({r.get(k) for r in ok}) > 1]
    lines: dict[tuple, list] = {}
    for r in ok:
        lines.setdefault(tuple(r.get(k) for k in varying) + (r[bkey],), []).append(r)
    keys = list(lines)
    left_out = max(0, len(keys) - MAX_LINES)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for key in keys[:MAX_LINES]:
        pts = sorted(lines[key], key=lambda r: r["nodes"])
        x = [r["nodes"] for r in pts]
        label = ", ".join([str(v) for v in key[:-1]] + [f"{'pdb' if bkey == 'per_device_batch' else 'B'}={key[-1]}"])
        marker = "o" if len(pts) > 1 else "s"
        ax1.plot(x, [r["images_per_s"] for r in pts], marker=marker, label=label)
        ax2.plot(x, [r["time_to_train_s"] / 3600 for r in pts], marker=marker, label=label)
    for ax, ylabel in ((ax1, "images/s"), (ax2, "time to train (h)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("nodes")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    what = "per-device batch (weak scaling)" if bkey == "per_device_batch" else "global batch (strong scaling)"
    title = f"Scaling, one line per {what}" + (f" — {left_out} more lines not drawn" if left_out else "")
    if not ok:
        title = "Scaling: no feasible configuration in the sweep"
    fig.suptitle(title)
    if keys:
        ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_breakdown(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                   batch_key: str | None = None) -> Path:
    """Stacked per-iteration time breakdown per node count for one slice of the sweep; returns the path."""
    plt = _pyplot()
    ok = _ok(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len({r["nodes"] for r in ok}) + 3), 5))
    title = "Per-iteration time breakdown: no feasible configuration in the sweep"
    if ok:
        first = {k: ok[0].get(k) for k in _VARYING}
        sl = [r for r in ok if all(r.get(k) == v for k, v in first.items())]
        bkey = batch_key or _batch_key(rows)
        bval = max(r[bkey] for r in sl)
        sl = sorted((r for r in sl if r[bkey] == bval), key=lambda r: r["nodes"])
        labels = [str(r["nodes"]) for r in sl]
        bottom = [0.0] * len(sl)
        parts = (("compute_s", "compute", "#4C72B0"), ("comm_exposed_s", "exposed communication", "#DD8452"),
                 ("optimizer_s", "optimizer", "#55A868"), ("io_s", "input pipeline", "#8172B3"))
        for key, label, color in parts:
            vals = [1e3 * (r[key] or 0.0) for r in sl]
            ax.bar(labels, vals, bottom=bottom, label=label, color=color)
            bottom = [b + v for b, v in zip(bottom, vals)]
        hidden = [1e3 * max(0.0, (r["comm_total_s"] or 0.0) - (r["comm_exposed_s"] or 0.0)) for r in sl]
        if any(h > 0 for h in hidden):
            ax.bar(labels, hidden, bottom=bottom, label="hidden communication (overlapped)", fill=False,
                   edgecolor="#DD8452", hatch="//", linewidth=0.8)
        ax.set_xlabel("nodes")
        ax.set_ylabel("ms per iteration")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        desc = ", ".join(f"{k}={first[k]}" for k in _VARYING)
        batch = f"{'per-device' if bkey == 'per_device_batch' else 'global'} batch {bval}"
        title = f"Per-iteration time by node count ({batch})\n{desc}"
    ax.set_title(title, fontsize=9)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def write_sweep_plots(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                      batch_key: str | None = None) -> list[Path]:
    """Write ``scaling.png`` and ``breakdown.png`` for sweep ``rows`` into ``out_dir`` (created if missing).
    ``batch_key``: ``"global_batch"`` or ``"per_device_batch"`` (what the sweep held fixed; default
    inferred from the rows)."""
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--plot", "plot", str(d), f"cannot create the directory: {exc.strerror or exc}") from None
    return [plot_scaling(rows, d / "scaling.png", batch_key), plot_breakdown(rows, d / "breakdown.png", batch_key)]
