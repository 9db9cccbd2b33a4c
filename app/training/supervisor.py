"""Spawning and supervising one worker process: the spec in, typed messages out, stop or kill on request."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.training.messages import MAX_LINE, BadMessage, decode

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 20.0


class WorkerHandle:
    """A running `python -m app.training.worker` child (a fresh interpreter: only it imports torch)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.stop_requested = False

    async def start(self, spec: dict[str, Any], *, threads: int, extra_env: dict[str, str] | None = None) -> None:
        """Spawn the worker and hand it its spec."""
        env = dict(os.environ)
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
        env.update(extra_env or {})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stderr = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.training.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
                limit=MAX_LINE + 1,
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

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Messages until the worker closes its output; malformed lines are logged and skipped."""
        assert self.process is not None and self.process.stdout is not None
        while True:
            try:
                line = await self.process.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                log.warning("worker %s sent an overlong line; skipped", self.pid)
                continue
            if not line:
                return
            try:
                yield decode(line)
            except BadMessage as exc:
                log.warning("worker %s: %s", self.pid, exc)

    async def wait(self) -> int:
        """Wait for the worker to exit; returns its exit code."""
        assert self.process is not None
        return await self.process.wait()

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
