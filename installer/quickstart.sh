#!/usr/bin/env bash
# Set up AI Farm from this checkout in .venv and start the agent on the embedded database.
# Usage: bash installer/quickstart.sh [aifarm run arguments]     (Ctrl-C stops the agent)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AIFARM_VENV:-.venv}
bash installer/setup-venv.sh "$venv"
exec "$venv/bin/aifarm" run "$@"
