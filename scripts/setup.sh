#!/usr/bin/env bash
# One-time, idempotent set-up: a virtual environment in .venv (unless one is active), the CPU
# build of torch where no NVIDIA GPU is present (so pip never resolves a multi-GB CUDA build),
# then orch in editable mode with the study's packages, its dev tools, and the ray and export
# extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi

stamp=.venv-setup.stamp
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && python -c "import orchestrator, torch" 2>/dev/null; then
    exit 0
fi

if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing torch with CUDA" >&2
        python -m pip install --quiet "torch>=2.3"
    else
        echo "setup: no GPU, installing the CPU build of torch" >&2
        python -m pip install --quiet "torch==2.13.0"
    fi
fi
# orch itself (editable), the study's packages, the dev tools, ray (the Ray backend's
# tests; ~240 MB) and export (orch export's tests: tensorboard, mlflow-skinny; ~180 MB more)
# unless ORCH_SETUP_EXTRAS says otherwise.
python -m pip install --quiet -e ".[${ORCH_SETUP_EXTRAS:-study,dev,ray,export}]"
touch "$stamp"
