#!/usr/bin/env bash
# Create (or update) a virtual environment with AI Farm installed from this checkout (editable, with its
# `train` extra but on Intel Macs, where no PyTorch >= 2.10 is built).
# Usage: bash installer/setup-venv.sh VENV [EXTRAS]     e.g. setup-venv.sh .venv test
#   AIFARM_TORCH_SPEC  the torch requirement installed first (default: torch==2.13.0)
#   PYTHON             the Python to use (default: the first 3.11 or newer of python3, python3.13, 3.12, 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: setup-venv.sh VENV [EXTRAS]}
extras=${2:-}
torch_spec=${AIFARM_TORCH_SPEC:-torch==2.13.0}
. installer/find-python.sh

python=$(find_python)
if ! "$python" -c 'import ensurepip' 2>/dev/null; then
  if [ "$python" = python3 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "$python cannot create virtual environments; install python3-venv (sudo apt-get install -y python3-venv)" >&2
    exit 1
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating the virtual environment $venv with $python" >&2
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "installing $torch_spec (set AIFARM_TORCH_SPEC to choose another build)" >&2
fi
# PyTorch first and pinned (pip's progress shown), then AI Farm; it stops at the first failed pip call.
"$python" installer/steps.py pip-install --no-pip-upgrade --editable --python "$py" --source . \
  --torch "$torch_spec" --extras "$extras"
