"""Shared output helpers for subcommands: JSON printing and plain-text tables."""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Iterable, Sequence

__all__ = ["print_json", "format_table", "print_table", "fmt_num"]


def _default(obj: Any):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_json(obj: Any, file=None) -> None:
    """Print ``obj`` as indented JSON (NaN/inf become null)."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    text = json.dumps(clean(json.loads(json.dumps(obj, default=_default))), indent=2)
    print(text, file=file or sys.stdout)


def fmt_num(x: Any, digits: int = 4) -> str:
    """Compact human formatting: integers with thousands separators, floats with ``digits`` significant."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e7 or abs(x) < 1e-3):
            return f"{x:.{digits - 1}e}"
        return f"{x:,.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str], align: str | None = None) -> str:
    """Format rows as a fixed-width text table. ``align``: one of 'l'/'r' per column (default: numbers right)."""
    rows = [list(r) for r in rows]
    cells = [[fmt_num(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], (int, float)) and not isinstance(rows[0][i], bool)
                        else "l" for i in range(len(headers)))

    def line(vals):
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(vals, widths, align)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def print_table(rows, headers, align=None, file=None) -> None:
    print(format_table(rows, headers, align), file=file or sys.stdout)
