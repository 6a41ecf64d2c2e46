"""Test-session set-up shared by every test file."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# The on-disk cache of collective profiles (perfmodel.network) is per test session: results computed by an
# earlier version of the code on this machine never leak into a test run.
os.environ["TTT_CACHE_DIR"] = tempfile.mkdtemp(prefix="ttt-test-cache-")
atexit.register(shutil.rmtree, os.environ["TTT_CACHE_DIR"], True)   # removed with the session, not left in /tmp

# `--system local` means the catalog placeholder in tests, whatever `perfmodel calibrate` wrote on this machine
# (tests that need a calibrated spec write their own and pass its path).
os.environ["TTT_LOCAL_SPEC"] = ""
