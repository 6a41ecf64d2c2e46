#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs the toolkit into it.
# Idempotent: a second call with an unchanged pyproject.toml does nothing.
# torch is pinned to the 2.13.0 CPU build *before* the project, so pip never resolves a bare `torch`
# (which would pull several GB of CUDA wheels on a machine without a GPU).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
stamp="$venv/.ttt-installed"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup_env.sh" | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/perfmodel" ]; then
  exit 0
fi
echo "setup: creating environment in $venv (one-time, about a minute)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  local_wheels=/opt/wheels
  if ls "$local_wheels"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    "${pip[@]}" --find-links "$local_wheels" "torch==2.13.0+cpu"
  else
    "${pip[@]}" --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
  fi
fi
"${pip[@]}" -e "$root[test]"
echo "$want" > "$stamp"
echo "setup: done" >&2
