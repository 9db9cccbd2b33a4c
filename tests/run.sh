#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian/Ubuntu machine, then run it.
# Usage: bash tests/run.sh [pytest arguments]
#   AIFARM_VENV           virtual environment to use/create (default: .venv in the checkout)
#   AIFARM_TORCH_SPEC     the torch requirement installed first (default: torch==2.13.0)
#   AIFARM_TEST_MYSQL_URL use this MySQL/MariaDB server instead of starting a throwaway one
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${AIFARM_VENV:-.venv}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing $*; install with: sudo apt-get install -y $*" >&2
    return 0
  fi
  echo "tests/run.sh: installing $* with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "$@" >/dev/null
}

missing=()
if [ -z "${AIFARM_TEST_MYSQL_URL:-}" ] && ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null \
   && [ ! -x /usr/sbin/mariadbd ] && [ ! -x /usr/sbin/mysqld ]; then
  missing+=(mariadb-server)
fi
if [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)  # the browser tests drive Debian's chromium; no browser is ever downloaded
fi
if ! command -v Xvfb >/dev/null || ! command -v trayer >/dev/null; then
  missing+=(xvfb trayer)  # the real tray icon test: a virtual screen with a system tray
fi
for package in dbus python3-gi gir1.2-ayatanaappindicator3-0.1; do  # the tray menu test: session bus, AppIndicator
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if ! command -v ip >/dev/null; then
  missing+=(iproute2)  # multi-host tests in network namespaces
fi
if ! command -v bwrap >/dev/null; then
  missing+=(bubblewrap)  # the worker sandbox and `aifarm doctor`'s sandbox check
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

bash installer/setup-venv.sh "$venv" test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$venv/bin/python" -m pytest "$@"
