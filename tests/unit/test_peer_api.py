"""The peer API server and client over a real 127.0.0.1 socket: signatures from active clients of the farm (a real
SQLite clients table) required, each used once, errors a volunteer can act on."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.db.engine import Database, create_database
from app.db.migrate import upgrade
from app.db.queries import clients as client_queries
from app.peerapi import auth
from app.peerapi.client import PeerClient, PeerError
from app.peerapi.members import FarmMembers
from app.peerapi.probe import MAX_PROBE_BYTES
from app.peerapi.server import PeerDeps, create_peer_app
from app.services.links import link_figures

SECRET = "farm-secret-for-tests-0123456789"
STATUS_PATH = "/peer/v1/status"
STATUS = {"client_id": "server-0123456789ab", "farm_name": "lab", "version": "1.2.3", "peer_port": 8471}
CALLER = "caller-0123456789ab"

ClientFactory = Callable[[web.Application], Awaitable[TestClient]]
ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class StubAgent(PeerDeps):
    """The peer app's dependencies with a fixed status answer that counts its calls (and no files to serve)."""

    def __init__(self, farm_secret: str | None) -> None:
        super().__init__(Path("/nonexistent-data-dir"), lambda: farm_secret, self._status, self._fetch)
        object.__setattr__(self, "status_calls", 0)

    def _status(self) -> dict[str, Any]:
        object.__setattr__(self, "status_calls", self.status_calls + 1)
        return dict(STATUS)

    async def _fetch(self, owner: str | None, relative: str, sha256: str) -> Path | None:
        return None


def _signed(secret: str = SECRET, path: str = STATUS_PATH, now: float | None = None,
            caller: str = CALLER) -> dict[str, str]:
    """Headers with a signature of GET path by a test client."""
    return {"Authorization": auth.sign(secret, "GET", path, caller, now=now)}


async def _add_client(db: Database, client_id: str, farm_name: str = "lab") -> None:
    """An active clients row of a farm."""
    async with db.begin() as conn:
        await client_queries.upsert_client(conn, client_id=client_id, cpu_info={}, ram_info={}, gpu_info=[],
                                           session_info={"farm_name": farm_name}, version="1", hostname="h")


@pytest.fixture
async def farm_db(sqlite_url: str) -> AsyncIterator[Database]:
    """A farm database (SQLite file) where CALLER is an active client of farm 'lab'."""
    db = create_database(sqlite_url)
    await upgrade(db)
    await _add_client(db, CALLER)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def members(farm_db: Database) -> FarmMembers:
    """Membership of farm 'lab' read from farm_db."""
    return FarmMembers(farm_db, "lab")


async def _assert_unauthorized(response: Any) -> None:
    """401 with the unauthorized error body and no status data."""
    assert response.status == 401
    assert response.headers.get("WWW-Authenticate") == auth.SCHEME
    body = await response.json()
    assert body["error"]["code"] == "unauthorized"
    assert set(body) == {"error"}
    text = await response.text()
    for value in STATUS.values():
        assert str(value) not in text


async def test_request_without_authorization_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """No Authorization header: 401 and the status route is not run."""
    agent = StubAgent(SECRET)
    client = await aiohttp_client(create_peer_app(agent, members))
    await _assert_unauthorized(await client.get(STATUS_PATH))
    assert agent.status_calls == 0


async def test_request_with_wrong_secret_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """A signature made with another secret: 401."""
    agent = StubAgent(SECRET)
    client = await aiohttp_client(create_peer_app(agent, members))
    await _assert_unauthorized(await client.get(STATUS_PATH, headers=_signed(secret="other-farm")))
    assert agent.status_calls == 0


async def test_request_with_stale_timestamp_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """A correctly signed but old request (a replay): 401."""
    agent = StubAgent(SECRET)
    client = await aiohttp_client(create_peer_app(agent, members))
    stale = time.time() - auth.MAX_SKEW_SECONDS - 30
    await _assert_unauthorized(await client.get(STATUS_PATH, headers=_signed(now=stale)))


async def test_signature_for_another_path_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """A signature is bound to its path and query string."""
    client = await aiohttp_client(create_peer_app(StubAgent(SECRET), members))
    await _assert_unauthorized(await client.get(STATUS_PATH + "?x=1", headers=_signed()))


