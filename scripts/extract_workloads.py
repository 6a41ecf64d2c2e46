#!/usr/bin/env python
"""Regenerate the cached workload tables ``perfmodel/data/workloads/<model>.json`` from the model zoo.

    python scripts/extract_workloads.py            # every registered model
    python scripts/extract_workloads.py resnet50   # some
    python scripts/extract_workloads.py --check    # exit 1 if a cached table differs from a fresh extraction

Extraction runs on PyTorch's meta device (no memory, no arithmetic): all tables take a few seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from executor.models import list_models  # noqa: E402
from executor.workload_extract import dumps_table, extract_registered, write_table  # noqa: E402
from perfmodel.workload import WORKLOAD_DIR  # noqa: E402


def _comparable(table: dict) -> dict:
    """The table without the software versions (which may legitimately differ)."""
    return {k: v for k, v in table.items() if k != "extracted_with"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1].strip())
    parser.add_argument("models", nargs="*", help="registered model names (default: all)")
    parser.add_argument("--out-dir", type=Path, default=WORKLOAD_DIR, help=f"default: {WORKLOAD_DIR}")
    parser.add_argument("--check", action="store_true", help="compare with the cached tables, write nothing")
    args = parser.parse_args(argv)
    names = args.models or list_models()
    stale = 0
    for name in names:
        t0 = time.perf_counter()
        table = extract_registered(name)
        dt = time.perf_counter() - t0
        path = args.out_dir / f"{table['model']}.json"
        if args.check:
            ok = path.is_file() and _comparable(json.loads(path.read_text())) == \
                _comparable(json.loads(dumps_table(table)))
            stale += not ok
            print(f"{'ok   ' if ok else 'STALE'} {path}")
        else:
            write_table(table, path)
            tot = table["totals"]
            print(f"wrote {path} ({len(table['layers'])} layers, {tot['params']:,} params, "
                  f"{tot['flops_fwd'] / 1e9:.3f} GFLOP fwd/image, {dt:.2f} s)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
