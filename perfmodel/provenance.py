"""Provenance recorded with every prediction and measurement: software versions and the machine."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

__all__ = ["software_versions", "machine_description"]


def software_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of Python, the toolkit and its main libraries (only those installed; torch is not imported)."""
    out = {"python": platform.python_version()}
    for dist in ("ttt-perfmodel", "numpy", "scipy", "networkx", "simpy", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine_description() -> dict[str, object]:
    """Where this ran: host name, OS, processor, logical CPUs, memory."""
    mem = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {"hostname": platform.node(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "memory_bytes": mem, "executable": sys.executable}
