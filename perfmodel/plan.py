"""Capacity planning over a sweep: the cheapest configuration (node-hours) that meets a deadline, the fastest
configuration within a node-hour budget, and the Pareto front of time to train against node-hours.

Definitions (over the rows of a sweep whose ``status`` is ``ok``; see :mod:`perfmodel.sweep`):

- cost: ``node_hours = nodes * time_to_train_s / 3600`` (whole nodes are charged);
- *cheapest meeting the deadline*: least node-hours among rows with ``time_to_train_s <= deadline_s``
  (ties: the faster, then fewer nodes, then grid order);
- *fastest within the budget*: least time to train among rows with ``node_hours <= budget`` (ties: the
  cheaper, then fewer nodes, then grid order);
- *Pareto front*: the rows that no other row dominates, where a row dominates another when it is at least
  as good in both time to train and node-hours and strictly better in one. Rows equal in both are both on
  the front. The front is sorted by time to train (so node-hours decrease along it); it contains the
  global fastest and the global cheapest configuration.

When no row qualifies the answer is None with a reason (the command prints it and exits 0: an empty answer
is an answer, not an error). A malformed deadline or budget is an input error (ConfigError, exit 2).
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

from hardware.errors import ConfigError

__all__ = ["parse_duration", "parse_budget", "format_duration", "cheapest_meeting_deadline",
           "fastest_within_budget", "pareto_front", "make_plan", "plan"]

_UNITS = {
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_COMPONENT = re.compile(rf"\s*({_NUMBER})\s*([a-z]+)\s*")
_DURATION_HINT = "expected a duration such as 30min, 2h, 90s, 1h30m, 1.5h or a number of seconds"


def parse_duration(value: Any, source: str = "--deadline", field: str = "deadline") -> float:
    """Seconds in ``value``: a number of seconds (``5400``, ``"5400"``) or components with units, largest
    first or not (``"30min"``, ``"2h"``, ``"90s"``, ``"1h30m"``, ``"1.5h"``, ``"2d 4h"``; units d, h, m/min,
    s/sec and their long forms; ``m`` is minutes).

    Raises
    ------
    ConfigError
        ``ConfigError(source, field, value, reason)`` when ``value`` is not such a duration or is not > 0.
    """
    if isinstance(value, bool):
        raise ConfigError(source, field, value, _DURATION_HINT)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        else:
            pos, seconds, seen = 0, 0.0, set()
            for m in _COMPONENT.finditer(text):
                if m.start() != pos:
                    break
                unit = m.group(2)
                if unit not in _UNITS:
                    raise ConfigError(source, field, value, f"unknown unit '{unit}'; {_DURATION_HINT}")
                if _UNITS[unit] in seen:
                    raise ConfigError(source, field, value, f"unit '{unit}' given twice; {_DURATION_HINT}")
                seen.add(_UNITS[unit])
                seconds += float(m.group(1)) * _UNITS[unit]
                pos = m.end()
            if not text or pos != len(text) or not seen:
                raise ConfigError(source, field, value, _DURATION_HINT)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(source, field, value, "must be a duration > 0")
    return seconds


def parse_budget(value: Any, source: str = "--budget-node-hours", field: str = "budget_node_hours") -> float:
    """Node-hours in ``value`` (a finite number > 0); ConfigError otherwise."""
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(source, field, value, "must be a number of node-hours > 0")
    return x


def format_duration(seconds: float) -> str:
    """``3h 05m 20s`` / ``12m 04s`` / ``42.0s``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}h {m:02d}m"
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _ok(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    return [(i, r) for i, r in enumerate(rows) if r.get("status", "ok") == "ok"
            and r.get("time_to_train_s") is not None and r.get("node_hours") is not None
            and math.isfinite(r["time_to_train_s"]) and math.isfinite(r["node_hours"])]


def _describe(r: Mapping[str, Any]) -> str:
    parts = [str(r.get("system", "?")), f"{r.get('nodes')} nodes", f"batch {r.get('global_batch')}",
             str(r.get("optimizer", "")), str(r.get("allreduce", ""))]
    return ", ".join(p for p in parts if p)


def cheapest_meeting_deadline(rows: Sequence[Mapping[str, Any]], deadline_s: float
                              ) -> tuple[Mapping[str, Any] | None, str | None]:
    """The row with the fewest node-hours among those finishing within ``deadline_s`` seconds.

    Returns ``(row, None)``, or ``(None, reason)`` when no row qualifies.
    """
    ok = _ok(rows)
    if not ok:
        return None, "no feasible configuration in the grid"
    meet = [(r["node_hours"], r["time_to_train_s"], r.get("nodes", 0), i, r) for i, r in ok
            if r["time_to_train_s"] <= deadline_s]
    if not meet:
        fastest = min(ok, key=lambda ir: (ir[1]["time_to_train_s"], ir[1]["node_hours"], ir[0]))[1]
        return None, (f"no configuration meets the deadline of {format_duration(deadline_s)}: the fastest in the "
                      f"grid takes {format_duration(fastest['time_to_train_s'])} ({_describe(fastest)})")
    return min(meet, key=lambda t: t[:4])[4], None


def fastest_within_budget(rows: Sequence[Mapping[str, Any]], budget_node_hours: float
                          ) -> tuple[Mapping[str, Any] | None, str | None]:
    """The row with the shortest time to train among those costing at most ``budget_node_hours``.

    Returns ``(row, None)``, or ``(None, reason)`` when no row qualifies.
    """
    ok = _ok(rows)
    if not ok:
        return None, "no feasible configuration in the grid"
    within = [(r["time_to_train_s"], r["node_hours"], r.get("nodes", 0), i, r) for i, r in ok
              if r["node_hours"] <= budget_node_hours]
    if not within:
        cheapest = min(ok, key=lambda ir: (ir[1]["node_hours"], ir[1]["time_to_train_s"], ir[0]))[1]
        return None, (f"no configuration fits the budget of {budget_node_hours:g} node-hours: the cheapest in the "
                      f"grid costs {cheapest['node_hours']:.4g} node-hours ({_describe(cheapest)})")
    return min(within, key=lambda t: t[:4])[4], None


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows not dominated in (time to train, node-hours), sorted by time to train (then grid order)."""
    ok = sorted(_ok(rows), key=lambda ir: (ir[1]["time_to_train_s"], ir[1]["node_hours"], ir[0]))
    front: list[Mapping[str, Any]] = []
    best_nh = math.inf
    for _, r in ok:
        t, nh = r["time_to_train_s"], r["node_hours"]
        if nh < best_nh:
            front.append(r)
            best_nh = nh
        elif front and nh == best_nh and t == front[-1]["time_to_train_s"] and nh == front[-1]["node_hours"]:
            front.append(r)   # equal in both to a front point: not dominated either
    return front


def make_plan(rows: Sequence[Mapping[str, Any]], deadline_s: float | None = None,
              budget_node_hours: float | None = None) -> dict[str, Any]:
    """The plan over ``rows`` (sweep rows as dicts): the JSON object ``perfmodel plan --json`` prints.

    Keys: ``deadline_s``, ``budget_node_hours``, ``cheapest_meeting_deadline`` (row or None),
    ``fastest_within_budget`` (row or None), ``pareto_front`` (rows), ``reason`` (why an asked-for answer is
    None, else None), ``reasons`` (per answer), ``configs`` (rows considered) and ``feasible`` (rows ok).
    """
    out: dict[str, Any] = {"deadline_s": deadline_s, "budget_node_hours": budget_node_hours,
                           "cheapest_meeting_deadline": None, "fastest_within_budget": None}
    reasons: dict[str, str] = {}
    if deadline_s is not None:
        row, why = cheapest_meeting_deadline(rows, deadline_s)
        out["cheapest_meeting_deadline"] = dict(row) if row is not None else None
        if why:
            reasons["cheapest_meeting_deadline"] = why
    if budget_node_hours is not None:
        row, why = fastest_within_budget(rows, budget_node_hours)
        out["fastest_within_budget"] = dict(row) if row is not None else None
        if why:
            reasons["fastest_within_budget"] = why
    out["pareto_front"] = [dict(r) for r in pareto_front(rows)]
    out["reason"] = "; ".join(reasons.values()) or None
    out["reasons"] = reasons
    out["configs"] = len(rows)
    out["feasible"] = len(_ok(rows))
    return out


def plan(grid, deadline_s: float | None = None, budget_node_hours: float | None = None,
         **sweep_options: Any) -> dict[str, Any]:
    """Sweep ``grid`` (:class:`perfmodel.sweep.SweepGrid`) and plan over it (see :func:`make_plan`);
    ``sweep_options`` go to :func:`perfmodel.sweep.run_sweep` (``workers``, ``executor``, ``progress``)."""
    from perfmodel.sweep import run_sweep
    result = run_sweep(grid, **sweep_options)
    return make_plan(result.rows(), deadline_s, budget_node_hours)
