"""Connection limits for the agent's HTTP servers: request head and body deadlines, caps per address and in all.

aiohttp has no deadline for reading a request head or body, so a client that sends half a header and then one
byte now and then would hold its socket (a file descriptor) forever. Each connection is wrapped in a protocol
that follows the request framing (head, Content-Length or chunked body) and closes the connection when a head
or body is not complete in time. The listening sockets are served by this module's own accept loop, so that a
refused or slow connection's descriptor is released at once and an exhausted descriptor table is logged once
a minute instead of once per accept.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

log = logging.getLogger(__name__)

FD_RESERVE = 96  # descriptors kept for the database, zeroconf, workers, peer downloads and logs
ACCEPT_BATCH = 16  # connections accepted per readiness event of a listening socket
ACCEPT_RETRY_SECONDS = 0.5
LOG_INTERVAL_SECONDS = 60.0
MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\d{1,18})[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_CHUNKED = re.compile(rb"^transfer-encoding[ \t]*:.*chunked", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request head and body may take to arrive, and how many connections are served."""

    head_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 15.0
    per_address: int = 32
    total: int = 256

    @classmethod
    def for_open_files(cls, soft_limit: int) -> ConnectionLimits:
        """Limits whose total cap leaves FD_RESERVE descriptors of the open-files limit to the rest of the agent."""
        total = max(16, min(1024, soft_limit - FD_RESERVE - 2 * ACCEPT_BATCH))
        return cls(per_address=min(32, total), total=total)


@dataclass
class ConnectionStats:
    """Counters of the guard since the agent started."""

    open: int = 0
    accepted: int = 0
    refused_per_address: int = 0
    refused_total: int = 0
    evicted: int = 0
    head_timeouts: int = 0
    body_timeouts: int = 0
    accept_errors: int = 0


