#!/usr/bin/env bash
# Create (or update) a virtual environment with AI Farm installed from this checkout.
# Usage: bash installer/setup-venv.sh VENV [EXTRAS]     e.g. setup-venv.sh .venv test
#   AIFARM_TORCH_SPEC  the torch requirement installed first (default: torch==2.13.0)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: setup-venv.sh VENV [EXTRAS]}
extras=${2:-}
torch_spec=${AIFARM_TORCH_SPEC:-torch==2.13.0}

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"AI Farm needs Python 3.11 or newer; this python3 is {sys.version.split()[0]}")
PY
if ! python3 -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "python3 cannot create virtual environments; install python3-venv (sudo apt-get install -y python3-venv)" >&2
    exit 1
  fi
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating the virtual environment $venv" >&2
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "installing $torch_spec (set AIFARM_TORCH_SPEC to choose another build)" >&2
fi
# torch first and pinned: left to choose freely, pip would pick the newest build with gigabytes of CUDA.
"$py" -m pip install -q --disable-pip-version-check -c installer/constraints.txt "$torch_spec" numpy
target="."
[ -n "$extras" ] && target=".[$extras]"
"$py" -m pip install -q --disable-pip-version-check -c installer/constraints.txt -e "$target"
