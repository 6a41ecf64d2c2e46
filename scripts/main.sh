#!/usr/bin/env bash
# The main job on the built-in default, with all of its set-up: `bash scripts/main.sh [validate flags]`.
# It calibrates this machine once, predicts and runs the quick validation matrix, measures time to accuracy
# on a small bundled dataset, compares with published results, and writes a report (validation-out/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/perfmodel" validate --quick "$@"
