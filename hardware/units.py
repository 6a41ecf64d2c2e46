"""Unit conversions. Inside the toolkit everything is SI (s, B, FLOP, B/s, FLOP/s); data files carry the
unit in the key name and are converted once, in the loader, with these factors.

GB = 1e9 bytes, GiB = 2**30 bytes, Gbps = 1e9 bits per second.
"""
from __future__ import annotations

__all__ = ["UNIT_FACTORS", "unit_of_key", "to_si"]

#: key suffix -> (SI quantity name, factor to multiply the file value by)
UNIT_FACTORS: dict[str, tuple[str, float]] = {
    "Gbps": ("bw_Bps", 1e9 / 8),      # gigabit per second -> bytes per second
    "Mbps": ("bw_Bps", 1e6 / 8),
    "GBps": ("bw_Bps", 1e9),          # gigabyte per second -> bytes per second
    "MBps": ("bw_Bps", 1e6),
    "GiB": ("nbytes", 2.0 ** 30),
    "MiB": ("nbytes", 2.0 ** 20),
    "GB": ("nbytes", 1e9),
    "MB": ("nbytes", 1e6),
    "us": ("s", 1e-6),
    "ns": ("s", 1e-9),
    "ms": ("s", 1e-3),
    "s": ("s", 1.0),
    "GHz": ("hz", 1e9),
    "MHz": ("hz", 1e6),
    "tflops": ("flops", 1e12),
    "gflops": ("flops", 1e9),
    "W": ("watt", 1.0),
}


def unit_of_key(key: str) -> str | None:
    """Return the unit suffix of a data-file key (``link_Gbps`` -> ``Gbps``), or None when unitless.

    The unit is the text after the last underscore; ``peak_tflops_fp32`` carries ``tflops`` before a
    precision tag, so a trailing ``_fp32``/``_fp16``/``_fp64``/``_bf16`` is skipped first.
    """
    parts = key.split("_")
    if len(parts) >= 2 and parts[-1] in {"fp32", "fp16", "fp64", "bf16", "tf32"}:
        parts = parts[:-1]
    suffix = parts[-1] if len(parts) >= 2 else None
    return suffix if suffix in UNIT_FACTORS else None


def to_si(key: str, value: float) -> float:
    """Convert a data-file value to SI according to the unit in its key (identity when unitless)."""
    unit = unit_of_key(key)
    return float(value) * UNIT_FACTORS[unit][1] if unit else float(value)
