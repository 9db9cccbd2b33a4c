"""The peer API's probe route and the link figures taken from it, over a real 127.0.0.1 socket."""

from __future__ import annotations

import pytest

from app.peerapi.client import PeerClient, PeerError
from app.peerapi.members import FarmMembers
from app.peerapi.probe import MAX_PROBE_BYTES
from app.peerapi.server import create_peer_app
from app.services.links import link_figures
from tests.unit.test_peer_api import (  # noqa: F401 (fixtures)
    SECRET,
    ClientFactory,
    ServerFactory,
    StubAgent,
    _signed,
    farm_db,
    members,
    peer_client,
)


async def test_a_signed_probe_returns_exactly_the_bytes_asked_for(aiohttp_server: ServerFactory,
                                                                  peer_client: PeerClient, members: FarmMembers) -> None:
    server = await aiohttp_server(create_peer_app(StubAgent(SECRET), members))
    for size in (0, 1, 65_537, 4 << 20):
        seconds = await peer_client.probe("127.0.0.1", server.port, size)
        assert seconds > 0


async def test_a_probe_too_large_or_malformed_is_refused(aiohttp_server: ServerFactory, peer_client: PeerClient,
                                                         members: FarmMembers) -> None:
    server = await aiohttp_server(create_peer_app(StubAgent(SECRET), members))
    with pytest.raises(PeerError, match="HTTP 400"):
        await peer_client.probe("127.0.0.1", server.port, MAX_PROBE_BYTES + 1)


async def test_an_unsigned_probe_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    client = await aiohttp_client(create_peer_app(StubAgent(SECRET), members))
    assert (await client.get("/peer/v1/probe/1024")).status == 401
    assert (await client.get("/peer/v1/probe/1024", headers=_signed(path="/peer/v1/probe/1024"))).status == 200
    assert (await client.get("/peer/v1/probe/-5", headers=_signed(path="/peer/v1/probe/-5"))).status == 400


def test_link_figures_take_the_fastest_round_trip_off_the_transfer() -> None:
    # 4 MiB in 0.5 s + 0.01 s of round trip: 33554432 bits / 0.5 s = 67.1 Mbit/s, 10 ms.
    mbit, latency_ms = link_figures([0.02, 0.01, 0.03], 0.51, 4 << 20)
    assert mbit == pytest.approx(67.108864) and latency_ms == pytest.approx(10.0)
