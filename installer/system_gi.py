"""Share the distribution's PyGObject (python3-gi) with a virtual environment of the same Python version.

The Linux tray's menu (pystray's AppIndicator backend) needs `gi`. Building PyGObject from PyPI needs a
compiler and development packages; the distribution's build works in any CPython of the same version and ABI,
so this links only its `gi` package (nothing else of the system's site-packages) into the environment.

Usage, with the virtual environment's python:
  python installer/system_gi.py              link into <venv>/system-gi, listed in a .pth file of the venv
  python installer/system_gi.py --into DIR   link into DIR only (for PYTHONPATH)
Exit status: 0 the tray's modules import; 1 no usable gi (nothing is left behind); 3 gi works but the
AppIndicator typelib is missing (gir1.2-ayatanaappindicator3-0.1).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PTH_NAME = "aifarm-system-gi.pth"
# Imports what pystray's AppIndicator backend imports; exit 3 when only the AppIndicator typelib is missing.
CHECK = """
import sys
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk
for name in ("AyatanaAppIndicator3", "AppIndicator3"):
    try:
        gi.require_version(name, "0.1")
        break
    except ValueError:
        pass
else:
    sys.exit(3)
print(gi.__file__)
"""


@dataclass(frozen=True)
class Outcome:
    """What the check found: its exit status and a line for the volunteer."""

    status: int
    message: str


def system_site_dirs() -> list[Path]:
    """Where distributions install python3-gi for this Python version."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return [Path("/usr/lib/python3/dist-packages"), Path(f"/usr/lib/{version}/site-packages"),
            Path(f"/usr/lib64/{version}/site-packages"), Path(f"/usr/lib/{version}/dist-packages")]


def find_system_gi(dirs: list[Path]) -> Path | None:
    """The first system `gi` package whose compiled module this interpreter can load (same version and ABI)."""
    suffixes = [s for s in importlib.machinery.EXTENSION_SUFFIXES if s != ".so"]  # a bare .so names no ABI
    for directory in dirs:
        package = directory / "gi"
        if (package / "__init__.py").is_file() and any((package / f"_gi{suffix}").is_file() for suffix in suffixes):
            return package
    return None


def check(pythonpath: Path | None) -> Outcome:
    """Run the tray's imports in a fresh interpreter."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=60)
    if done.returncode == 0:
        return Outcome(0, f"PyGObject for the tray menu: {done.stdout.strip()}")
    if done.returncode == 3:
        return Outcome(3, "PyGObject works, but the AppIndicator typelib is missing (gir1.2-ayatanaappindicator3-0.1)")
    lines = done.stderr.strip().splitlines()
    return Outcome(1, f"PyGObject does not import: {lines[-1] if lines else 'exit ' + str(done.returncode)}")


def link(into: Path, package: Path) -> None:
    """into/gi -> the system package (replacing an earlier link)."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / "gi"
    if target.is_symlink():
        target.unlink()
    target.symlink_to(package, target_is_directory=True)


def unlink(into: Path, pth: Path | None) -> None:
    """Remove what link() and the .pth file added."""
    if (into / "gi").is_symlink():
        (into / "gi").unlink()
    if pth is not None:
        pth.unlink(missing_ok=True)
    try:
        into.rmdir()
    except OSError:
        pass


def main(argv: list[str]) -> int:
    """Link, check, and say what works in one line."""
    parser = argparse.ArgumentParser(prog="system_gi.py", description=__doc__.splitlines()[0])
    parser.add_argument("--into", type=Path, help="link into this directory only (default: the venv, via a .pth file)")
    args = parser.parse_args(argv)
    if args.into is None and sys.prefix == sys.base_prefix:
        print("system_gi.py: error: run it with the virtual environment's python (or pass --into DIR)", file=sys.stderr)
        return 1
    into: Path = args.into or Path(sys.prefix) / "system-gi"
    pth = None if args.into else Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    unlink(into, pth)
    own = check(into if args.into else None)
    if own.status != 1:  # PyGObject of the environment itself (or already on the path)
        print(own.message)
        return own.status
    package = find_system_gi(system_site_dirs())
    if package is None:
        print(f"no python3-gi for Python {sys.version_info.major}.{sys.version_info.minor} in "
              f"{', '.join(map(str, system_site_dirs()))}")
        return 1
    link(into, package)
    if pth is not None:
        pth.write_text(f"{into}\n")
    outcome = check(into if args.into else None)
    if outcome.status == 1:
        unlink(into, pth)
    print(outcome.message)
    return outcome.status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
