#!/usr/bin/env python3
"""Calibrate the devices' efficiency curves on published single-node rows and rewrite the device files.

    python scripts/calibrate_published.py [--check] [--dry-run] [--json]

Fits ``eff_max`` of each device curve in ``validation.calibrate_published.CALIBRATION_PLAN`` so that
``perfmodel.predict`` (with the row's own epochs) reproduces the row, sets the curves of
``DERIVED_CURVES`` by their stated assumptions, and rewrites only the ``[efficiency.<precision>]`` values
(4 significant digits) and their ``[sources]`` lines in ``hardware/data/devices/*.toml``.
``--check`` writes nothing: it re-fits, compares with the stored values and sources, and verifies that
every calibration row is reproduced within 1 % (exit 1 otherwise). See the module docstring of
``validation/calibrate_published.py`` for which row calibrates which device and why.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from validation.calibrate_published import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
