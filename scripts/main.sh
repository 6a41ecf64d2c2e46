#!/usr/bin/env bash
# The main job on the built-in default, with all of its set-up: `bash scripts/main.sh [args]`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/perfmodel" tour "$@"
