#!/usr/bin/env bash
# Create .venv (if missing) and install robosac into it.
# No NVIDIA GPU -> the CPU build of torch first, so the unpinned range below installs nothing more.
# Override the torch requirement with TORCH_SPEC, e.g. TORCH_SPEC="torch==2.13.0 --index-url <cpu index>".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-test}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.robosac-installed-$EXTRAS"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
    exit 0
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing torch with CUDA from the registry"
        .venv/bin/pip install ${TORCH_SPEC:-"torch>=2.2,<3"}
    else
        echo "setup: no NVIDIA GPU, installing the CPU build of torch"
        .venv/bin/pip install ${TORCH_SPEC:-"torch==2.13.0"}
    fi
fi
.venv/bin/pip install -e ".[$EXTRAS]"
touch "$stamp"
