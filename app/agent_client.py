"""The CLI's way to ask the running agent of a data dir (its dashboard API on loopback, with the API token)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from app.config import Settings
from app.errors import AifarmError
from app.runtime_files import load_or_create_api_token, read_running_agent


async def request_running_agent(settings: Settings, method: str, path: str, body: Any = None, *,
                                timeout: float = 10.0) -> Any:
    """Call the running agent's API; AifarmError when none runs, it refuses, or it does not answer within `timeout`."""
    info = read_running_agent(settings.data_dir)
    if info is None:
        raise AifarmError(f"no agent is running for data dir {settings.data_dir}; start one with `aifarm run`")
    host = info.get("dashboard_host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{info['dashboard_port']}{path}"
    token = load_or_create_api_token(settings.data_dir)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                data = await response.json(content_type=None)
                if response.status >= 400:
                    message = data.get("error", {}).get("message") if isinstance(data, dict) else None
                    raise AifarmError(f"the agent refused: {message or response.status}")
                return data
    except aiohttp.ClientError as exc:
        raise AifarmError(f"cannot reach the agent at {url}: {exc}") from None
    except asyncio.TimeoutError:
        raise AifarmError(f"the agent at {url} did not answer within {timeout:.0f} s; see `aifarm logs`") from None


async def get_from_running_agent(settings: Settings, path: str) -> Any:
    """GET an API path of the running agent."""
    return await request_running_agent(settings, "GET", path)
