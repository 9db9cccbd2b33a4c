"""Calls to other agents' peer APIs, signed with the farm secret, with errors a volunteer can act on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from app.files import publish_atomically
from app.peerapi import auth

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=3)
MAX_DOWNLOAD_BYTES = 20 * (1 << 30)


Progress = Callable[[int, int | None], None]  # bytes so far, total when known


class PeerError(Exception):
    """A peer API call failed; the message says how."""


class ChecksumMismatch(PeerError):
    """A downloaded file did not match the sha256 it was asked for; it was discarded."""


def _hash_into(path: Path, digest: Any) -> int:
    """Feed a file's bytes to digest; returns its size."""
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size


class PeerClient:
    """A small signed HTTP client for the peer API (one aiohttp session, owned by the agent)."""

    def __init__(self, own_client_id: str, secret: Callable[[], str | None]) -> None:
        self.own_client_id = own_client_id
        self._secret = secret  # read per request: the farm secret arrives after the agent starts
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        self._session = aiohttp.ClientSession(timeout=DEFAULT_TIMEOUT)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        secret = self._secret()
        if secret is None or self._session is None:
            raise PeerError("this agent is not ready (no farm secret yet)")
        return {"Authorization": auth.sign(secret, method, path, self.own_client_id, body)}

    async def download(self, host: str, port: int, path: str, dest: Path, sha256: str,
                       max_bytes: int = MAX_DOWNLOAD_BYTES, progress: Progress | None = None,
                       resume: bool = False) -> None:
        """Stream a peer's file to dest through a temporary file; kept only when its sha256 matches.

        With resume, the bytes a previous interrupted download left are kept and only the rest is asked for
        (HTTP Range); the whole file is still checked against sha256, and a network failure keeps the part."""
        headers = self._headers("GET", path)
        shown = f"[{host}]" if ":" in host else host
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.download")
        digest, size = hashlib.sha256(), 0
        keep_part = False
        if resume and tmp.is_file() and 0 < tmp.stat().st_size < max_bytes:
            size = await asyncio.to_thread(_hash_into, tmp, digest)
            headers["Range"] = f"bytes={size}-"
        assert self._session is not None
        try:
            async with self._session.get(f"http://{shown}:{port}{path}", headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=None, sock_read=60, connect=5)) as response:
                if response.status == 200 and size:
                    digest, size = hashlib.sha256(), 0  # the peer sent the whole file: start over
                elif response.status != 200 and not (response.status == 206 and size):
                    raise PeerError(f"{host}:{port} answered HTTP {response.status} for {path}")
                keep_part = resume
                with tmp.open("ab" if size else "wb") as handle:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        size += len(chunk)
                        if size > max_bytes:
                            keep_part = False
                            raise PeerError(f"{path} from {host}:{port} is larger than {max_bytes} bytes")
                        digest.update(chunk)
                        handle.write(chunk)
                        if progress is not None:
                            progress(size, response.content_length)
            if digest.hexdigest() != sha256:
                keep_part = False
                raise ChecksumMismatch(f"{path} from {host}:{port} does not match its sha256; discarded")
            keep_part = False
            publish_atomically(tmp, dest)
        except aiohttp.ClientError as exc:
            raise PeerError(f"downloading {path} from {host}:{port} failed: {exc}") from None
        except asyncio.TimeoutError:
            raise PeerError(f"downloading {path} from {host}:{port} timed out") from None
        finally:
            if not keep_part:
                tmp.unlink(missing_ok=True)

    async def probe(self, host: str, port: int, size: int) -> float:
        """Seconds to fetch `size` bytes from a peer's probe route (request, answer and every byte); raises PeerError."""
        path = f"/peer/v1/probe/{size}"
        headers = self._headers("GET", path)
        shown = f"[{host}]" if ":" in host else host
        assert self._session is not None
        begin = time.perf_counter()
        try:
            async with self._session.get(f"http://{shown}:{port}{path}", headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=120, connect=5)) as response:
                if response.status != 200:
                    raise PeerError(f"{host}:{port} answered HTTP {response.status} for {path}")
                received = 0
                async for chunk in response.content.iter_chunked(1 << 20):
                    received += len(chunk)
        except aiohttp.ClientError as exc:
            raise PeerError(f"probing {host}:{port} failed: {exc}") from None
        except asyncio.TimeoutError:
            raise PeerError(f"probing {host}:{port} timed out") from None
        if received != size:
            raise PeerError(f"{host}:{port} sent {received} of {size} probe bytes")
        return time.perf_counter() - begin

    async def post_json(self, host: str, port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to a peer API path and return its JSON answer; raises PeerError."""
        data = json.dumps(body).encode()
        headers = {**self._headers("POST", path, data), "Content-Type": "application/json"}
        shown = f"[{host}]" if ":" in host else host
        assert self._session is not None
        try:
            async with self._session.post(f"http://{shown}:{port}{path}", data=data, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=600)) as response:
                answer = await response.json(content_type=None)
                if response.status != 200 or not isinstance(answer, dict):
                    raise PeerError(f"{host}:{port} answered HTTP {response.status}: {answer}")
                return answer
        except (aiohttp.ClientError, ValueError) as exc:
            raise PeerError(f"talking to {host}:{port} failed: {exc}") from None
        except asyncio.TimeoutError:
            raise PeerError(f"{host}:{port} did not answer in time") from None

    async def get_json(self, host: str, port: int, path: str) -> dict[str, Any]:
        """GET a peer API path and return its JSON body; raises PeerError."""
        headers = self._headers("GET", path)
        assert self._session is not None
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}{path}"
        try:
            async with self._session.get(url, headers=headers) as response:
                if response.status == 401:
                    raise PeerError(f"{host}:{port} refused our farm signature (different farm secret, or this "
                                    "client not active in its farm database?)")
                if response.status != 200:
                    raise PeerError(f"{host}:{port} answered HTTP {response.status}")
                data = await response.json()
                if not isinstance(data, dict):
                    raise PeerError(f"{host}:{port} sent a malformed answer")
                return data
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror if exc.os_error and exc.os_error.strerror else str(exc)
            raise PeerError(f"cannot connect to {host}:{port}: {reason}") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise PeerError(f"no answer from {host}:{port} within {DEFAULT_TIMEOUT.total:.0f} s (firewall dropping packets?)") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise PeerError(f"talking to {host}:{port} failed: {exc}") from None
