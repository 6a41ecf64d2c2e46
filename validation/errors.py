"""Prediction errors: per configuration and per component, with the measurement's own noise beside them.

For a component with predicted value ``p`` and measured value ``m`` (seconds per iteration):
``error_pct = 100 (p - m) / m`` (signed: positive = the model is slow/pessimistic) and
``ape = |error_pct|``. Over a set of configurations: ``mape`` (mean of ``ape``), ``max_ape`` and ``bias``
(mean of the signed errors). Components whose measured value is below a floor (communication of a
one-rank run, a refresh-free optimizer step of microseconds) are not scored: a percentage of nothing is
not information.

Waiting for the slowest rank: the executor's ranks wait for their partners inside the collective, so the
measured communication (total and exposed) contains that wait; the models book it as ``sync_wait_s``. The
predicted communication compared here is therefore the model's communication plus its ``sync_wait_s``.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["COMPONENTS", "component_errors", "error_stats", "summarise_errors", "noise_pct"]

#: component -> key in the predict/measure breakdown ("iteration" is the whole step)
COMPONENTS: dict[str, str] = {
    "iteration": "iteration_s",
    "compute": "compute_s",
    "comm_total": "comm_total_s",
    "comm_exposed": "comm_exposed_s",
    "optimizer": "optimizer_s",
}
#: components measured below this many seconds per iteration are not scored
FLOOR_S = 2e-3


def _value(rec: Mapping[str, Any], key: str) -> float:
    return float(rec["iteration_s"] if key == "iteration_s" else rec["breakdown"].get(key, 0.0))


def component_errors(predicted: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per component: predicted and measured seconds and the signed error in percent (None when not scored)."""
    out = {}
    wait = float(predicted.get("breakdown", {}).get("sync_wait_s") or 0.0)
    for name, key in COMPONENTS.items():
        p, m = _value(predicted, key), _value(measured, key)
        if name in ("comm_total", "comm_exposed"):
            p += wait
        scored = m >= FLOOR_S or name == "iteration"
        out[name] = {"predicted_s": p, "measured_s": m,
                     "error_pct": 100.0 * (p - m) / m if scored and m > 0 else None}
    return out


def noise_pct(iteration_times_s: Iterable[float], repeat_means_s: Iterable[float] = ()) -> dict[str, float | None]:
    """The measurement's own spread, in percent of its mean.

    ``cv_pct``: standard deviation of the measured iterations over their mean (iteration-to-iteration);
    ``robust_cv_pct``: the same from the median absolute deviation (1.4826 MAD / median), insensitive to a
    single outlier iteration (a late warm-up effect, a context switch);
    ``sem_pct``: standard error of the mean iteration time (what the mean itself is uncertain by);
    ``repeat_pct``: half the range of the means of repeated runs over their mean (run-to-run), when the
    point was run more than once.
    """
    t = np.asarray(list(iteration_times_s), dtype=float)
    reps = np.asarray(list(repeat_means_s), dtype=float)
    cv = float(100 * t.std(ddof=1) / t.mean()) if t.size > 1 else None
    sem = float(cv / math.sqrt(t.size)) if cv is not None else None
    rep = float(100 * (reps.max() - reps.min()) / 2 / reps.mean()) if reps.size > 1 else None
    med = float(np.median(t)) if t.size else 0.0
    robust = float(100 * 1.4826 * np.median(np.abs(t - med)) / med) if t.size > 1 and med > 0 else None
    return {"cv_pct": cv, "robust_cv_pct": robust, "sem_pct": sem, "repeat_pct": rep}


def error_stats(errors_pct: Iterable[float]) -> dict[str, Any]:
    """``n``, ``mape``, ``max_ape`` and ``bias`` (percent) of signed percent errors (None when there are none)."""
    e = np.asarray(list(errors_pct), dtype=float)
    return {"n": int(e.size), "mape": float(np.abs(e).mean()) if e.size else None,
            "max_ape": float(np.abs(e).max()) if e.size else None, "bias": float(e.mean()) if e.size else None}


def summarise_errors(points: Iterable[Mapping[str, Any]], method: str = "analytic") -> dict[str, dict[str, Any]]:
    """MAPE, max APE, bias and count per component over ``points`` (results of :mod:`validation.loop`)."""
    pts = list(points)
    return {name: error_stats(p["errors"][method][name]["error_pct"] for p in pts
                              if p.get("errors", {}).get(method, {}).get(name, {}).get("error_pct") is not None)
            for name in COMPONENTS}
