"""The worker sandbox (Linux, bubblewrap): what a confined worker sees, as one bwrap command line. No torch here.

A confined worker sees the system's directories and the Python installation read-only, its bundle's environment
read-only, its task's checkpoint and model folders read-write, the dataset folders it may read read-only, and
nothing else: not the data dir (config.toml, api_token, the embedded database, other tasks), not the user's home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import app

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/opt")
GPU_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/dri",
               "/dev/kfd")


@dataclass(frozen=True)
class SandboxPlan:
    """What one confined worker may see."""

    hidden: tuple[Path, ...]  # folders made empty even where a Python folder contains them (the data dir)
    writable: tuple[Path, ...]
    readable: tuple[Path, ...] = ()
    network: bool = False  # False: a network namespace of its own (loopback only, nothing reachable)
    gpu: bool = False


def available() -> str | None:
    """Why bubblewrap cannot confine workers here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"no sandbox on {sys.platform}: bundle code would run unconfined"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        done = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap did not run: {exc}"
    if done.returncode != 0:
        return f"bubblewrap cannot create a sandbox here: {done.stderr.strip()[:200] or done.returncode}"
    return None


def python_dirs() -> list[Path]:
    """The Python installation and this agent's code and packages (read-only in the sandbox)."""
    import sysconfig

    found = [sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix,
             sysconfig.get_path("purelib"), sysconfig.get_path("platlib"),
             str(Path(app.__file__).resolve().parent.parent), str(Path(sys.executable).resolve().parent)]
    return [Path(p) for p in dict.fromkeys(os.path.realpath(p) for p in found) if Path(p).exists()]


def _binds(flag: str, paths: Sequence[Path]) -> list[str]:
    out: list[str] = []
    for path in paths:
        if path.exists():
            out += [flag, str(path), str(path)]
    return out


def _system() -> list[str]:
    out: list[str] = []
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            out += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            out += ["--ro-bind", name, name]
    return out


def command(plan: SandboxPlan, inner: Sequence[str], bwrap: str = "bwrap") -> list[str]:
    """The bwrap command line that runs `inner` confined as `plan` says."""
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all"]
    if plan.network:
        args.append("--share-net")
    args += _system()
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    if plan.gpu:
        nvidia = sorted(Path("/dev").glob("nvidia[0-9]*"))
        args += _binds("--dev-bind", [*nvidia, *(Path(d) for d in GPU_DEVICES)])
        args += _binds("--ro-bind", [Path("/sys")])
    args += _binds("--ro-bind", python_dirs())
    for hidden in plan.hidden:
        args += ["--tmpfs", str(hidden)]  # after the Python folders: hides the data dir even inside one of them
    args += _binds("--ro-bind", plan.readable)
    args += _binds("--bind", plan.writable)
    for hidden in plan.hidden:
        args += ["--remount-ro", str(hidden)]  # the empty stand-in cannot be written either (binds inside stay rw)
    args += ["--remount-ro", "/"]
    args += ["--chdir", str(plan.writable[0]) if plan.writable else "/tmp", "--setenv", "HOME", "/tmp", "--"]
    return args + list(inner)