async def test_unsigned_request_to_unknown_path_is_401_not_404(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """Without a signature the server does not reveal which routes exist."""
    client = await aiohttp_client(create_peer_app(StubAgent(SECRET), members))
    await _assert_unauthorized(await client.get("/peer/v1/nothing-here"))


async def test_signed_request_gets_the_status(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """A fresh signature with the farm secret: 200 and the agent's status."""
    agent = StubAgent(SECRET)
    client = await aiohttp_client(create_peer_app(agent, members))
    response = await client.get(STATUS_PATH, headers=_signed())
    assert response.status == 200
    assert await response.json() == {**STATUS, "dataset_shards_served": {}}
    assert agent.status_calls == 1


async def test_no_farm_secret_is_503(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """An agent without a farm secret answers 503 not_ready to everyone."""
    agent = StubAgent(None)
    client = await aiohttp_client(create_peer_app(agent, members))
    response = await client.get(STATUS_PATH, headers=_signed())
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "not_ready"
    assert agent.status_calls == 0


@pytest.fixture
async def peer_client() -> AsyncIterator[PeerClient]:
    """A started PeerClient that signs with SECRET (closed after the test)."""
    client = PeerClient(CALLER, lambda: SECRET)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def test_peer_client_gets_the_status(aiohttp_server: ServerFactory, peer_client: PeerClient, members: FarmMembers) -> None:
    """PeerClient signs its request and returns the JSON status."""
    server = await aiohttp_server(create_peer_app(StubAgent(SECRET), members))
    assert await peer_client.get_json("127.0.0.1", server.port, STATUS_PATH) == {**STATUS, "dataset_shards_served": {}}


async def test_peer_client_with_wrong_secret_reports_the_signature(aiohttp_server: ServerFactory, members: FarmMembers) -> None:
    """A server of another farm refuses us; the error says the signature was refused."""
    server = await aiohttp_server(create_peer_app(StubAgent("another-farm-secret"), members))
    client = PeerClient("caller-0123456789ab", lambda: SECRET)
    await client.start()
    try:
        with pytest.raises(PeerError, match="signature") as info:
            await client.get_json("127.0.0.1", server.port, STATUS_PATH)
    finally:
        await client.close()
    assert f"127.0.0.1:{server.port}" in str(info.value)
    assert SECRET not in str(info.value)


async def test_peer_client_against_server_without_secret_reports_http_status(
    aiohttp_server: ServerFactory, peer_client: PeerClient
, members: FarmMembers) -> None:
    """A peer that is not ready yet: the error names the HTTP status."""
    server = await aiohttp_server(create_peer_app(StubAgent(None), members))
    with pytest.raises(PeerError, match="HTTP 503"):
        await peer_client.get_json("127.0.0.1", server.port, STATUS_PATH)


async def test_peer_client_closed_port_cannot_connect(peer_client: PeerClient) -> None:
    """Nothing listens on the port: the error says it cannot connect."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(PeerError, match=f"cannot connect to 127.0.0.1:{port}"):
        await peer_client.get_json("127.0.0.1", port, STATUS_PATH)


async def test_peer_client_without_secret_is_not_ready() -> None:
    """No farm secret yet: PeerClient refuses before any network traffic."""
    client = PeerClient("caller-0123456789ab", lambda: None)
    await client.start()
    try:
        with pytest.raises(PeerError, match="not ready"):
            await client.get_json("127.0.0.1", 9, STATUS_PATH)
    finally:
        await client.close()


async def test_peer_client_not_started_is_not_ready() -> None:
    """get_json before start() raises PeerError rather than crashing."""
    client = PeerClient("caller-0123456789ab", lambda: SECRET)
    with pytest.raises(PeerError, match="not ready"):
        await client.get_json("127.0.0.1", 9, STATUS_PATH)


async def test_replayed_request_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """The same signed header sent twice: served once, then 401 (its nonce was seen)."""
    agent = StubAgent(SECRET)
    client = await aiohttp_client(create_peer_app(agent, members))
    headers = _signed()
    assert (await client.get(STATUS_PATH, headers=headers)).status == 200
    await _assert_unauthorized(await client.get(STATUS_PATH, headers=headers))
    assert agent.status_calls == 1
    assert (await client.get(STATUS_PATH, headers=_signed())).status == 200


async def test_body_changed_after_signing_is_401(aiohttp_client: ClientFactory, members: FarmMembers) -> None:
    """A POST whose body differs from the signed one: 401."""
    client = await aiohttp_client(create_peer_app(StubAgent(SECRET), members))
    signed = b'{"client_id": "a", "path": "models/a.pt", "sha256": "00"}'
    header = {"Authorization": auth.sign(SECRET, "POST", "/peer/v1/replicate", CALLER, signed),
              "Content-Type": "application/json"}
    await _assert_unauthorized(await client.post("/peer/v1/replicate", data=signed.replace(b"a.pt", b"b.pt"),
                                                 headers=header))


async def test_client_not_active_in_this_farm_is_401(aiohttp_client: ClientFactory, farm_db: Database,
                                                     members: FarmMembers) -> None:
    """Valid signatures by an unknown id, an inactive client and a client of another farm: 401."""
    await _add_client(farm_db, "other-farm-000000000", farm_name="elsewhere")
    await _add_client(farm_db, "retired-00000000000")
    async with farm_db.begin() as conn:
        await client_queries.set_client_status(conn, "retired-00000000000", "inactive")
    agent = StubAgent(SECRET)
    client = await aiohttp_client(create_peer_app(agent, members))
    for caller in ("unknown-000000000000", "other-farm-000000000", "retired-00000000000"):
        response = await client.get(STATUS_PATH, headers=_signed(caller=caller))
        assert response.status == 401, caller
        assert (await response.json())["error"]["message"] == "unknown or inactive client"
    assert agent.status_calls == 0
    await _add_client(farm_db, "newcomer-0000000000")
    assert (await client.get(STATUS_PATH, headers=_signed(caller="newcomer-0000000000"))).status == 200


# ----- the probe route, timed to measure links -----
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


async def test_dataset_shards_are_served_counted_and_confined(aiohttp_client: ClientFactory, members: FarmMembers,
                                                              tmp_path: Path) -> None:
    """A held shard is served and counted in the status; names with traversal, and symlinks out, are refused."""
    folder = tmp_path / "data" / "datasets" / "published" / "docs" / "1"
    folder.mkdir(parents=True)
    (folder / "shard-00000.bin").write_bytes(b"\x01\x00" * 8)
    (tmp_path / "secret.txt").write_text("not a shard")
    (folder / "link.bin").symlink_to(tmp_path / "secret.txt")
    agent = StubAgent(SECRET)
    object.__setattr__(agent, "data_dir", tmp_path / "data")
    client = await aiohttp_client(create_peer_app(agent, members))
    path = "/peer/v1/datasets/docs/1/shard-00000.bin"
    response = await client.get(path, headers=_signed(path=path))
    assert response.status == 200 and await response.read() == b"\x01\x00" * 8
    for bad, status in (("/peer/v1/datasets/docs/1/link.bin", 404), ("/peer/v1/datasets/docs/1/..%2Fsecret", 400),
                        ("/peer/v1/datasets/docs/x/shard-00000.bin", 400), ("/peer/v1/datasets/docs/2/shard-00000.bin", 404)):
        response = await client.get(bad, headers=_signed(path=bad))
        assert response.status == status, bad
    response = await client.get(STATUS_PATH, headers=_signed())
    assert (await response.json())["dataset_shards_served"] == {"docs/1/shard-00000.bin": 1}


async def test_interrupted_download_resumes_with_a_range_and_a_bad_part_is_discarded(
        aiohttp_server: ServerFactory, peer_client: PeerClient, members: FarmMembers, tmp_path: Path) -> None:
    """A part left by a cut-off download is continued (Range), checked whole; a part that does not add up to the
    sha256 is discarded, and the next try fetches the whole file."""
    import hashlib

    folder = tmp_path / "data" / "datasets" / "published" / "docs" / "1"
    folder.mkdir(parents=True)
    content = bytes(range(256)) * 400
    (folder / "shard-00000.bin").write_bytes(content)
    agent = StubAgent(SECRET)
    object.__setattr__(agent, "data_dir", tmp_path / "data")
    ranges: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        return await handler(request)

    app = create_peer_app(agent, members)
    app.middlewares.insert(0, record)
    server = await aiohttp_server(app)
    dest = tmp_path / "got" / "shard-00000.bin"
    part = dest.with_name(f".{dest.name}.download")
    dest.parent.mkdir()
    part.write_bytes(content[:40_000])
    sha = hashlib.sha256(content).hexdigest()
    seen: list[int] = []
    await peer_client.download("127.0.0.1", server.port, "/peer/v1/datasets/docs/1/shard-00000.bin", dest, sha,
                               max_bytes=len(content), progress=lambda size, _total: seen.append(size), resume=True)
    assert dest.read_bytes() == content and not part.exists()
    assert ranges == ["bytes=40000-"] and seen[0] > 40_000
    dest.unlink()
    part.write_bytes(b"x" * 1000)
    with pytest.raises(PeerError, match="does not match its sha256"):
        await peer_client.download("127.0.0.1", server.port, "/peer/v1/datasets/docs/1/shard-00000.bin", dest, sha,
                                   max_bytes=len(content), resume=True)
    assert not part.exists() and not dest.exists()
    await peer_client.download("127.0.0.1", server.port, "/peer/v1/datasets/docs/1/shard-00000.bin", dest, sha,
                               max_bytes=len(content), resume=True)
    assert dest.read_bytes() == content and ranges[-1] is None
