"""Supervised loops: a failing loop is restarted with backoff and each burst of failures is logged once."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from app.supervise import Backoff, LoopStatus, supervise

FAST = Backoff(first=0.01, maximum=0.04, healthy_after=60.0)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.supervise" and r.levelno >= logging.WARNING]


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_loop_that_fails_twice_is_restarted_and_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    """OSError twice, then the body works: it runs on, restarted twice, with one warning line and no traceback."""
    caplog.set_level(logging.DEBUG)
    calls, ticks = 0, 0
    running = asyncio.Event()

    async def body() -> None:
        nonlocal calls, ticks
        calls += 1
        if calls <= 2:
            raise OSError(errno.EMFILE, "Too many open files")
        while True:
            ticks += 1
            running.set()
            await asyncio.sleep(0.01)

    status = LoopStatus("metrics")
    task = asyncio.create_task(supervise(body, status, FAST))
    try:
        await asyncio.wait_for(running.wait(), 5)
        seen = ticks
        await asyncio.sleep(0.2)
        assert ticks > seen and not task.done()
        assert (calls, status.state, status.restarts) == (3, "running", 2)
        warnings = _warnings(caplog)
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "metrics" in warnings[0].getMessage() and "Too many open files" in warnings[0].getMessage()
        assert warnings[0].exc_info is None
    finally:
        await _stop(task)


async def test_loop_failing_every_time_logs_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    """A body that fails at once, again and again, is logged once, not once per restart."""
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        raise OSError(errno.ENFILE, "Too many open files in system")

    status = LoopStatus("reachability")
    task = asyncio.create_task(supervise(body, status, Backoff(first=0.001, maximum=0.002, healthy_after=60.0)))
    try:
        while calls < 20:
            await asyncio.sleep(0.01)
        assert status.state == "restarting" and status.restarts >= 19
        assert len(_warnings(caplog)) == 1
    finally:
        await _stop(task)


async def test_a_new_burst_after_a_healthy_run_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    """Fail, run healthily, fail again: two bursts, two lines; a bug (not a transient error) gets its traceback."""
    calls = 0
    done = asyncio.Event()

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        if calls == 2:
            await asyncio.sleep(0.1)  # longer than healthy_after
            raise KeyError("missing")
        done.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise(body, LoopStatus("heartbeat"), Backoff(0.01, 0.02, healthy_after=0.05)))
    try:
        await asyncio.wait_for(done.wait(), 5)
        warnings = _warnings(caplog)
        assert [r.levelno for r in warnings] == [logging.WARNING, logging.ERROR]
        assert warnings[0].exc_info is None and warnings[1].exc_info is not None
    finally:
        await _stop(task)


async def test_a_loop_that_returns_is_finished() -> None:
    """A body that returns is not restarted."""
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1

    status = LoopStatus("once")
    await asyncio.wait_for(supervise(body, status, FAST), 5)
    assert (calls, status.state) == (1, "finished")
