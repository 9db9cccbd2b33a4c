"""The connection guard on a real aiohttp server and real sockets: deadlines, caps, eviction and throttled logs."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from app.netguard import (
    ConnectionGuard,
    ConnectionLimits,
    GuardedSite,
    RequestFraming,
    ThrottledLog,
    throttle_accept_errors,
)

SLOW = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

Serve = Callable[[ConnectionLimits], Awaitable[tuple[ConnectionGuard, int]]]


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a guarded echo server with the given limits; returns (guard, port)."""
    runners: list[web.AppRunner] = []

    async def start(limits: ConnectionLimits) -> tuple[ConnectionGuard, int]:
        app = web.Application()
        app.router.add_route("*", "/", _echo)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.keepalive_timeout)
        await runner.setup()
        runners.append(runner)
        guard = ConnectionGuard(limits)
        site = GuardedSite(runner, "127.0.0.1", 0, guard)
        await site.start()
        return guard, site.port

    yield start
    for runner in runners:
        await runner.cleanup()


async def _connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within `seconds` (without answering)."""
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_requests_keep_alive_and_chunked_bodies_pass(serve: Serve) -> None:
    """Normal use is untouched: keep-alive requests, a Content-Length body and a chunked body."""
    guard, port = await serve(ConnectionLimits(head_timeout=0.5, body_timeout=0.5, per_address=2, total=4))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        for _ in range(3):
            async with session.get("/") as response:
                assert await response.text() == "0"
            await asyncio.sleep(0.2)
        async with session.post("/", data=b"y" * 70_000) as response:
            assert await response.text() == "70000"
        async with session.post("/", data=chunks()) as response:
            assert await response.text() == "3000"
        await asyncio.sleep(0.7)  # idle keep-alive is aiohttp's keep-alive timeout, not the head deadline
        async with session.get("/") as response:
            assert await response.text() == "0"
    assert guard.stats.head_timeouts == guard.stats.body_timeouts == 0
    assert guard.stats.accepted == 1


async def test_slow_head_and_silent_connection_are_closed(serve: Serve) -> None:
    """A head dripped a byte at a time, and a connection that sends nothing, are closed at the head deadline."""
    guard, port = await serve(ConnectionLimits(head_timeout=0.4, body_timeout=5, per_address=8, total=8))
    silent_reader, silent = await _connect(port)
    reader, writer = await _connect(port)
    writer.write(SLOW)

    async def drip() -> None:
        while not writer.is_closing():
            writer.write(b"a")
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        assert await _closed_within(reader, 3)
        assert await _closed_within(silent_reader, 3)
    finally:
        dripping.cancel()
        writer.close()
        silent.close()
    assert guard.stats.head_timeouts == 2 and guard.stats.open == 0


async def test_slow_body_is_closed(serve: Serve) -> None:
    """A body that does not arrive in body_timeout: closed, counted as a body timeout."""
    guard, port = await serve(ConnectionLimits(head_timeout=0.3, body_timeout=0.6, per_address=8, total=8))
    reader, writer = await _connect(port)
    writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n" + b"z" * 10)
    await asyncio.sleep(0.4)  # beyond the head deadline: the head was complete, so only the body's counts
    assert not reader.at_eof() and guard.stats.head_timeouts == 0
    try:
        assert await _closed_within(reader, 3)
    finally:
        writer.close()
    assert guard.stats.body_timeouts == 1


async def test_per_address_cap_refuses_at_once_and_others_are_served(serve: Serve) -> None:
    """Beyond per_address connections from one address: closed at once; another address is still served."""
    guard, port = await serve(ConnectionLimits(head_timeout=30, body_timeout=30, per_address=3, total=8))
    held = [await _connect(port, "127.0.0.2") for _ in range(3)]
    extra_reader, extra = await _connect(port, "127.0.0.2")
    try:
        assert await _closed_within(extra_reader, 2)
        assert guard.stats.refused_per_address == 1
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
        assert all(not reader.at_eof() for reader, _ in held)
    finally:
        extra.close()
        for _, writer in held:
            writer.close()


async def test_full_server_evicts_the_oldest_connection_without_a_request(serve: Serve) -> None:
    """At the total cap a new connection replaces the oldest one that has not sent a request head."""
    guard, port = await serve(ConnectionLimits(head_timeout=30, body_timeout=30, per_address=4, total=4))
    held = [await _connect(port, f"127.0.0.{3 + i % 2}") for i in range(4)]
    await asyncio.sleep(0.1)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
        assert await _closed_within(held[0][0], 2)
        assert all(not reader.at_eof() for reader, _ in held[1:])
        assert guard.stats.evicted == 1
    finally:
        for _, writer in held:
            writer.close()


def test_framing_follows_pipelined_and_chunked_requests() -> None:
    """Heads, Content-Length and chunked bodies, split anywhere, pipelined: each request counted once."""
    stream = (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
              b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
              b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nTrailer: t\r\n\r\n"
              b"GET / HTTP/1.1\n\n")
    for size in (1, 3, 7, len(stream)):
        framing = RequestFraming()
        for i in range(0, len(stream), size):
            framing.feed(stream[i:i + size])
        assert (framing.completed, framing.stage) == (4, "idle"), size
    framing = RequestFraming()
    framing.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel")
    assert (framing.completed, framing.stage) == (0, "body")
    framing.feed(b"lo" + SLOW)
    assert (framing.completed, framing.stage) == (1, "head")


def test_throttled_log_says_how_many_were_held_back(caplog: pytest.LogCaptureFixture) -> None:
    """Once per interval, then a line with the count of those suppressed."""
    now = [0.0]
    throttle = ThrottledLog(logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0])
    for _ in range(1000):
        throttle.emit(logging.ERROR, "accept", "out of descriptors")
    now[0] = 61.0
    throttle.emit(logging.ERROR, "accept", "out of descriptors")
    messages = [r.getMessage() for r in caplog.records if r.name == "test.throttle"]
    assert messages == ["out of descriptors", "out of descriptors (999 more like it suppressed in the last 60 s)"]


async def test_asyncio_accept_errors_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio's 'socket.accept() out of system resource' reports: one line a minute; other reports unchanged."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    throttle_accept_errors(loop, ThrottledLog(logging.getLogger("test.accept")))
    try:
        for _ in range(500):
            loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                         "exception": OSError(24, "Too many open files")})
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.set_exception_handler(previous)
    assert len([r for r in caplog.records if r.name == "test.accept"]) == 1
    assert any(r.name == "asyncio" and "something else" in r.getMessage() for r in caplog.records)


async def test_out_of_descriptors_is_logged_once_and_serving_resumes(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """accept() failing with EMFILE: counted, logged once however often it is retried, served once files free up."""
    guard, port = await serve(ConnectionLimits(head_timeout=30, body_timeout=30, per_address=8, total=8))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    writer: asyncio.StreamWriter | None = None
    # Another test's garbage finalised while no descriptor is free would fail here instead (it opens files).
    gc.collect()
    gc.disable()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
        with pytest.raises(OSError):
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        os.close(fillers.pop())  # room for the client's socket only: the server's accept() fails
        reader, writer = await _connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await asyncio.sleep(1.6)  # the accept is retried every 0.5 s
        assert guard.stats.accept_errors >= 2
        lines = [r for r in caplog.records if r.name == "app.netguard" and "out of system resource" in r.getMessage()]
        assert len(lines) == 1
        for fd in fillers:
            os.close(fd)
        fillers.clear()
        answer = await asyncio.wait_for(reader.read(200), 3)
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for fd in fillers:
            os.close(fd)
        if writer is not None:
            writer.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        gc.enable()
