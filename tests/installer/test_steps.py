"""app/installer.py and installer/steps.py: the pip calls, autostart entries and shortcut the installers use."""

from __future__ import annotations

import configparser
import json
import os
import plistlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path, PureWindowsPath

import pytest

from app.cli import main_tray
from app.installer import (
    LAUNCH_AGENT_LABEL,
    PipRequest,
    launch_agent_plist,
    load_launch_agent,
    pip_install_commands,
    run_commands,
    torch_note,
    windows_shortcut,
    xdg_autostart_entry,
)

ROOT = Path(__file__).resolve().parents[2]
STEPS = ROOT / "installer" / "steps.py"


def request(os_name: str, arch: str, **more: object) -> PipRequest:
    """An install of /src with torch==2.13.0 on the given platform."""
    return PipRequest(python="/v/bin/python", source="/src", constraints="/src/installer/constraints.txt",
                      torch_spec="torch==2.13.0", os_name=os_name, arch=arch, **more)  # type: ignore[arg-type]


def test_pip_commands_pip_then_torch_with_progress_then_aifarm_with_train() -> None:
    """Linux, Windows and Apple-silicon Macs: pip, torch pinned without -q (progress shown), then .[train]."""
    for os_name, arch in (("linux", "x86_64"), ("windows", "AMD64"), ("macos", "arm64"), ("linux", "aarch64")):
        upgrade, torch, aifarm = pip_install_commands(request(os_name, arch))
        assert upgrade == ["/v/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           "--upgrade", "pip"]
        assert torch == ["/v/bin/python", "-m", "pip", "install", "--disable-pip-version-check",
                         "-c", "/src/installer/constraints.txt", "torch==2.13.0", "numpy"]
        assert aifarm[-3:] == ["/src/installer/constraints.txt", "--upgrade", "/src[train]"]


def test_pip_commands_on_an_intel_mac_leave_out_torch_and_the_train_extra() -> None:
    """No torch >= 2.10 is built for Intel Macs: no torch call, and AI Farm without [train]."""
    commands = pip_install_commands(request("macos", "x86_64"))
    assert len(commands) == 2 and not any("torch" in arg for command in commands for arg in command)
    assert commands[1][-2:] == ["--upgrade", "/src"]
    assert "cannot train" in torch_note("macos", "x86_64", "torch==2.13.0")


def test_pip_commands_editable_with_extras() -> None:
    """setup-venv.sh: no pip self-upgrade, -e with train and the asked extras (only those on an Intel Mac)."""
    commands = pip_install_commands(request("linux", "x86_64", extras=("test",), editable=True, upgrade_pip=False))
    assert [command[-1] for command in commands] == ["numpy", "/src[train,test]"] and commands[1][-2] == "-e"
    intel = pip_install_commands(request("macos", "x86_64", extras=("test",), editable=True, upgrade_pip=False))
    assert intel == [["/v/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
                      "-c", "/src/installer/constraints.txt", "-e", "/src[test]"]]


def test_torch_note_names_the_download_for_each_os() -> None:
    """Only Linux's default wheels are said to bring CUDA and several GB; Windows' default is CPU-only."""
    linux = torch_note("linux", "x86_64", "torch==2.13.0")
    assert linux.startswith("PyTorch will be installed as 'torch==2.13.0'.") and "several GB" in linux
    windows = torch_note("windows", "AMD64", "torch==2.13.0")
    assert "CPU-only" in windows and "GB" not in windows and "-Torch" in windows
    assert "GB" not in torch_note("macos", "arm64", "torch==2.13.0")


def test_run_commands_stops_at_the_first_failure(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A failing call ends the run with its exit code and one line naming it; later calls never run."""
    log = tmp_path / "log"
    commands = [["sh", "-c", f"echo one >> {log}"], ["sh", "-c", "exit 3"], ["sh", "-c", f"echo three >> {log}"]]
    assert run_commands(commands) == 3
    assert log.read_text() == "one\n"
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "exit code 3" in err and "sh -c 'exit 3'" in err
    assert run_commands(commands[:1]) == 0


def test_launch_agent_plist_restarts_after_a_crash_and_logs_to_the_data_dir() -> None:
    """A valid plist: runs `aifarm run` at load, again only after an unsuccessful exit, output to the log."""
    launcher = "/Users/a & <b>/.local/bin/aifarm"
    log = "/Users/a & <b>/Library/Application Support/aifarm/logs/agent.log"
    agent = plistlib.loads(launch_agent_plist(launcher, log).encode())
    assert agent == {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": [launcher, "run"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }


def fake_launchctl(tmp_path: Path, fail: set[str]) -> tuple[Path, Path]:
    """A launchctl on PATH that records its arguments and fails the subcommands in `fail`."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(parents=True)
    failing = " ".join(fail) or "none"
    script = bin_dir / "launchctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nfor f in {failing}; do [ "$1" = "$f" ] && exit 5; done\n'
                      "exit 0\n")
    script.chmod(0o755)
    return bin_dir, calls


def test_launch_agent_loaded_with_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bootout of a running copy (its failure ignored), then bootstrap into the user's GUI domain."""
    bin_dir, calls = fake_launchctl(tmp_path, fail={"bootout"})
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert load_launch_agent(501, "/p.plist")
    assert calls.read_text().splitlines() == [f"bootout gui/501/{LAUNCH_AGENT_LABEL}", "bootstrap gui/501 /p.plist"]


def test_launch_agent_falls_back_to_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where bootstrap is refused: unload, then load -w; False only when that is refused too."""
    bin_dir, calls = fake_launchctl(tmp_path, fail={"bootstrap"})
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert load_launch_agent(501, "/p.plist")
    assert calls.read_text().splitlines()[2:] == ["unload /p.plist", "load -w /p.plist"]
    bin_dir, calls = fake_launchctl(tmp_path / "2", fail={"bootstrap", "load"})
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert not load_launch_agent(501, "/p.plist")


def steps(*args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    """installer/steps.py with site-packages off: it must run before AI Farm and its dependencies are installed."""
    return subprocess.run([sys.executable, "-S", str(STEPS), *args], check=False, capture_output=True, text=True,
                          timeout=60, env={"PATH": path})


def test_steps_launch_agent_writes_and_loads_the_plist(tmp_path: Path) -> None:
    """The installer's macOS step: the log's directory, the plist as launch_agent_plist says, then launchctl."""
    bin_dir, calls = fake_launchctl(tmp_path, fail=set())
    plist, log = tmp_path / "LaunchAgents" / "a.plist", tmp_path / "data" / "logs" / "agent.log"
    done = steps("launch-agent", "--launcher", "/l/aifarm", "--plist", str(plist), "--log", str(log),
                 path=f"{bin_dir}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert plist.read_text() == launch_agent_plist("/l/aifarm", str(log)) and log.parent.is_dir()
    assert calls.read_text().splitlines()[-1] == f"bootstrap gui/{os.getuid()} {plist}"


def test_xdg_autostart_entry_runs_the_launcher() -> None:
    """A desktop entry whose Exec runs `LAUNCHER run`, quoted and escaped as the spec requires."""
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]
    entry.read_string(xdg_autostart_entry("/home/v/.local/bin/aifarm"))
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Terminal"] == "false"
    assert section["Exec"] == '"/home/v/.local/bin/aifarm" run'
    odd = xdg_autostart_entry('/home/a b/$x"%\\/aifarm')
    assert 'Exec="/home/a b/\\\\$x\\\\"%%\\\\\\\\/aifarm" run\n' in odd


def test_steps_xdg_autostart_writes_the_entry(tmp_path: Path) -> None:
    """The installer's Linux step writes exactly xdg_autostart_entry's text."""
    out = tmp_path / "autostart" / "aifarm.desktop"
    done = steps("xdg-autostart", "--launcher", "/l/aifarm", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == xdg_autostart_entry("/l/aifarm")


def test_windows_shortcut_starts_the_windowless_tray_launcher() -> None:
    """The Startup shortcut targets the gui-script that runs `aifarm run` with the tray, no arguments."""
    shortcut = windows_shortcut(r"C:\Users\v\AppData\Local\aifarm\venv")
    assert shortcut.target == r"C:\Users\v\AppData\Local\aifarm\venv\Scripts\aifarm-tray.exe"
    assert shortcut.arguments == "" and shortcut.description.startswith("AI Farm")
    gui_scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["gui-scripts"]
    assert gui_scripts[PureWindowsPath(shortcut.target).stem] == "app.cli:main_tray"
    done = steps("windows-shortcut", "--venv", r"C:\v")
    assert json.loads(done.stdout) == {"target": r"C:\v\Scripts\aifarm-tray.exe", "arguments": "",
                                       "description": shortcut.description}


def test_main_tray_is_aifarm_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """aifarm-tray ARGS is `aifarm run ARGS` (here --help, which prints run's usage)."""
    monkeypatch.setattr(sys, "argv", ["aifarm-tray", "--help"])
    with pytest.raises(SystemExit) as stopped:
        main_tray()
    assert stopped.value.code == 0 and capsys.readouterr().out.startswith("usage: aifarm run")


def test_train_extra_declared_and_torch_still_a_dependency() -> None:
    """pyproject's train extra names torch >= 2.10, numpy, and the model files' and tokenizers' packages (the
    installers install .[train])."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["train"] == ["torch>=2.10", "numpy>=1.26", "safetensors>=0.4",
                                                         "tokenizers>=0.15"]


def test_install_ps1_checks_every_native_call() -> None:
    """Every `& $X ...` call in install.ps1 is followed by a check of $LASTEXITCODE on the next line."""
    lines = (ROOT / "installer" / "install.ps1").read_text().splitlines()
    calls = [number for number, line in enumerate(lines) if re.search(r"&\s+\$\w+", line)]
    assert len(calls) >= 5
    for number in calls:
        assert "$LASTEXITCODE" in lines[number + 1], lines[number]
    text = "\n".join(lines)
    assert "-3.11" not in text and "GB" not in text and "aifarm-tray" in text
