"""The peer API's probe: a signed request for N bytes, timed by the caller to measure the link."""

from __future__ import annotations

from aiohttp import web

MAX_PROBE_BYTES = 16 << 20
CHUNK = bytes(1 << 16)


async def probe(request: web.Request) -> web.StreamResponse:
    """`size` zero bytes (0 to 16 MiB), streamed."""
    text = request.match_info["size"]
    if not text.isdigit() or int(text) > MAX_PROBE_BYTES:
        raise web.HTTPBadRequest(reason=f"size must be a whole number of bytes from 0 to {MAX_PROBE_BYTES}")
    size = int(text)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Cache-Control": "no-store"})
    response.content_length = size
    await response.prepare(request)
    while size > 0:
        part = CHUNK[:min(size, len(CHUNK))]
        await response.write(part)
        size -= len(part)
    await response.write_eof()
    return response
