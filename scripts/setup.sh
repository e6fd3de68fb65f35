#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project into it.
#   bash scripts/setup.sh        runtime only
#   bash scripts/setup.sh dev    runtime + test/bench tools
# The CPU build of torch is installed first, by exact version, so that resolving
# the project's dependencies never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ "${1:-}" = "dev" ]; then
    .venv/bin/python -m pip install --quiet -e ".[dev]"
else
    .venv/bin/python -m pip install --quiet -e .
fi
.venv/bin/python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
print(f"torch {torch.__version__} (cuda build: {torch.version.cuda is not None})")
PY