class ThrottledLog:
    """Logs a recurring message at most once per interval, saying how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def emit(self, level: int, key: str, message: str, *args: object) -> None:
        """Log now unless `key` was logged within the interval (then only count it)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            message += f" ({held} more like it suppressed in the last {self._interval:.0f} s)"
        self._logger.log(level, message, *args)


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, throttle: ThrottledLog) -> None:
    """Route asyncio's 'socket.accept() out of system resource' reports through `throttle`; others as before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" in str(context.get("message", "")):
            throttle.emit(logging.ERROR, "accept", "socket.accept() out of system resource: %s", context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


Stage = Literal["head", "body", "idle"]


class RequestFraming:
    """Follows HTTP/1.1 request framing on a connection: where each head and body begins and ends."""

    def __init__(self) -> None:
        self.completed = 0  # requests whose head and body arrived
        self.stage: Stage = "head"
        self._head = bytearray()
        self._remaining = 0
        self._chunk: Literal["size", "data", "crlf", "trailer"] | None = None
        self._line = bytearray()

    def feed(self, data: bytes) -> None:
        """Account for bytes received."""
        view = memoryview(data)
        while view:
            if self.stage in ("idle", "head"):
                self.stage = "head"
                view = self._feed_head(view)
            elif self._chunk is None:
                taken = min(self._remaining, len(view))
                self._remaining -= taken
                view = view[taken:]
                if not self._remaining:
                    self._finish()
            else:
                view = self._feed_chunked(view)

    def _feed_head(self, view: memoryview) -> memoryview:
        if not self._head:
            while view and bytes(view[:1]) in (b"\r", b"\n"):  # blank lines before a request line are allowed
                view = view[1:]
            if not view:
                return view
        start = max(0, len(self._head) - 3)
        self._head += view
        end = self._head.find(b"\r\n\r\n", start)
        size = 4
        bare = self._head.find(b"\n\n", start)
        if bare != -1 and (end == -1 or bare < end):
            end, size = bare, 2
        if end == -1:
            if len(self._head) > MAX_HEAD_BYTES:  # the server refuses it; stop buffering, the deadline still runs
                del self._head[: -3]
            return view[len(view):]
        head = bytes(self._head[: end + size])
        rest = len(self._head) - (end + size)
        self._head.clear()
        if _CHUNKED.search(head):
            self.stage, self._chunk, self._line = "body", "size", bytearray()
        elif (length := _CONTENT_LENGTH.search(head)) and int(length.group(1)) > 0:
            self.stage, self._chunk, self._remaining = "body", None, int(length.group(1))
        else:
            self._finish()
        return view[len(view) - rest:]

    def _feed_chunked(self, view: memoryview) -> memoryview:
        if self._chunk == "data":
            taken = min(self._remaining, len(view))
            self._remaining -= taken
            if not self._remaining:
                self._chunk = "crlf"
            return view[taken:]
        newline = bytes(view).find(b"\n")
        if newline == -1:
            if len(self._line) < MAX_LINE_BYTES:
                self._line += view
            return view[len(view):]
        line = (bytes(self._line) + bytes(view[:newline])).strip()
        self._line = bytearray()
        view = view[newline + 1:]
        if self._chunk == "size":
            try:
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                size = 0  # the server rejects the body; treat it as ended
            self._chunk, self._remaining = ("data", size) if size else ("trailer", 0)
        elif self._chunk == "crlf":
            self._chunk = "size"
        elif not line:  # the empty line after the trailers ends the body
            self._finish()
        return view

    def _finish(self) -> None:
        self.completed += 1
        self.stage, self._chunk, self._remaining = "idle", None, 0


@dataclass(eq=False)
class _Slot:
    """One admitted connection as the guard sees it."""

    address: str
    protocol: GuardedProtocol
    evictable: bool = True


@dataclass
class ConnectionGuard:
    """Admits connections within the caps, evicts the oldest unproven one when full, and counts what it closes."""

    limits: ConnectionLimits
    stats: ConnectionStats = field(default_factory=ConnectionStats)
    throttle: ThrottledLog = field(default_factory=lambda: ThrottledLog(log))
    _slots: OrderedDict[int, _Slot] = field(default_factory=OrderedDict)
    _per_address: dict[str, int] = field(default_factory=dict)

    def admit(self, protocol: GuardedProtocol, address: str) -> bool:
        """True when the connection may be served (and is now counted); False: close it at once."""
        if self._per_address.get(address, 0) >= self.limits.per_address:
            self.stats.refused_per_address += 1
            self._report()
            return False
        if len(self._slots) >= self.limits.total:
            victim = next((slot for slot in self._slots.values() if slot.evictable), None)
            if victim is None:
                self.stats.refused_total += 1
                self._report()
                return False
            self.stats.evicted += 1
            self._report()
            victim.protocol.close_now()
        self._slots[id(protocol)] = _Slot(address, protocol)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self.stats.accepted += 1
        self.stats.open = len(self._slots)
        return True

    def set_evictable(self, protocol: GuardedProtocol, evictable: bool) -> None:
        """Connections waiting for a request head may be evicted; those in a request may not."""
        slot = self._slots.get(id(protocol))
        if slot is not None:
            slot.evictable = evictable

    def release(self, protocol: GuardedProtocol) -> None:
        """The connection is closed."""
        slot = self._slots.pop(id(protocol), None)
        if slot is None:
            return
        left = self._per_address.get(slot.address, 1) - 1
        if left > 0:
            self._per_address[slot.address] = left
        else:
            self._per_address.pop(slot.address, None)
        self.stats.open = len(self._slots)

    def timed_out(self, stage: Stage) -> None:
        """Count a connection closed for a slow head or body."""
        if stage == "body":
            self.stats.body_timeouts += 1
        else:
            self.stats.head_timeouts += 1
        self._report()

    def accept_failed(self, exc: OSError) -> None:
        """Count and (once a minute) log an accept that failed for lack of descriptors or memory."""
        self.stats.accept_errors += 1
        self.throttle.emit(logging.ERROR, "accept", "socket.accept() out of system resource: %s", exc)

    def describe(self) -> dict[str, int]:
        """The counters, for the status API."""
        return asdict(self.stats)

    def _report(self) -> None:
        s, lim = self.stats, self.limits
        self.throttle.emit(
            logging.WARNING, "closed",
            "closing excess or slow connections (at most %d per address, %d in all; request head within %.0f s, "
            "body within %.0f s): so far %d refused, %d evicted, %d timed out",
            lim.per_address, lim.total, lim.head_timeout, lim.body_timeout,
            s.refused_per_address + s.refused_total, s.evicted, s.head_timeouts + s.body_timeouts)


class GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's request handler: admission by the guard and head/body deadlines; all else passes through."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard, sock: socket.socket | None = None) -> None:
        self._inner = inner
        self._guard = guard
        self._sock = sock
        self._transport: asyncio.Transport | None = None
        self._framing = RequestFraming()
        self._stage_key: tuple[int, Stage] = (0, "head")
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._guard.admit(self, address):
            self.close_now()
            return
        self._admitted = True
        self._inner.connection_made(transport)
        self._arm("head")

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._framing.feed(data)
        stage = self._framing.stage
        key = (self._framing.completed, stage)
        if key != self._stage_key:
            self._stage_key = key
            if stage == "idle":
                self._disarm()  # the request is in: aiohttp's keep-alive timeout covers the wait for the next one
            else:
                self._arm(stage)
            self._guard.set_evictable(self, stage == "head")
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        if self._admitted:
            self._admitted = False
            self._guard.release(self)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def close_now(self) -> None:
        """Drop the connection and release its descriptor now."""
        if self._closed:
            return
        self._closed = True
        self._disarm()
        if self._admitted:  # the descriptor is free below; stop counting it now
            self._guard.release(self)
        if self._transport is not None:
            self._transport.abort()
        if self._sock is not None:
            self._sock.close()  # abort() closes it only on the next loop iteration; the transport's close is then a no-op

    def _arm(self, stage: Stage) -> None:
        self._disarm()
        limits = self._guard.limits
        delay = limits.body_timeout if stage == "body" else limits.head_timeout
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire, stage)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, stage: Stage) -> None:
        self._timer = None
        self._guard.timed_out(stage)
        self.close_now()


class _Listener:
    """Accepts on listening sockets itself, so that refused and slow connections free their descriptor at once."""

    def __init__(self, sockets: list[socket.socket], factory: Callable[[], asyncio.Protocol], guard: ConnectionGuard) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = sockets
        self._factory = factory
        self._guard = guard
        self._retry: dict[int, asyncio.TimerHandle] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets."""
        return list(self._sockets)

    def start(self) -> None:
        """Start accepting."""
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets."""
        for handle in self._retry.values():
            handle.cancel()
        self._retry.clear()
        for sock in self._sockets:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        for task in self._pending:
            task.cancel()

    async def wait_closed(self) -> None:
        """Nothing to wait for once closed."""

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._guard.accept_failed(exc)
                    fd = listening.fileno()
                    self._loop.remove_reader(fd)
                    self._retry[fd] = self._loop.call_later(ACCEPT_RETRY_SECONDS, self._resume, listening)
                    return
                continue  # the peer gave up before we accepted (ECONNABORTED and the like)
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        protocol = GuardedProtocol(self._factory(), self._guard, conn)
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError as exc:
            log.debug("connection not set up: %s", exc)
            conn.close()

    def _resume(self, listening: socket.socket) -> None:
        fd = listening.fileno()
        self._retry.pop(fd, None)
        if fd != -1:
            self._loop.add_reader(fd, self._accept, listening)


def _listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of host (one port for all)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys((i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GuardedSite(web.BaseSite):
    """An aiohttp TCP site whose connections go through a ConnectionGuard."""

    __slots__ = ("_guard", "_host", "_listener", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._listener: _Listener | None = None

    @property
    def name(self) -> str:
        """The site's URL."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the requested one before start)."""
        sockets = getattr(self._server, "sockets", None)
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        """Bind and start accepting (OSError when the address cannot be bound)."""
        await super().start()
        server = self._runner.server
        assert server is not None
        sockets = _listening_sockets(self._host, self._port, self._backlog)
        listener = _Listener(sockets, server, self._guard)
        try:
            listener.start()
        except NotImplementedError:  # a loop without add_reader (Windows' proactor): asyncio accepts instead
            listener.close()
            guard = self._guard
            self._server = await asyncio.get_running_loop().create_server(
                lambda: GuardedProtocol(server(), guard), self._host, self._port, backlog=self._backlog)
            return
        self._listener = listener
        self._server = listener  # type: ignore[assignment]  # close() and sockets, as aiohttp's runner uses them
