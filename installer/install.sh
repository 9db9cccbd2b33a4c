#!/usr/bin/env bash
# Install AI Farm for this user on Linux or macOS: a private virtual environment in the data dir, an
# `aifarm` launcher on PATH and an autostart entry. Running it again upgrades in place and keeps the
# data and settings.
#
#   bash installer/install.sh [--torch SPEC] [--source DIR] [--no-autostart] [--yes]
#   bash installer/install.sh --uninstall [--purge]
#
#   AIFARM_TORCH_SPEC  the torch requirement (default torch==2.13.0); same as --torch
#   AIFARM_HOME        where AI Farm keeps its data and environment (default: the per-user data dir)
#   PYTHON             the Python to use (default: the first 3.11 or newer of python3, python3.13, 3.12, 3.11)
set -euo pipefail

installer_dir=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$installer_dir")
steps="$installer_dir/steps.py"
# shellcheck source=find-python.sh
. "$installer_dir/find-python.sh"
torch_spec=${AIFARM_TORCH_SPEC:-torch==2.13.0}
action=install
purge=no
autostart=yes
assume_yes=no

while [ $# -gt 0 ]; do
  case "$1" in
    --torch) torch_spec=${2:?--torch needs a requirement such as torch==2.13.0}; shift ;;
    --source) source_dir=${2:?--source needs a directory}; shift ;;
    --uninstall) action=uninstall ;;
    --purge) purge=yes ;;
    --no-autostart) autostart=no ;;
    --yes|-y) assume_yes=yes ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

case "$(uname -s)" in
  Darwin) os=macos; default_home="$HOME/Library/Application Support/aifarm" ;;
  Linux) os=linux; default_home="${XDG_DATA_HOME:-$HOME/.local/share}/aifarm" ;;
  *) echo "install.sh: $(uname -s) is not supported here; on Windows use installer/install.ps1" >&2; exit 2 ;;
esac
home_dir=${AIFARM_HOME:-$default_home}
venv="$home_dir/venv"
bin_dir="$HOME/.local/bin"
launcher="$bin_dir/aifarm"
desktop_file="${XDG_CONFIG_HOME:-$HOME/.config}/autostart/aifarm.desktop"
plist="$HOME/Library/LaunchAgents/org.aifarm.agent.plist"

say() { printf '%s\n' "$*"; }

uninstall() {
  rm -rf "$venv"
  rm -f "$launcher" "$desktop_file"
  if [ "$os" = macos ] && [ -f "$plist" ]; then
    launchctl bootout "gui/$(id -u)" "$plist" 2>/dev/null || launchctl unload "$plist" 2>/dev/null || true
    rm -f "$plist"
  fi
  if [ "$purge" = yes ]; then
    rm -rf "$home_dir"
    say "AI Farm removed, with its data ($home_dir)."
  else
    rmdir "$home_dir" 2>/dev/null || true
    say "AI Farm removed. Its data stays in $home_dir (run with --uninstall --purge to delete it too)."
  fi
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi

python=$(find_python)
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  say "$python cannot create virtual environments; install python3-venv (Debian/Ubuntu: sudo apt-get install -y python3-venv)." >&2
  exit 1
fi
if [ ! -f "$source_dir/pyproject.toml" ]; then
  say "install.sh: $source_dir is not an AI Farm source tree (no pyproject.toml)" >&2
  exit 2
fi

if [ -x "$venv/bin/python" ]; then
  say "Upgrading AI Farm in $venv (data and settings in $home_dir are kept)."
else
  say "Installing AI Farm for ${USER:-$(id -un)} into $venv."
fi
say "Using $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))."
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$python" "$steps" torch-note --torch "$torch_spec"
  if [ "$assume_yes" = no ] && [ -t 0 ]; then
    read -r -p "Continue? [Y/n] " answer
    case "$answer" in [nN]*) say "Nothing installed."; exit 1 ;; esac
  fi
fi

mkdir -p "$home_dir" "$bin_dir"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# pip, then PyTorch pinned (pip's progress shown), then AI Farm with the tested versions of the rest
# (installer/constraints.txt); it stops at the first failed call (app/installer.py).
"$python" "$steps" pip-install --python "$venv/bin/python" --source "$source_dir" --torch "$torch_spec"

