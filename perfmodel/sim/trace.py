"""Chrome / Perfetto trace files (the JSON "Trace Event Format", viewable in ui.perfetto.dev and
chrome://tracing).

Every interval is a complete event (``"ph": "X"``) with ``ts`` and ``dur`` in microseconds, on a track
``(pid, tid)``: a process per rank (and one for the network), a thread per kind of activity; the intervals of one track
follow each other without overlapping (no nesting). Track and
process names are metadata events (``"ph": "M"``). Events are written sorted by ``(pid, tid, ts)``, so
timestamps are monotone on every track; the file is written atomically (temporary file + rename), so a
crash never leaves half a trace.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from perfmodel.atomic import atomic_write

__all__ = ["TraceWriter"]


class TraceWriter:
    """Collects trace events in seconds and writes them as Chrome trace JSON."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._meta: list[dict[str, Any]] = []
        self._named: set[tuple] = set()

    def name_process(self, pid: int, name: str, sort_index: int | None = None) -> None:
        """Name process ``pid`` (once)."""
        if ("p", pid) in self._named:
            return
        self._named.add(("p", pid))
        self._meta.append({"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": 0, "args": {"name": name}})
        self._meta.append({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": 0,
                           "args": {"sort_index": pid if sort_index is None else sort_index}})

    def name_thread(self, pid: int, tid: int, name: str) -> None:
        """Name track ``(pid, tid)`` (once)."""
        if ("t", pid, tid) in self._named:
            return
        self._named.add(("t", pid, tid))
        self._meta.append({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"name": name}})
        self._meta.append({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": tid,
                           "args": {"sort_index": tid}})

    def complete(self, name: str, cat: str, pid: int, tid: int, start_s: float, dur_s: float,
                 args: Mapping[str, Any] | None = None) -> None:
        """Add an interval of ``dur_s`` seconds starting at ``start_s`` (skipped when under a nanosecond)."""
        dur = round(dur_s * 1e6, 3)
        if not dur > 0:   # also drops intervals shorter than the nanosecond resolution of the file
            return
        ev: dict[str, Any] = {"name": name, "cat": cat, "ph": "X", "ts": round(start_s * 1e6, 3),
                              "dur": dur, "pid": pid, "tid": tid}
        if args:
            ev["args"] = dict(args)
        self._events.append(ev)

    def __len__(self) -> int:
        return len(self._events)

    def to_dict(self, other: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The trace as a JSON-ready dict (events sorted by track and time)."""
        events = sorted(self._events, key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
        # a track holds consecutive intervals: trim the sub-nanosecond overlaps that rounding to the file's
        # resolution can create, so that viewers never see partially overlapping slices
        for cur, nxt in zip(events, events[1:]):
            if (cur["pid"], cur["tid"]) == (nxt["pid"], nxt["tid"]) and cur["ts"] + cur["dur"] > nxt["ts"]:
                cur["dur"] = max(round(nxt["ts"] - cur["ts"], 3), 0.001)
        return {"traceEvents": self._meta + events, "displayTimeUnit": "ms", "otherData": dict(other or {})}

    def write(self, path: str | Path, other: Mapping[str, Any] | None = None) -> Path:
        """Write the trace to ``path`` atomically; returns the path."""
        path = Path(path)
        atomic_write(path, json.dumps(self.to_dict(other), separators=(",", ":")))
        return path
