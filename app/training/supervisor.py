"""Spawning and supervising one worker process: the spec in, typed messages out, stop or kill on request."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from app.training.messages import MAX_LINE, BadMessage, WorkerMessage, decode

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0
MALFORMED_REPORT_SECONDS = 60.0
WORKER_COMMAND = (sys.executable, "-m", "app.training.worker")
SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
            "ROCR_VISIBLE_DEVICES")  # what a confined worker inherits: no secrets, no database URL


def worker_command(python: Path | None = None) -> tuple[str, ...]:
    """The worker's command line with an interpreter (a bundle environment's) or the agent's own."""
    return (str(python), "-m", "app.training.worker") if python else WORKER_COMMAND


class WorkerHandle:
    """A running `python -m app.training.worker` child (a fresh interpreter: only it imports torch)."""

    def __init__(self, log_path: Path, command: Sequence[str] = WORKER_COMMAND,
                 malformed_report_seconds: float = MALFORMED_REPORT_SECONDS) -> None:
        self.log_path = log_path
        self.command = tuple(command)
        self.malformed_report_seconds = malformed_report_seconds
        self.process: asyncio.subprocess.Process | None = None
        self.stop_requested = False

    async def start(self, spec: dict[str, Any], *, threads: int, extra_env: dict[str, str] | None = None,
                    confined: bool = False, own_session: bool = False) -> None:
        """Spawn the worker and hand it its spec; `confined`: only a few harmless variables of the agent's
        environment are passed on; `own_session`: the child leaves the agent's session at once (a sandbox, which
        must not get the terminal's Ctrl-C: the agent stops its worker through stdin)."""
        env = {k: v for k, v in os.environ.items() if k in SAFE_ENV} if confined else dict(os.environ)
        env.setdefault("PATH", "/usr/bin:/bin")
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
        env.update(extra_env or {})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
                limit=MAX_LINE + 1, start_new_session=own_session,
            )
        finally:
            stderr.close()
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(spec) + "\n").encode())
        await self.process.stdin.drain()

    @property
    def pid(self) -> int | None:
        """The worker's process id."""
        return self.process.pid if self.process else None

    async def messages(self) -> AsyncIterator[WorkerMessage]:
        """Messages until the worker closes its output; malformed lines are skipped (see MalformedLines)."""
        assert self.process is not None and self.process.stdout is not None
        malformed = MalformedLines(self.pid, self.malformed_report_seconds)
        try:
            while True:
                try:
                    line = await self.process.stdout.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    malformed.add(f"line longer than {MAX_LINE} bytes")
                    continue
                if not line:
                    return
                try:
                    message = decode(line)
                except BadMessage as exc:
                    malformed.add(str(exc))
                    continue
                yield message
        finally:
            malformed.close()

    async def wait(self) -> int:
        """Wait for the worker to exit; returns its exit code."""
        assert self.process is not None
        return await self.process.wait()

    async def send(self, command: dict[str, Any]) -> bool:
        """One command line on the worker's stdin; False when it is gone."""
        if self.process is None or self.process.returncode is not None:
            return False
        try:
            assert self.process.stdin is not None
            self.process.stdin.write((json.dumps(command) + "\n").encode())
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def request_stop(self) -> None:
        """Ask for an emergency checkpoint and exit (the worker acts at its next step)."""
        self.stop_requested = True
        if self.process is None or self.process.returncode is not None:
            return
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"cmd": "stop"}\n')
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """Ask to stop, then SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None:
            return None
        await self.request_stop()
        for sig, wait in ((None, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.returncode is not None:
                break
            if sig is not None:
                try:
                    self.process.send_signal(sig)
                except ProcessLookupError:
                    break
            try:
                await asyncio.wait_for(self.process.wait(), wait)
            except asyncio.TimeoutError:
                continue
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL now."""
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass


class MalformedLines:
    """One worker's malformed lines, logged so a flood of them cannot flood the log: the first, then counts."""

    def __init__(self, pid: int | None, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.total = 0
        self.unreported = 0
        self.latest = ""
        self.reported_at = 0.0

    def add(self, reason: str) -> None:
        """One more malformed line, ignored."""
        self.total += 1
        self.latest = reason
        now = time.monotonic()
        if self.total == 1:
            log.warning("worker %s sent a malformed line, ignored: %s", self.pid, reason)
            self.reported_at = now
            return
        self.unreported += 1
        if now - self.reported_at >= self.interval:
            self._report()
            self.reported_at = now

    def close(self) -> None:
        """Log the lines not reported yet."""
        if self.unreported:
            self._report()

    def _report(self) -> None:
        log.warning("worker %s sent %d more malformed lines (%d in all), ignored; the latest: %s",
                    self.pid, self.unreported, self.total, self.latest)
        self.unreported = 0
