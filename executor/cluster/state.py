"""Where the emulated cluster keeps its state: one folder holding ``state.json`` (exactly what was created:
namespaces, the switch process, files written elsewhere), the hydra launcher script, the switch's
configuration, log and counters.

Folder: ``$TTT_CLUSTER_DIR``, else ``/run/ttt-perfmodel/cluster`` (``/run`` is cleared at boot, like the
namespaces themselves), else ``~/.cache/ttt-perfmodel/cluster`` when ``/run`` is not writable.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from perfmodel.atomic import write_json_atomic

__all__ = ["CLUSTER_DIR_ENV", "state_dir", "state_path", "load_state", "save_state", "clear_state_dir"]

#: environment variable naming the state folder
CLUSTER_DIR_ENV = "TTT_CLUSTER_DIR"
STATE_FILE = "state.json"


def state_dir() -> Path:
    """The state folder (see the module docstring); not created here."""
    env = os.environ.get(CLUSTER_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    run = Path("/run")
    if run.is_dir() and os.access(run, os.W_OK):
        return run / "ttt-perfmodel" / "cluster"
    return Path.home() / ".cache" / "ttt-perfmodel" / "cluster"


def state_path() -> Path:
    """``state_dir() / "state.json"``."""
    return state_dir() / STATE_FILE


def load_state() -> dict[str, Any] | None:
    """The recorded state, or None when no cluster is recorded (or the file is unreadable JSON: then the
    caller cannot know what exists; it is returned as ``{"corrupt": <error>}``)."""
    p = state_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"corrupt": f"cannot read {p}: {exc}"}
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {"corrupt": f"{p} is not valid JSON: {exc}"}
    return data if isinstance(data, dict) else {"corrupt": f"{p} does not hold an object"}


def save_state(state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (:func:`perfmodel.atomic.write_json_atomic`)."""
    return write_json_atomic(state_dir() / STATE_FILE, state)


def clear_state_dir(names: list[str]) -> None:
    """Remove the given files of the state folder, then ``state.json``, then the folder if empty."""
    d = state_dir()
    for name in [*names, STATE_FILE]:
        try:
            (d / name).unlink()
        except FileNotFoundError:
            pass
    try:
        d.rmdir()
    except OSError:
        pass