cat > "$launcher" <<EOF
#!/bin/sh
# AI Farm launcher, written by installer/install.sh
exec "$venv/bin/aifarm" "\$@"
EOF
chmod 755 "$launcher"

if [ "$autostart" = yes ]; then
  if [ "$os" = linux ]; then
    "$python" "$steps" xdg-autostart --launcher "$launcher" --out "$desktop_file"
  else
    # Loaded now and at every login, restarted after a crash; its output goes to the log file.
    "$python" "$steps" launch-agent --launcher "$launcher" --plist "$plist" --log "$home_dir/logs/agent.log"
    say "AI Farm runs in the background now and at every login (LaunchAgent $plist);"
    say "its output goes to $home_dir/logs/agent.log."
  fi
fi

if [ "$os" = linux ]; then
  # The tray's menu: pystray's AppIndicator backend needs PyGObject (gi) and the AppIndicator typelib. The
  # distribution's python3-gi is shared with the venv when their Python versions match (installer/system_gi.py);
  # building PyGObject instead needs a compiler and development packages.
  tray_packages=()
  if command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
    installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
    installed python3-gi || tray_packages+=(python3-gi)
    installed gir1.2-ayatanaappindicator3-0.1 || installed gir1.2-appindicator3-0.1 \
      || tray_packages+=(gir1.2-ayatanaappindicator3-0.1)
    command -v bwrap >/dev/null || tray_packages+=(bubblewrap)  # the worker sandbox of recipe bundles
  fi
  if [ ${#tray_packages[@]} -gt 0 ]; then
    apt_command=()
    if [ "$(id -u)" -eq 0 ]; then
      apt_command=(env DEBIAN_FRONTEND=noninteractive)
    elif [ -t 0 ] && command -v sudo >/dev/null; then
      answer=y
      [ "$assume_yes" = yes ] || read -r -p "The tray's menu and the worker sandbox need ${tray_packages[*]}; install them with sudo apt-get? [Y/n] " answer
      case "$answer" in [nN]*) ;; *) apt_command=(sudo env DEBIAN_FRONTEND=noninteractive) ;; esac
    fi
    if [ ${#apt_command[@]} -gt 0 ]; then
      say "Installing ${tray_packages[*]} with apt-get (for the tray's menu and the worker sandbox)."
      "${apt_command[@]}" apt-get update -qq >/dev/null 2>&1 || true
      "${apt_command[@]}" apt-get install -y -qq "${tray_packages[@]}" >/dev/null \
        || say "apt-get could not install ${tray_packages[*]}; the tray will have no menu."
    fi
  fi
  tray_status=0
  "$venv/bin/python" "$source_dir/installer/system_gi.py" || tray_status=$?
  if [ "$tray_status" -ne 0 ]; then
    say "Note: without PyGObject and AppIndicator the tray is a plain icon without a menu (a click on it opens"
    say "the dashboard). On Debian/Ubuntu the menu needs:"
    say "  sudo apt-get install -y python3-gi gir1.2-ayatanaappindicator3-0.1"
    if [ "$tray_status" -eq 1 ]; then
      say "and a venv of the distribution's Python, which shares its python3-gi (data and settings are kept):"
      say "  bash installer/install.sh --uninstall && PYTHON=/usr/bin/python3 bash installer/install.sh"
      say "or PyGObject built for this Python (a compiler and development packages):"
      if apt-cache show libgirepository-2.0-dev >/dev/null 2>&1; then
        say "  sudo apt-get install -y libgirepository-2.0-dev libcairo2-dev pkg-config gcc python3-dev"
        say "  \"$venv/bin/python\" -m pip install PyGObject"
      else  # GLib older than 2.80 (Debian 12, Ubuntu 22.04): the last PyGObject series for girepository-1.0
        say "  sudo apt-get install -y libgirepository1.0-dev libcairo2-dev pkg-config gcc python3-dev"
        say "  \"$venv/bin/python\" -m pip install 'PyGObject<3.51'"
      fi
    fi
  fi
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) say "Add $bin_dir to your PATH to run 'aifarm' from a shell." ;;
esac
say "Done: start it with '$launcher run' (it also starts at login). The dashboard prints its address."
