"""Calls to other agents' peer APIs, signed with the farm secret, with errors a volunteer can act on."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from app.peerapi import auth

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=5, connect=3)


class PeerError(Exception):
    """A peer API call failed; the message says how."""


class PeerClient:
    """A small signed HTTP client for the peer API (one aiohttp session, owned by the agent)."""

    def __init__(self, own_client_id: str, secret_source: Any) -> None:
        self.own_client_id = own_client_id
        self._secret_source = secret_source  # an object with a .farm_secret attribute
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        self._session = aiohttp.ClientSession(timeout=DEFAULT_TIMEOUT)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(self, host: str, port: int, path: str) -> dict[str, Any]:
        """GET a peer API path and return its JSON body; raises PeerError."""
        secret = self._secret_source.farm_secret
        if secret is None or self._session is None:
            raise PeerError("this agent is not ready (no farm secret yet)")
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}{path}"
        headers = {"Authorization": auth.sign(secret, "GET", path, self.own_client_id)}
        try:
            async with self._session.get(url, headers=headers) as response:
                if response.status == 401:
                    raise PeerError(f"{host}:{port} refused our farm signature (different farm secret?)")
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
