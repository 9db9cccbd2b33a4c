"""What the installers run and write: pip commands, autostart entries and the Windows shortcut.

Standard library only: installer/steps.py runs this with the system Python before AI Farm is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PureWindowsPath

LAUNCH_AGENT_LABEL = "org.aifarm.agent"
TRAIN_EXTRA = "train"
TRAY_LAUNCHER = "aifarm-tray"
DESCRIPTION = "Donate this computer's spare GPU/CPU time to a LAN training farm"
_PIP = ["-m", "pip", "install", "--disable-pip-version-check"]


@dataclass(frozen=True)
class PipRequest:
    """One installation of AI Farm into a virtual environment."""

    python: str
    source: str
    constraints: str
    torch_spec: str
    os_name: str
    arch: str
    extras: tuple[str, ...] = ()
    editable: bool = False
    upgrade_pip: bool = True


@dataclass(frozen=True)
class Shortcut:
    """A Windows shell link (.lnk): what it starts, with which arguments, and its tooltip."""

    target: str
    arguments: str
    description: str


def host_os() -> str:
    """This machine's OS as the installers name it: linux, macos or windows."""
    return {"Darwin": "macos", "Windows": "windows"}.get(platform.system(), platform.system().lower())


def can_train(os_name: str, arch: str) -> bool:
    """False on an Intel Mac, for which no PyTorch >= 2.10 is built."""
    return not (os_name == "macos" and arch.lower() == "x86_64")


def pip_install_commands(request: PipRequest) -> list[list[str]]:
    """The pip calls, in order: pip itself, PyTorch pinned (with its progress shown), then AI Farm."""
    python = request.python
    commands = []
    if request.upgrade_pip:
        commands.append([python, *_PIP, "-q", "--upgrade", "pip"])
    train = can_train(request.os_name, request.arch)
    constraints = ["-c", request.constraints]
    if train:
        # torch first and pinned: left to choose freely, pip would pick the newest build with gigabytes of CUDA.
        commands.append([python, *_PIP, *constraints, request.torch_spec, "numpy"])
    extras = [TRAIN_EXTRA] if train else []
    extras += [extra for extra in request.extras if extra not in extras]
    target = f"{request.source}[{','.join(extras)}]" if extras else request.source
    if request.editable:
        commands.append([python, *_PIP, "-q", *constraints, "-e", target])
    else:
        commands.append([python, *_PIP, "-q", *constraints, "--upgrade", target])
    return commands


def torch_note(os_name: str, arch: str, torch_spec: str) -> str:
    """What the installer says it will download, before it asks to go on."""
    option = "-Torch" if os_name == "windows" else "--torch"
    if not can_train(os_name, arch):
        return ("This is an Intel Mac: PyTorch 2.10 or newer is not built for it, so AI Farm is installed\n"
                f"without its '{TRAIN_EXTRA}' extra (no PyTorch) and this computer cannot train.")
    first = f"PyTorch will be installed as '{torch_spec}'."
    if os_name == "linux":
        return (f"{first}\nOn Linux the default PyTorch wheels include CUDA and download several GB; a CPU-only\n"
                f"machine can choose a smaller build with AIFARM_TORCH_SPEC or {option} (and pip's own index\n"
                "options, such as PIP_EXTRA_INDEX_URL).")
    if os_name == "windows":
        return (f"{first}\npip's default PyTorch wheel on Windows is CPU-only; for an NVIDIA GPU name a CUDA build\n"
                f"with AIFARM_TORCH_SPEC or {option} and PyTorch's CUDA wheel index in PIP_EXTRA_INDEX_URL.")
    return f"{first} AIFARM_TORCH_SPEC or {option} chooses another version."


def run_commands(commands: Sequence[Sequence[str]]) -> int:
    """Run each command in turn and stop at the first that fails, naming it in one line."""
    for command in commands:
        code = subprocess.run(list(command), check=False).returncode
        if code != 0:
            print(f"aifarm install: error: this step failed (exit code {code}) and nothing after it was run: "
                  f"{shlex.join(command)}", file=sys.stderr, flush=True)
            return code
    return 0


def _desktop_exec_arg(value: str) -> str:
    quoted = "".join("\\" + char if char in '"`$\\' else char for char in value)
    return '"' + quoted.replace("\\", "\\\\").replace("%", "%%") + '"'


def xdg_autostart_entry(launcher: str) -> str:
    """The XDG autostart entry (~/.config/autostart/aifarm.desktop) that runs `aifarm run` at login."""
    return ("[Desktop Entry]\n"
            "Type=Application\n"
            "Name=AI Farm\n"
            f"Comment={DESCRIPTION}\n"
            f"Exec={_desktop_exec_arg(launcher)} run\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n")


