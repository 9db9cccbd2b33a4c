"""`aifarm doctor`: checks of this machine's set-up, each with what to do when it fails."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from app.config import Settings
from app.errors import AifarmError
from app.runtime_files import read_running_agent

Verdict = Literal["ok", "warning", "problem"]
LOW_DISK_BYTES = 5 << 30
DATABASE_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Finding:
    """One check: its name, the verdict, what was found, and the fix when it is not ok."""

    check: str
    verdict: Verdict
    detail: str
    fix: str = ""


async def run_checks(settings: Settings) -> list[Finding]:
    """Every check, in the order a volunteer would fix them."""
    return [
        await check_database(settings),
        *check_ports(settings),
        check_multicast(settings),
        check_firewall(settings),
        check_gpu(),
        check_training(),
        check_tray(),
        check_sandbox(),
        check_disk(settings.data_dir),
    ]


async def check_database(settings: Settings) -> Finding:
    """The farm database answers and its schema is this version's."""
    from app.db.engine import create_database
    from app.db.migrate import ensure_current

    if settings.database_url is None:
        path = settings.data_dir / "aifarm.sqlite3"
        if not path.exists():
            return Finding("database", "ok", f"embedded database {path} is created at the first `aifarm run`")
    url = settings.database_url or f"sqlite:///{settings.data_dir / 'aifarm.sqlite3'}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return Finding("database", "problem", f"the database file {url.removeprefix('sqlite:///')} does not exist",
                       "check database_url, or run `aifarm db upgrade` to create it")
    try:
        db = create_database(url)
    except AifarmError as exc:
        return Finding("database", "problem", str(exc), "fix database_url (`aifarm config` shows where it is set)")
    try:
        revision = await asyncio.wait_for(ensure_current(db), DATABASE_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        return Finding("database", "problem", f"{db.display_url} did not answer within {DATABASE_TIMEOUT_SECONDS:.0f} s",
                       "check the host and port, and that it is a MySQL/MariaDB server")
    except AifarmError as exc:
        return Finding("database", "problem", str(exc), "run `aifarm db upgrade` with an account that may create tables")
    finally:
        await db.dispose()
    return Finding("database", "ok", f"{db.display_url} at schema revision {revision}")


def check_ports(settings: Settings) -> list[Finding]:
    """The dashboard and peer ports are free, or held by this data dir's running agent."""
    running = read_running_agent(settings.data_dir)
    findings = []
    for name, host, port in (("dashboard port", settings.dashboard_host, settings.dashboard_port),
                             ("peer port", settings.peer_host, settings.peer_port)):
        setting = "dashboard_port" if name == "dashboard port" else "peer_port"
        if running and int(running.get(setting, -1)) == port:
            findings.append(Finding(name, "ok", f"{host}:{port} is served by the running agent (pid {running['pid']})"))
        elif port == 0:
            findings.append(Finding(name, "ok", "any free port is taken at start"))
        elif _can_bind(host, port):
            findings.append(Finding(name, "ok", f"{host}:{port} is free"))
        else:
            findings.append(Finding(name, "problem", f"{host}:{port} is in use by another program",
                                    f"stop that program, or choose another port: `{setting} = N` in config.toml"))
    return findings


def _can_bind(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_multicast(settings: Settings) -> Finding:
    """An interface that is up and has multicast, so zeroconf can find peers."""
    if not settings.mdns:
        return Finding("multicast", "ok", "zeroconf is off; peers come from the `peers` setting")
    usable = [name for name, stats in psutil.net_if_stats().items()
              if stats.isup and "multicast" in getattr(stats, "flags", "multicast").split(",") and not name.startswith("lo")]
    if usable:
        return Finding("multicast", "ok", f"zeroconf can use {', '.join(sorted(usable))}")
    return Finding("multicast", "warning", "no network interface with multicast is up",
                   "list peers by address instead: `mdns = false` and `peers = [\"host:8471\"]`")


def check_firewall(settings: Settings) -> Finding:
    """Which firewall tool is present and the rule other agents need to reach this one."""
    port = settings.peer_port or 8471
    if shutil.which("ufw"):
        return Finding("firewall", "warning", "ufw is installed; if it is active, peers cannot reach this agent",
                       f"sudo ufw allow {port}/tcp && sudo ufw allow 5353/udp")
    if shutil.which("firewall-cmd"):
        return Finding("firewall", "warning", "firewalld is installed; if it is active, peers cannot reach this agent",
                       f"sudo firewall-cmd --add-port={port}/tcp --add-service=mdns --permanent && sudo firewall-cmd --reload")
    if platform.system() == "Windows":
        return Finding("firewall", "warning", "Windows Firewall asks at the first start; allow private networks",
                       f"netsh advfirewall firewall add rule name=\"AI Farm\" dir=in action=allow protocol=TCP localport={port}")
    return Finding("firewall", "ok", f"no firewall tool found; peers reach this agent on TCP {port}")


def check_gpu() -> Finding:
    """NVIDIA GPUs seen through NVML or nvidia-smi."""
    from app.inventory import gpu_info

    gpus = gpu_info()
    if gpus:
        names = ", ".join(f"{gpu['index']}: {gpu['name']} ({gpu['memory_total_mb']} MB)" for gpu in gpus)
        return Finding("gpu", "ok", names)
    return Finding("gpu", "warning", "no NVIDIA GPU found: training uses the CPU",
                   "install the NVIDIA driver if this machine has an NVIDIA GPU")


def check_training() -> Finding:
    """PyTorch is installed for the workers (the agent itself never imports it)."""
    if importlib.util.find_spec("torch") is None:
        return Finding("training", "warning", "PyTorch is not installed: this agent trains nothing",
                       "install the training extra: pip install 'ai-farm[train]'")
    return Finding("training", "ok", "PyTorch is installed for the training workers")


def check_tray() -> Finding:
    """Which tray backend a desktop session would get."""
    system = platform.system()
    if system in ("Windows", "Darwin"):
        return Finding("tray", "ok", f"the {system} tray")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return Finding("tray", "ok", "no desktop session: the agent runs headless (the dashboard still works)")
    if importlib.util.find_spec("gi") is not None:
        return Finding("tray", "ok", "AppIndicator tray with a menu")
    return Finding("tray", "warning", "a plain tray icon without a menu (no PyGObject in this environment)",
                   "re-run the installer, which sets up AppIndicator on Debian/Ubuntu")


def check_sandbox() -> Finding:
    """Whether bubblewrap can confine workers here."""
    if platform.system() != "Linux":
        return Finding("sandbox", "warning", f"no sandbox on {platform.system()}: recipe code runs unconfined; "
                                             "bundle tasks run only with allow_unsandboxed_bundles = true")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Finding("sandbox", "warning", "bubblewrap is not installed", "sudo apt-get install -y bubblewrap")
    try:
        done = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("sandbox", "problem", f"bubblewrap did not run: {exc}")
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        return Finding("sandbox", "problem", f"bubblewrap cannot create a sandbox here: {reason}",
                       "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)")
    return Finding("sandbox", "ok", f"bubblewrap ({bwrap}) can confine workers; single-machine tasks get no network, "
                                    "multi-machine tasks share the host's network (not limited to their peers)")


def check_disk(data_dir: Path) -> Finding:
    """Free space where checkpoints, models and datasets go."""
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    text = f"{free / (1 << 30):.1f} GB free at {existing}"
    if free < LOW_DISK_BYTES:
        return Finding("disk", "warning", text, "free some space or move the data dir (`data_dir` setting)")
    return Finding("disk", "ok", text)


SYMBOLS: dict[Verdict, str] = {"ok": "ok", "warning": "warn", "problem": "FAIL"}


def report(findings: list[Finding]) -> str:
    """The findings as lines a volunteer reads top to bottom, each fix under its check."""
    lines = []
    for finding in findings:
        lines.append(f"[{SYMBOLS[finding.verdict]:>4}] {finding.check}: {finding.detail}")
        if finding.fix and finding.verdict != "ok":
            lines.append(f"       fix: {finding.fix}")
    problems = sum(f.verdict == "problem" for f in findings)
    warnings = sum(f.verdict == "warning" for f in findings)
    lines.append(f"{problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines)
