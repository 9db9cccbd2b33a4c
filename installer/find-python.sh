# Sourced by the installers. find_python prints the first Python 3.11 or newer among $PYTHON (when set)
# or python3, python3.13, python3.12, python3.11; with none, it says so and fails.
find_python() {
  local candidate
  if [ -n "${PYTHON:-}" ]; then set -- "$PYTHON"; else set -- python3 python3.13 python3.12 python3.11; fi
  for candidate in "$@"; do
    if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  if [ -n "${PYTHON:-}" ]; then
    echo "AI Farm needs Python 3.11 or newer; PYTHON=$PYTHON is not one." >&2
  else
    echo "AI Farm needs Python 3.11 or newer and none of python3, python3.13, python3.12, python3.11 is; set PYTHON=/path/to/python." >&2
  fi
  return 1
}