def launch_agent_plist(launcher: str, log_path: str) -> str:
    """The macOS LaunchAgent: `aifarm run` at login, again after a crash, output to the log file."""
    agent = {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": [launcher, "run"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
    }
    return plistlib.dumps(agent, sort_keys=False).decode("utf-8")


@dataclass(frozen=True)
class LaunchctlWay:
    """One way to (re)load a LaunchAgent: stop the loaded copy (may fail: none is loaded), then start."""

    stop: list[str]
    start: list[str]


def launchctl_ways(uid: int, plist: str) -> list[LaunchctlWay]:
    """The ways to load the LaunchAgent now, in order: bootstrap into the user's GUI domain, then load -w."""
    domain = f"gui/{uid}"
    return [
        LaunchctlWay(stop=["launchctl", "bootout", f"{domain}/{LAUNCH_AGENT_LABEL}"],
                     start=["launchctl", "bootstrap", domain, plist]),
        LaunchctlWay(stop=["launchctl", "unload", plist], start=["launchctl", "load", "-w", plist]),
    ]


def load_launch_agent(uid: int, plist: str) -> bool:
    """Start the LaunchAgent now (restarting a running one); False when launchctl refused every way."""
    for way in launchctl_ways(uid, plist):
        subprocess.run(way.stop, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if subprocess.run(way.start, check=False).returncode == 0:
            return True
    return False


def windows_shortcut(venv: str) -> Shortcut:
    """The Startup-folder shortcut: the windowless launcher, which runs `aifarm run` with the tray."""
    target = PureWindowsPath(venv) / "Scripts" / f"{TRAY_LAUNCHER}.exe"
    return Shortcut(target=str(target), arguments="",
                    description="AI Farm: donate spare GPU/CPU time to a LAN training farm")


def _write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steps.py", description="One step of the AI Farm installers.")
    sub = parser.add_subparsers(dest="step", required=True)
    pip = sub.add_parser("pip-install", help="Install PyTorch and AI Farm into a virtual environment.")
    pip.add_argument("--python", required=True, help="The virtual environment's interpreter.")
    pip.add_argument("--source", required=True, help="The AI Farm source tree.")
    pip.add_argument("--torch", required=True, dest="torch_spec", help="The torch requirement.")
    pip.add_argument("--extras", default="", help="More extras, comma-separated (e.g. test).")
    pip.add_argument("--editable", action="store_true", help="An editable install (pip -e).")
    pip.add_argument("--no-pip-upgrade", action="store_true", help="Leave pip's own version as it is.")
    note = sub.add_parser("torch-note", help="Say what PyTorch build will be downloaded.")
    note.add_argument("--torch", required=True, dest="torch_spec")
    for step in (pip, note):
        step.add_argument("--os", dest="os_name", default=host_os(), help="linux, macos or windows (default: this).")
        step.add_argument("--arch", default=platform.machine(), help="The CPU architecture (default: this one).")
    xdg = sub.add_parser("xdg-autostart", help="Write the XDG autostart entry.")
    xdg.add_argument("--launcher", required=True)
    xdg.add_argument("--out", required=True)
    mac = sub.add_parser("launch-agent", help="Write the macOS LaunchAgent and load it.")
    mac.add_argument("--launcher", required=True)
    mac.add_argument("--log", required=True)
    mac.add_argument("--plist", required=True)
    win = sub.add_parser("windows-shortcut", help="Print the Startup shortcut's fields as JSON.")
    win.add_argument("--venv", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one installer step; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.step == "pip-install":
        source = Path(args.source)
        request = PipRequest(
            python=args.python, source=str(source), constraints=str(source / "installer" / "constraints.txt"),
            torch_spec=args.torch_spec, os_name=args.os_name, arch=args.arch,
            extras=tuple(extra for extra in args.extras.split(",") if extra), editable=args.editable,
            upgrade_pip=not args.no_pip_upgrade,
        )
        return run_commands(pip_install_commands(request))
    if args.step == "torch-note":
        print(torch_note(args.os_name, args.arch, args.torch_spec))
    elif args.step == "xdg-autostart":
        _write(args.out, xdg_autostart_entry(args.launcher))
    elif args.step == "launch-agent":
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        _write(args.plist, launch_agent_plist(args.launcher, args.log))
        if not load_launch_agent(os.getuid(), args.plist):
            print(f"aifarm install: launchctl could not start {args.plist} now; it starts at the next login.",
                  file=sys.stderr)
    elif args.step == "windows-shortcut":
        print(json.dumps(asdict(windows_shortcut(args.venv))))
    return 0
