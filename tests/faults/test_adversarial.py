"""Adversarial tests of a real agent: its peer API, discovery, checkpoint and model loading, and its dashboard.

Checkpoints and models are torch state dicts (plain tensors, numbers and dicts) loaded with
`torch.load(..., weights_only=True)` after their sha256 is checked; safetensors is not used, so these tests
prove that a pickle carrying code is refused by the restricted unpickler and that a changed byte is refused
by the hash before any unpickling.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pickle
import posixpath
import re
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from app.db.engine import create_database
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.db.queries import logs as log_queries
from app.db.queries import models as model_queries
from app.db.queries import tasks as task_queries
from app.db.schema import tasks as tasks_table
from app.discovery.peer import _CLIENT_ID, _FARM, Peer, peer_from_service
from app.discovery.registry import PeerRegistry
from app.discovery.service import DiscoveryService
from app.errors import AifarmError
from app.files import sha256_file
from app.peerapi import auth
from app.peerapi.client import PeerClient, PeerError
from tests.agent.harness import AgentProcess
from tests.training.e2e import sync, upgraded

pytestmark = pytest.mark.faults

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
NEVER = {"min_gpu_memory": 10**8, "min_cpu_cores": 1, "min_ram": 0}  # no machine meets it: never claimed
CALLER = "tester-0123456789ab"


def never_window() -> str:
    """A donation schedule window that does not include today or the next two days (no claiming during the tests)."""
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(datetime.now() + timedelta(days=3)).weekday()]
    return f"{day} 00:00-00:01"


async def _in_db(url: str, fn: Any) -> Any:
    db = create_database(url)
    try:
        async with db.begin() as conn:
            return await fn(conn)
    finally:
        await db.dispose()


async def _add_member(conn: Any, client_id: str, farm_name: str = "default") -> None:
    """An active clients row of a farm (what the peer API requires of a caller)."""
    await client_queries.upsert_client(conn, client_id=client_id, cpu_info={}, ram_info={}, gpu_info=[],
                                       session_info={"farm_name": farm_name}, version="1", hostname="tester")


@dataclass
class Farm:
    """A running agent on an upgraded SQLite farm database, with planted files in its data dir."""

    agent: AgentProcess
    db_url: str
    secret: str
    other_secret: str
    marker: str
    protected: dict[str, str]  # data-dir file -> its content, none of which may ever be served
    checkpoint: bytes
    tmp: Path

    @property
    def data_dir(self) -> Path:
        """The agent's data dir."""
        return self.agent.data_dir

    @property
    def dashboard(self) -> tuple[str, int]:
        """(host, port) of the dashboard."""
        parsed = urllib.parse.urlsplit(self.agent.url)
        return parsed.hostname or "127.0.0.1", parsed.port or 80


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """One donating agent (outside its schedule, so it never trains) with a marker, a checkpoint and secrets."""
    tmp = tmp_path_factory.mktemp("adversarial")
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    sync(upgraded(url))
    agent = AgentProcess(tmp, "agent", "--database-url", url,
                         env={"AIFARM_MDNS": "false", "AIFARM_SCHEDULE": never_window()})
    try:
        secret = sync(_in_db(url, lambda conn: farm_queries.get_secret(conn, "default")))
        other = sync(_in_db(url, lambda conn: farm_queries.ensure_secret(conn, "other-farm")))
        assert secret and other and secret != other
        marker = f"MARKER-{uuid.uuid4().hex}"
        (agent.data_dir / "marker.txt").write_text(marker)
        (agent.data_dir / "config.toml").write_text(f"# {marker}-config\n")
        (agent.data_dir / "models").mkdir(exist_ok=True)
        (agent.data_dir / "checkpoints" / "task-1").mkdir(parents=True, exist_ok=True)
        checkpoint = os.urandom(300_000)
        (agent.data_dir / "checkpoints" / "task-1" / "ckpt.pt").write_bytes(checkpoint)
        sync(_in_db(url, lambda conn: _add_member(conn, CALLER)))
        protected = {name: (agent.data_dir / name).read_text().strip()
                     for name in ("marker.txt", "config.toml", "client_id", "api_token")}
        yield Farm(agent, url, secret, other, marker, protected, checkpoint, tmp)
    finally:
        agent.stop()


# ----- raw HTTP -----


@dataclass
class Reply:
    """One HTTP response."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode(errors="replace")


def raw(host: str, port: int, method: str, target: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> Reply:
    """Send a request line exactly as given (no client-side normalisation of '..' or escapes)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest(method, target, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def peer(farm: Farm, target: str, *, secret: str | None = None, signed_path: str | None = None,
         method: str = "GET", now: float | None = None, body: bytes | None = None,
         header: str | None = None, caller: str = CALLER) -> Reply:
    """A request to the agent's peer API, signed by `caller` with `secret` over `signed_path` (default: the target)
    and the body."""
    headers = {"Host": f"127.0.0.1:{farm.agent.peer_port}"}
    if header is not None:
        headers["Authorization"] = header
    elif secret is not None:
        headers["Authorization"] = auth.sign(secret, method, signed_path or target, caller, body or b"", now=now)
    if body is not None:
        headers["Content-Type"] = "application/json"
    return raw("127.0.0.1", farm.agent.peer_port, method, target, headers, body)


def assert_nothing_leaked(farm: Farm, reply: Reply, what: str) -> None:
    """No planted or secret file content, and no checkpoint bytes, in a response."""
    for name, content in farm.protected.items():
        assert content not in reply.text, f"{what} leaked {name}"
    assert farm.checkpoint[:64] not in reply.body, f"{what} leaked a checkpoint"


# ----- 9. the peer API -----


def test_peer_api_signed_request_is_served(farm: Farm) -> None:
    """Control: a fresh signature with the farm's secret gets the status and a checkpoint file."""
    status = peer(farm, "/peer/v1/status", secret=farm.secret)
    assert status.status == 200 and farm.agent.client_id in status.text
    path = "/peer/v1/files/checkpoints/task-1/ckpt.pt"
    assert peer(farm, path, secret=farm.secret).body == farm.checkpoint


@pytest.mark.parametrize("case", ["missing", "garbage", "wrong secret", "other farm's secret", "stale replay",
                                  "from the future", "signed for another path", "signed for another method",
                                  "bearer token"])
@pytest.mark.parametrize("target", ["/peer/v1/status", "/peer/v1/files/checkpoints/task-1/ckpt.pt"])
def test_peer_api_refuses_bad_signatures(farm: Farm, case: str, target: str) -> None:
    """Anything but a fresh signature of this very request with this farm's secret: 401 and no data."""
    kwargs: dict[str, Any] = {
        "missing": {},
        "garbage": {"header": "AIFarm-HMAC client=x,ts=1,sig=" + "0" * 64},
        "wrong secret": {"secret": "not-the-farm-secret"},
        "other farm's secret": {"secret": farm.other_secret},
        "stale replay": {"secret": farm.secret, "now": time.time() - auth.MAX_SKEW_SECONDS - 30},
        "from the future": {"secret": farm.secret, "now": time.time() + auth.MAX_SKEW_SECONDS + 30},
        "signed for another path": {"secret": farm.secret, "signed_path": "/peer/v1/files/checkpoints/task-1/x.pt"
                                    if target == "/peer/v1/status" else "/peer/v1/status"},
        "signed for another method": {"header": auth.sign(farm.secret, "POST", target, CALLER)},
        "bearer token": {"header": f"Bearer {farm.agent.api_token}"},
    }[case]
    reply = peer(farm, target, **kwargs)
    assert reply.status == 401, (case, reply.status, reply.text[:300])
    assert json.loads(reply.body) == {"error": {"code": "unauthorized", "message": "missing or invalid farm signature",
                                                "fields": {}}}
    assert farm.agent.client_id not in reply.text
    assert_nothing_leaked(farm, reply, case)


def _server_views(target: str) -> list[str]:
    """The ways a server might see a target (as sent, dots removed, decoded), so one signature matches its view."""
    import yarl

    views = [target, posixpath.normpath(target), urllib.parse.unquote(target),
             posixpath.normpath(urllib.parse.unquote(target))]
    try:
        views.append(yarl.URL.build(path=target, encoded=True).path)
        views.append(yarl.URL(target).path)
    except ValueError:
        pass
    return list(dict.fromkeys(v for v in views if v.startswith("/")))


def _traversal_targets(farm: Farm) -> list[str]:
    abs_marker = str(farm.data_dir / "marker.txt")
    return [
        "/peer/v1/files/../client_id",
        "/peer/v1/files/../../client_id",
        "/peer/v1/files/checkpoints/../../api_token",
        "/peer/v1/files/checkpoints/../api_token",
        "/peer/v1/files/checkpoints/../marker.txt",
        "/peer/v1/files/checkpoints/task-1/../../marker.txt",
        "/peer/v1/files/models/../../config.toml",
        "/peer/v1/files/models/../config.toml",
        "/peer/v1/files/checkpoints/%2e%2e%2fapi_token",
        "/peer/v1/files/checkpoints/%2e%2e/%2e%2e/api_token",
        "/peer/v1/files/checkpoints/..%2f..%2fclient_id",
        "/peer/v1/files/models/%2e%2e%2f%2e%2e%2fmarker.txt",
        "/peer/v1/files/%2e%2e%2fclient_id",
        "/peer/v1/files/checkpoints/..%5capi_token",
        "/peer/v1/files/checkpoints/.%2e/marker.txt",
        f"/peer/v1/files/{abs_marker}",
        f"/peer/v1/files/checkpoints/{abs_marker}",
        f"/peer/v1/files/checkpoints{abs_marker}",
        f"/peer/v1/files/{urllib.parse.quote(abs_marker, safe='')}",
        f"/peer/v1/files/checkpoints/{urllib.parse.quote(abs_marker, safe='')}",
        "/peer/v1/files/checkpoints/task-1/ckpt.pt%00/../../../api_token",
        "/peer/v1/files/checkpoints//../api_token",
        "/peer/v1/files/checkpoints/./../api_token",
        "/peer/v1/files/models/~/marker.txt",
        "/peer/v1/files/api_token",
        "/peer/v1/files/marker.txt",
        "/peer/v1/files/config.toml",
        "/peer/v1/files/aifarm.sqlite3",
    ]


def test_peer_api_path_traversal_with_valid_signature(farm: Farm) -> None:
    """'..', encoded '..', backslashes and absolute paths, each validly signed: 400/404, never a file's content."""
    for target in _traversal_targets(farm):
        statuses = []
        for view in _server_views(target):
            reply = peer(farm, target, secret=farm.secret, signed_path=view)
            assert reply.status in (400, 401, 404), (target, view, reply.status, reply.text[:300])
            assert_nothing_leaked(farm, reply, target)
            statuses.append(reply.status)
        assert set(statuses) - {401}, f"no signature of {target} was accepted; the test did not reach the file route"


def test_peer_api_files_outside_the_served_roots_are_404(farm: Farm) -> None:
    """The data dir's own files (token, id, config, database) are not served even when named plainly."""
    for name in ("api_token", "client_id", "config.toml", "marker.txt", "aifarm.sqlite3", "agent.json"):
        reply = peer(farm, f"/peer/v1/files/{name}", secret=farm.secret)
        assert reply.status == 404, (name, reply.status)
        assert_nothing_leaked(farm, reply, name)


def test_peer_replicate_body_over_one_mib_is_413(farm: Farm) -> None:
    """A signed POST /peer/v1/replicate with a 2 MiB body: 413 (and a small malformed one: 400, the route works)."""
    big = json.dumps({"client_id": CALLER, "path": "models/x.pt", "sha256": "0" * 64, "pad": "a" * (2 << 20)}).encode()
    assert peer(farm, "/peer/v1/replicate", secret=farm.secret, method="POST", body=big).status == 413
    small = peer(farm, "/peer/v1/replicate", secret=farm.secret, method="POST", body=b'{"path": "../api_token"}')
    assert small.status == 400


@pytest.mark.parametrize("body,content_type", [
    (b"", "application/json"), (b"{not json", "application/json"), (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (b'{"path": ' + b"9" * 5000 + b"}", "application/json"), (b'{"path": "\xff"}', "application/json"),
    (b"{}", "application/json; charset=no-such-codec"), (b"[]", "application/json"),
    (b'{"client_id": "x", "path": "models/../../api_token", "sha256": "0"}', "application/json"),
], ids=["empty", "not json", "deep nesting", "5000 digits", "bad utf-8", "unknown charset", "a list", "traversal"])
def test_peer_replicate_hostile_bodies_are_client_errors(farm: Farm, body: bytes, content_type: str) -> None:
    """Signed but hostile replicate bodies: 400, never a server error, a refused fetch (502) or a fetched file."""
    headers = {"Host": f"127.0.0.1:{farm.agent.peer_port}", "Content-Type": content_type,
               "Authorization": auth.sign(farm.secret, "POST", "/peer/v1/replicate", CALLER, body)}
    reply = raw("127.0.0.1", farm.agent.peer_port, "POST", "/peer/v1/replicate", headers, body)
    assert reply.status == 400, (reply.status, reply.text[:300])
    assert_nothing_leaked(farm, reply, "replicate")
    assert not (farm.data_dir / "models" / "api_token").exists()


@pytest.mark.parametrize("owner", ["..", "../..", "../../..", ".", "a/../../..", "ABSOLUTE", ""])
def test_peer_replicate_cannot_write_outside_the_data_dir(farm: Farm, owner: str) -> None:
    """A signed replicate whose (forged, active) owner id is '..' or absolute: refused, nothing outside fetched/."""
    import socket

    if owner == "ABSOLUTE":
        owner = str(farm.tmp / "absolute")

    payload = os.urandom(1000)
    (farm.data_dir / "models" / "planted.pt").write_bytes(payload)

    async def forge(conn: Any) -> None:
        await client_queries.upsert_client(
            conn, client_id=owner, cpu_info={}, ram_info={}, gpu_info=[], version="1", hostname=socket.gethostname(),
            session_info={"peer_port": farm.agent.peer_port, "addresses": [{"ip": "127.0.0.1", "prefix": 8}]})

    sync(_in_db(farm.db_url, forge))
    body = json.dumps({"client_id": owner, "path": "models/planted.pt",
                       "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    reply = peer(farm, "/peer/v1/replicate", secret=farm.secret, method="POST", body=body)
    assert reply.status == 400, (owner, reply.status, reply.text[:300])
    fetched = farm.data_dir / "fetched"
    for found in farm.tmp.rglob("planted.pt"):
        assert found == farm.data_dir / "models" / "planted.pt" or fetched in found.parents, f"written to {found}"


def test_peer_api_replayed_request_is_refused(farm: Farm) -> None:
    """The same signed header sent twice within its time window: served once, then 401 and no data."""
    target = "/peer/v1/files/checkpoints/task-1/ckpt.pt"
    header = auth.sign(farm.secret, "GET", target, CALLER)
    assert peer(farm, target, header=header).body == farm.checkpoint
    replay = peer(farm, target, header=header)
    assert replay.status == 401, (replay.status, replay.text[:300])
    assert json.loads(replay.body)["error"]["message"] == "replayed request"
    assert_nothing_leaked(farm, replay, "a replay")
    assert peer(farm, target, secret=farm.secret).body == farm.checkpoint  # a fresh signature still works


def test_peer_api_body_changed_after_signing_is_refused(farm: Farm) -> None:
    """A captured replicate request whose body is swapped (same signature): 401, nothing fetched."""
    signed = json.dumps({"client_id": farm.agent.client_id, "path": "models/a.pt", "sha256": "a" * 64}).encode()
    swapped = json.dumps({"client_id": farm.agent.client_id, "path": "models/b.pt", "sha256": "b" * 64}).encode()
    header = auth.sign(farm.secret, "POST", "/peer/v1/replicate", CALLER, signed)
    reply = peer(farm, "/peer/v1/replicate", method="POST", header=header, body=swapped)
    assert reply.status == 401, (reply.status, reply.text[:300])
    assert json.loads(reply.body)["error"]["message"] == "missing or invalid farm signature"


def test_peer_api_caller_must_be_an_active_client_of_the_farm(farm: Farm) -> None:
    """Signed with the farm secret by an unknown id, an inactive client or another farm's client: 401, no data."""
    async def plant(conn: Any) -> None:
        await _add_member(conn, "retired-0123456789ab")
        await client_queries.set_client_status(conn, "retired-0123456789ab", "inactive")
        await _add_member(conn, "elsewhere-0123456789", farm_name="other-farm")

    sync(_in_db(farm.db_url, plant))
    target = "/peer/v1/files/checkpoints/task-1/ckpt.pt"
    for caller in ("stranger-0123456789a", "retired-0123456789ab", "elsewhere-0123456789"):
        reply = peer(farm, target, secret=farm.secret, caller=caller)
        assert reply.status == 401, (caller, reply.status, reply.text[:300])
        assert json.loads(reply.body)["error"]["message"] == "unknown or inactive client"
        assert_nothing_leaked(farm, reply, caller)


def test_peer_api_does_not_follow_symlinks_out_of_the_served_folder(farm: Farm) -> None:
    """Links in checkpoints/ and models/ to the API token or the data dir: 404 and not served; a link to a file
    inside the folder is served."""
    links = {
        farm.data_dir / "checkpoints" / "task-1" / "token.pt": farm.data_dir / "api_token",
        farm.data_dir / "checkpoints" / "leak.pt": farm.data_dir / "api_token",
        farm.data_dir / "models" / "everything": farm.data_dir,
        farm.data_dir / "checkpoints" / "task-1" / "same.pt": farm.data_dir / "checkpoints" / "task-1" / "ckpt.pt",
    }
    for link, target in links.items():
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    for target in ("/peer/v1/files/checkpoints/task-1/token.pt", "/peer/v1/files/checkpoints/leak.pt",
                   "/peer/v1/files/models/everything/api_token", "/peer/v1/files/models/everything/marker.txt"):
        reply = peer(farm, target, secret=farm.secret)
        assert reply.status == 404, (target, reply.status, reply.text[:300])
        assert farm.agent.api_token not in reply.text
        assert_nothing_leaked(farm, reply, target)
    assert peer(farm, "/peer/v1/files/checkpoints/task-1/same.pt", secret=farm.secret).body == farm.checkpoint


@pytest.mark.parametrize("fields", [
    {"sha256": "0" * 63}, {"sha256": "Z" * 64}, {"sha256": "A" * 64}, {"sha256": 5},
    {"path": "models/../x.pt"}, {"path": "checkpoints/task-1/ckpt.pt"}, {"path": "models/"}, {"path": "models/a b"},
    {"client_id": "stranger-0123456789a"}, {"client_id": "a/b"}, {"client_id": 7}, {"client_id": None},
], ids=["short sha", "non-hex sha", "upper-case sha", "numeric sha", "traversal", "not a model", "no file name",
        "space in name", "unknown owner", "owner with a slash", "numeric owner", "no owner"])
def test_peer_replicate_invalid_input_is_400(farm: Farm, fields: dict[str, Any]) -> None:
    """A signed replicate whose fields are invalid (or name no active client): 400 naming the problem, not 502."""
    body = {"client_id": farm.agent.client_id, "path": "models/x.pt", "sha256": "a" * 64, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    reply = peer(farm, "/peer/v1/replicate", secret=farm.secret, method="POST", body=json.dumps(body).encode())
    assert reply.status == 400, (fields, reply.status, reply.text[:300])
    assert_nothing_leaked(farm, reply, "replicate")


def _send_raw(farm: Farm, data: bytes) -> bytes:
    """Bytes written as they are to the peer API port; the first bytes of its answer."""
    import socket

    with socket.create_connection(("127.0.0.1", farm.agent.peer_port), timeout=10) as sock:
        sock.sendall(data)
        return sock.recv(200)


def test_peer_api_malformed_requests_get_400_and_no_traceback(farm: Farm) -> None:
    """A garbage header, a bad request line or path, and bad JSON: 400 each, one short log line, no traceback."""
    before = len(farm.agent.log())
    host = f"Host: 127.0.0.1:{farm.agent.peer_port}\r\n".encode()
    raw_requests = [
        b"GET /peer/v1/status HTTP/1.1\r\n" + host + b"Authorization: \xff\xfe\x01garbage\r\n\r\n",
        b"GET /peer/v1/status HTTP/1.1\r\n" + host + b"Bad Header Name: 1\r\n\r\n",
        b"GET /peer/v1/status HTTP/1.1\r\n" + host + b"Content-Length: lots\r\n\r\n",
        b"GET /peer/v1/files/check points/x.pt HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /peer/v1/\x00\x01 HTTP/1.1\r\n" + host + b"\r\n",
        b"GET http://[::1 HTTP/1.1\r\n" + host + b"\r\n",
    ]
    for data in raw_requests:
        answer = _send_raw(farm, data)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), (data, answer)
    bad_json = peer(farm, "/peer/v1/replicate", secret=farm.secret, method="POST", body=b'{"path": ')
    assert bad_json.status == 400, bad_json.status
    bad_path = peer(farm, "/peer/v1/files/checkpoints/task-1/~ckpt.pt", secret=farm.secret)
    assert bad_path.status == 400, bad_path.status
    time.sleep(0.5)  # the agent writes its log asynchronously
    added = farm.agent.log()[before:]
    assert "Traceback" not in added, added[-3000:]
    lines = [line for line in added.splitlines() if "malformed request" in line]
    assert len(lines) == len(raw_requests), added[-3000:]
    assert all(len(line) < 400 for line in lines), lines
    assert "garbage" not in added and "Bad Header Name" not in added  # the offending bytes are not echoed


async def _download(farm: Farm, path: str, dest: Path, sha256: str, max_bytes: int | None = None) -> None:
    client = PeerClient(CALLER, lambda: farm.secret)
    await client.start()
    try:
        kwargs = {"max_bytes": max_bytes} if max_bytes is not None else {}
        await client.download("127.0.0.1", farm.agent.peer_port, path, dest, sha256, **kwargs)
    finally:
        await client.close()


async def test_download_with_wrong_sha256_is_discarded(farm: Farm, tmp_path: Path) -> None:
    """A served file whose sha256 is not the expected one: PeerError, and nothing is left in the folder."""
    path, good = "/peer/v1/files/checkpoints/task-1/ckpt.pt", hashlib.sha256(farm.checkpoint).hexdigest()
    dest = tmp_path / "in" / "ckpt.pt"
    with pytest.raises(PeerError, match="does not match its sha256"):
        await _download(farm, path, dest, "f" * 64)
    assert list(dest.parent.iterdir()) == []
    await _download(farm, path, dest, good)  # control: the right hash keeps the file
    assert dest.read_bytes() == farm.checkpoint


async def test_download_over_max_bytes_is_aborted(farm: Farm, tmp_path: Path) -> None:
    """A file larger than max_bytes: PeerError while streaming, and no file (partial or final) is left."""
    dest = tmp_path / "in" / "ckpt.pt"
    good = hashlib.sha256(farm.checkpoint).hexdigest()
    with pytest.raises(PeerError, match="larger than"):
        await _download(farm, "/peer/v1/files/checkpoints/task-1/ckpt.pt", dest, good, max_bytes=len(farm.checkpoint) - 1)
    assert list(dest.parent.iterdir()) == []


# ----- 9. zeroconf records -----

FORGED: list[tuple[str, dict[bytes, bytes | None], list[str], int | None]] = [
    ("no id", {b"farm": b"default", b"peer_port": b"8471"}, ["192.168.1.5"], 8471),
    ("empty id", {b"id": b"", b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("id with a slash", {b"id": b"../../etc", b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("id with a newline", {b"id": b"host-1\n", b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("id with markup", {b"id": XSS.encode(), b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("id of 129 characters", {b"id": b"a" * 129, b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("id not UTF-8", {b"id": b"\xff\xfe", b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("id None", {b"id": None, b"farm": b"default"}, ["192.168.1.5"], 8471),
    ("no farm", {b"id": b"host-1"}, ["192.168.1.5"], 8471),
    ("farm with a dot", {b"id": b"host-1", b"farm": b"de.fault"}, ["192.168.1.5"], 8471),
    ("farm with a space", {b"id": b"host-1", b"farm": b"default "}, ["192.168.1.5"], 8471),
    ("peer_port 0", {b"id": b"host-1", b"farm": b"default", b"peer_port": b"0"}, ["192.168.1.5"], 8471),
    ("peer_port 65536", {b"id": b"host-1", b"farm": b"default", b"peer_port": b"65536"}, ["192.168.1.5"], 8471),
    ("peer_port negative", {b"id": b"host-1", b"farm": b"default", b"peer_port": b"-1"}, ["192.168.1.5"], 8471),
    ("peer_port text", {b"id": b"host-1", b"farm": b"default", b"peer_port": b"http"}, ["192.168.1.5"], 8471),
    ("peer_port float", {b"id": b"host-1", b"farm": b"default", b"peer_port": b"80.5"}, ["192.168.1.5"], 8471),
    ("no port at all", {b"id": b"host-1", b"farm": b"default"}, ["192.168.1.5"], None),
    ("no address", {b"id": b"host-1", b"farm": b"default"}, [], 8471),
    ("unspecified address", {b"id": b"host-1", b"farm": b"default"}, ["0.0.0.0", "::"], 8471),
    ("multicast address", {b"id": b"host-1", b"farm": b"default"}, ["224.0.0.251", "ff02::fb"], 8471),
    ("address not an IP", {b"id": b"host-1", b"farm": b"default"}, ["evil.example", "1.2.3", ""], 8471),
]


@pytest.mark.parametrize("name,properties,addresses,port", FORGED, ids=[f[0] for f in FORGED])
def test_forged_zeroconf_records_yield_no_peer(name: str, properties: dict[bytes, bytes | None], addresses: list[str],
                                                port: int | None) -> None:
    """Malformed or forged service records are dropped at the boundary."""
    assert peer_from_service("x._aifarm._tcp.local.", properties, addresses, port, "x.local.") is None


TXT_VALUES = st.none() | st.binary(max_size=140) | st.text(max_size=140).map(str.encode) | st.sampled_from(
    [b"host-1", b"default", b"8471", b"0", b"65535", b"65536", b"-1", b" 8471", b"8471\n", b"\xff", b"a" * 128, b"a" * 129])
ADDRESSES = st.lists(st.sampled_from(["192.168.1.5", "10.0.0.1", "fe80::1%eth0", "0.0.0.0", "::", "224.0.0.251",
                                      "ff02::fb", "evil", "", "1.2.3", "::1", "127.0.0.1"]) | st.text(max_size=20),
                     max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.dictionaries(st.sampled_from([b"id", b"farm", b"version", b"peer_port", b"host"]) | st.binary(max_size=8),
                       TXT_VALUES, max_size=7), ADDRESSES, st.none() | st.integers(-10, 70_000))
def test_any_zeroconf_record_yields_none_or_a_well_formed_peer(properties: dict[bytes, bytes | None],
                                                                addresses: list[str], port: int | None) -> None:
    """For any record: no Peer, or one whose id, farm, port and addresses are all well formed."""
    found = peer_from_service("x._aifarm._tcp.local.", properties, addresses, port, "x.local.")
    if found is None:
        return
    import ipaddress

    assert _CLIENT_ID.fullmatch(found.client_id) and _FARM.fullmatch(found.farm_name)
    assert 0 < found.peer_port < 65536 and found.addresses
    for address in found.addresses:
        parsed = ipaddress.ip_address(address)
        assert not parsed.is_unspecified and not parsed.is_multicast
    assert len(found.version) <= 50 and len(found.hostname) <= 255


async def test_registry_never_verifies_forged_ids_or_other_farms(tmp_path: Path) -> None:
    """Real clients table: no row, an inactive row or another farm (active row) is never verified; own id ignored."""
    url = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    await upgraded(url)
    db = create_database(url)
    try:
        async with db.begin() as conn:
            for client_id in ("active-000000000001", "inactive-00000000002", "other-farm-000000003"):
                await client_queries.upsert_client(conn, client_id=client_id, cpu_info={}, ram_info={}, gpu_info=[],
                                                   session_info={}, version="1", hostname=client_id)
            await client_queries.set_client_status(conn, "inactive-00000000002", "inactive")
        registry = PeerRegistry("me-000000000000", "default")
        service = DiscoveryService(db=db, registry=registry, client=PeerClient("me-000000000000", lambda: "s"),
                                   client_id="me-000000000000", farm_name="default", version="1", manual_peers=(),
                                   peer_port=lambda: 8471, verify_interval=1.0, use_mdns=False)

        def claim(client_id: str, farm_name: str = "default") -> Peer:
            found = peer_from_service(f"{client_id}._aifarm._tcp.local.",
                                      {b"id": client_id.encode(), b"farm": farm_name.encode(), b"peer_port": b"8471"},
                                      ["192.168.1.9"], 8471, "forger.local.")
            assert found is not None
            return found

        for forged in (claim("ghost-000000000009"), claim("inactive-00000000002"), claim("other-farm-000000003", "evil"),
                       claim("active-000000000001"), claim("me-000000000000")):
            registry.found(forged)
        await service.verify_once()
        registry.apply_database(  # even handed the active row of the other farm's id directly
            [{"id": "other-farm-000000003", "status": "active"}, {"id": "active-000000000001", "status": "active"},
             {"id": "inactive-00000000002", "status": "inactive"}], [])
        verified = {state.peer.client_id for state in registry.verified()}
        assert verified == {"active-000000000001"}
        assert registry.get("me-000000000000") is None
        snapshot = registry.snapshot()
        assert [p["client_id"] for p in snapshot["other_farms"]] == ["other-farm-000000003"]
        assert not any(p["verified"] for p in snapshot["other_farms"])
    finally:
        await db.dispose()


# ----- 10. checkpoints and models -----


class CodeInPickle:
    """An object whose unpickling would create a file (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return open, (self.marker, "w")


class ShellInPickle:
    """An object whose unpickling would run a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("payload", [CodeInPickle, ShellInPickle])
def test_checkpoint_with_code_is_refused_without_running_it(tmp_path: Path, writer: str, payload: type) -> None:
    """A pickle that runs code, with its correct sha256: weights_only refuses it and the marker is never created."""
    import torch

    from app.training.worker import load_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoints" / "task-1" / "regular-000100.pt"
    path.parent.mkdir(parents=True)
    state = {"model": {"w": torch.zeros(2)}, "step": 100, "evil": payload(marker)}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with path.open("wb") as handle:
            pickle.dump(state, handle, protocol=2)
    refused: Exception | None = None
    try:
        load_checkpoint(path, sha256_file(path))
    except Exception as exc:  # what torch raises for a refused global differs by version; checked below
        refused = exc
    assert not marker.exists(), "the checkpoint's code ran"
    assert refused is not None, "a checkpoint carrying code was loaded"
    assert not isinstance(refused, ValueError) or "sha256" not in str(refused)  # the hash matched: the unpickler refused
    assert "weights_only" in str(refused) or isinstance(refused, pickle.UnpicklingError), refused


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_checkpoint_is_refused_by_sha256_before_loading(tmp_path: Path) -> None:
    """One flipped byte: the sha256 check refuses the file before torch.load (even one carrying code); control loads."""
    import torch

    from app.training.worker import load_checkpoint, save_checkpoint

    path = tmp_path / "final.pt"
    sha = save_checkpoint(path, {"model": {"w": torch.arange(1000.0)}, "step": 7})
    assert load_checkpoint(path, sha)["step"] == 7
    _flip_byte(path)
    with pytest.raises(ValueError, match="does not match its sha256"):
        load_checkpoint(path, sha)

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"x": CodeInPickle(marker)}, evil)
    registered = sha256_file(evil)
    _flip_byte(evil)
    with pytest.raises(ValueError, match="does not match its sha256"):
        load_checkpoint(evil, registered)
    assert not marker.exists()


async def test_tampered_model_is_refused_by_download_and_pull(farm: Farm, tmp_path: Path) -> None:
    """A model changed after registration: PeerClient.download and model_store.pull refuse it and leave no file."""
    import torch

    from app import model_store

    model = farm.data_dir / "models" / "probe-v1.pt"
    torch.save({"w": torch.arange(50_000.0)}, model)
    sha = sha256_file(model)
    replica = "replica-00000000001"

    async def register(conn: Any) -> None:
        await client_queries.upsert_client(
            conn, client_id=replica, cpu_info={}, ram_info={}, gpu_info=[], version="1", hostname="replica",
            session_info={"peer_port": farm.agent.peer_port, "addresses": [{"ip": "127.0.0.1", "prefix": 8}]})
        await model_queries.register(conn, name="probe", url=f"aifarm://{replica}/models/probe-v1.pt",
                                     config={"replicas": []}, sha256=sha)

    await _in_db(farm.db_url, register)
    db = create_database(farm.db_url)
    try:
        with pytest.raises(AifarmError, match="not an active client of farm 'default'"):
            await model_store.pull(db, "probe:1", tmp_path / "no.pt", "default", "stranger-0123456789a", progress=False)
        assert not (tmp_path / "no.pt").exists()
        row, got = await model_store.pull(db, "probe:1", tmp_path / "ok.pt", "default", CALLER, progress=False)
        assert got.read_bytes() == model.read_bytes()
        await _download(farm, "/peer/v1/files/models/probe-v1.pt", tmp_path / "dl" / "ok.pt", sha)

        _flip_byte(model)
        dest = tmp_path / "pulled" / "probe.pt"
        dest.parent.mkdir()
        with pytest.raises(AifarmError, match="does not match the registered sha256"):
            await model_store.pull(db, "probe:1", dest, "default", CALLER, progress=False)
        assert list(dest.parent.iterdir()) == []
        with pytest.raises(PeerError, match="does not match its sha256"):
            await _download(farm, "/peer/v1/files/models/probe-v1.pt", tmp_path / "dl2" / "probe.pt", sha)
        assert list((tmp_path / "dl2").iterdir()) == []
    finally:
        await db.dispose()


# ----- 11. the dashboard -----


class Dashboard:
    """Raw requests to the agent's dashboard, optionally with a session cookie and CSRF token."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.host, self.port = farm.dashboard
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, *, host: str | None = None, cookie: bool = False, bearer: bool = False,
                form: dict[str, str] | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """One request; redirects are returned, not followed."""
        sent = {"Host": host if host is not None else f"{self.host}:{self.port}"}
        if cookie:
            assert self.cookie
            sent["Cookie"] = f"aifarm_session={self.cookie}"
        if bearer:
            sent["Authorization"] = f"Bearer {self.farm.agent.api_token}"
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        return raw(self.host, self.port, method, path, sent, body)

    def login_link(self) -> str:
        """A fresh one-time sign-in link (path and query)."""
        reply = self.request("POST", "/api/v1/login-link", bearer=True, body=b"")
        assert reply.status == 200, reply.text
        parts = urllib.parse.urlsplit(json.loads(reply.body)["url"])
        return f"{parts.path}?{parts.query}"

    def sign_in(self) -> Reply:
        """Redeem a fresh link; keeps the session cookie and the CSRF token of the session."""
        reply = self.request("GET", self.login_link())
        match = re.search(r"aifarm_session=([^;]+)", reply.headers.get("Set-Cookie", ""))
        assert reply.status == 303 and match, (reply.status, reply.headers)
        self.cookie = match.group(1)
        page = self.request("GET", "/tasks/new", cookie=True).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token, "no csrf_token field on /tasks/new"
        self.csrf = token.group(1)
        return reply

    def paused(self) -> bool:
        """The agent's donation pause flag, from the API."""
        reply = self.request("GET", "/api/v1/status", bearer=True)
        return bool(json.loads(reply.body)["donation"]["paused"])

    def task_count(self) -> int:
        """How many tasks the farm has."""
        return int(json.loads(self.request("GET", "/api/v1/tasks?limit=1", bearer=True).body)["total"])


@pytest.fixture(scope="module")
def dash(farm: Farm) -> Dashboard:
    """A signed-in dashboard client."""
    dashboard = Dashboard(farm)
    dashboard.sign_in()
    return dashboard


FOREIGN_HOSTS = ["evil.example", "evil.example:80", "127.0.0.1.nip.io", "localhost.evil.example", "attacker:8470",
                 "127.0.0.2", "0.0.0.0", "[::2]", ""]


def test_foreign_host_header_is_403_on_pages_api_and_static(dash: Dashboard) -> None:
    """DNS rebinding: a Host that is not this agent's address gets 403 everywhere, even signed in or with the token."""
    for host in FOREIGN_HOSTS:
        for path, kwargs in (("/", {"cookie": True}), ("/tasks", {"cookie": True}), ("/settings", {"cookie": True}),
                             ("/api/v1/status", {"bearer": True}), ("/api/v1/tasks", {"cookie": True}),
                             ("/static/css/app.css", {}), ("/login?token=x", {}), ("/healthz", {})):
            reply = dash.request("GET", path, host=host, **kwargs)
            assert reply.status == 403, (host, path, reply.status)
            assert dash.farm.agent.client_id not in reply.text and dash.farm.agent.api_token not in reply.text
            assert "Content-Security-Policy" in reply.headers
        reply = dash.request("POST", "/api/v1/pause", host=host, bearer=True, body=b"{}")
        assert reply.status == 403
    assert not dash.paused()
    assert dash.request("GET", "/api/v1/status", bearer=True).status == 200  # control: our own Host


def test_form_posts_without_csrf_token_are_403_and_change_nothing(dash: Dashboard) -> None:
    """Signed in but without (or with a wrong) csrf_token field: pause and submit forms get 403, nothing changes."""
    tasks_before = dash.task_count()
    task_form = {"type": "training", "name": "csrf-probe", "model": "mlp", "dataset": "synthetic", "batch_size": "8",
                 "learning_rate": "0.01", "epochs": "1", "n_clients": "1", "priority": "0"}
    for token in (None, "", "0" * 64, dash.csrf[:-1] + ("0" if dash.csrf[-1] != "0" else "1")):
        extra = {} if token is None else {"csrf_token": token}
        for path, form in (("/settings/pause", {"mode": "now"}), ("/tasks/new", task_form)):
            reply = dash.request("POST", path, cookie=True, form={**form, **extra})
            assert reply.status == 403, (path, token, reply.status, reply.text[:300])
            assert "Content-Security-Policy" in reply.headers
    assert not dash.paused() and dash.task_count() == tasks_before
    # control: the same pause form with the session's token works (and resume puts it back)
    assert dash.request("POST", "/settings/pause", cookie=True, form={"mode": "now", "csrf_token": dash.csrf}).status == 303
    assert dash.paused()
    assert dash.request("POST", "/settings/resume", cookie=True, form={"csrf_token": dash.csrf}).status == 303
    assert not dash.paused()


def test_api_requires_token_or_cookie_plus_csrf_header(dash: Dashboard) -> None:
    """No token: 401; a wrong token: 401; the cookie without X-CSRF-Token on a POST: 403 and nothing changes."""
    for method, path, body in (("GET", "/api/v1/status", None), ("GET", "/api/v1/tasks", None),
                               ("POST", "/api/v1/pause", b"{}"), ("POST", "/api/v1/tasks", b"{}"),
                               ("GET", "/api/v1/openapi.json", None)):
        reply = dash.request(method, path, body=body)
        assert reply.status == 401 and json.loads(reply.body)["error"]["code"] == "unauthorized", (path, reply.status)
        wrong = dash.request(method, path, body=body, headers={"Authorization": "Bearer " + "x" * 43})
        assert wrong.status == 401
    tasks_before = dash.task_count()
    valid_task = json.dumps({"config": {"name": "csrf-api", "model": "mlp", "dataset": "synthetic", "batch_size": 8,
                                        "learning_rate": 0.1, "epochs": 1, "distributed": False, "n_clients": 1},
                             "requirements": NEVER}).encode()
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "0" * 64}):
        for path, body in (("/api/v1/pause", b"{}"), ("/api/v1/tasks", valid_task), ("/api/v1/login-link", b"")):
            reply = dash.request("POST", path, cookie=True, body=body, headers=headers)
            assert reply.status == 403 and json.loads(reply.body)["error"]["code"] == "csrf", (path, headers, reply.status)
        form = dash.request("POST", "/api/v1/pause", cookie=True, form={"csrf_token": "0" * 64}, headers=headers)
        assert form.status == 403
    assert not dash.paused() and dash.task_count() == tasks_before
    control = dash.request("POST", "/api/v1/login-link", cookie=True, body=b"", headers={"X-CSRF-Token": dash.csrf})
    assert control.status == 200 and "token=" in control.text


def test_markup_in_logs_and_error_log_renders_escaped(farm: Farm, dash: Dashboard) -> None:
    """A script tag in a task log line, error_log and client log renders escaped on task, list, client and overview."""

    async def plant(conn: Any) -> int:
        task_id = await task_queries.insert_task(conn, type="training", requirements=NEVER, config={
            "name": "xss-probe", "model": "mlp", "dataset": "synthetic", "distributed": False, "n_clients": 1})
        await log_queries.add_task_log(conn, task_id, farm.agent.client_id, "error", f"worker said {XSS}")
        await conn.execute(update(tasks_table).where(tasks_table.c.id == task_id).values(error_log=f"attempt 1: {XSS}"))
        await log_queries.add_client_logs(conn, farm.agent.client_id, [("warning", f"peer said {XSS}", None)])
        return int(task_id)

    task_id = sync(_in_db(farm.db_url, plant))
    pages = {f"/tasks/{task_id}": 2, "/": 1, "/tasks": 0, f"/clients/{farm.agent.client_id}": 1}
    for path, escaped in pages.items():
        reply = dash.request("GET", path, cookie=True)
        assert reply.status == 200, (path, reply.status)
        assert XSS not in reply.text and "<script>alert" not in reply.text, path
        assert reply.text.count(XSS_ESCAPED) >= escaped, (path, reply.text.count(XSS_ESCAPED))
        assert "xss-probe" in reply.text or path.startswith("/clients") or path == "/"
        assert "script-src 'self'" in reply.headers["Content-Security-Policy"]


def test_csp_header_on_pages_errors_and_static_files(farm: Farm, dash: Dashboard) -> None:
    """The Content-Security-Policy (and its companions) on pages, API, every kind of error, and static files."""
    cases = [("GET", "/", {"cookie": True}, 200), ("GET", "/settings", {"cookie": True}, 200),
             ("GET", "/tasks/new", {"cookie": True}, 200), ("GET", "/static/css/app.css", {}, 200),
             ("GET", "/static/js/live.js", {}, 200), ("GET", "/static/nope.js", {}, 404),
             ("GET", "/no-such-page", {"cookie": True}, 404), ("GET", "/tasks/999999", {"cookie": True}, 404),
             ("GET", "/tasks", {}, 401), ("GET", "/api/v1/status", {}, 401), ("GET", "/api/v1/status", {"bearer": True}, 200),
             ("GET", "/", {"host": "evil.example"}, 403), ("GET", "/login?token=nope", {}, 403),
             ("DELETE", "/api/v1/tasks", {"bearer": True}, 405), ("GET", "/tasks?status=bogus", {"cookie": True}, 400)]
    for method, path, kwargs, status in cases:
        reply = dash.request(method, path, **kwargs)
        assert reply.status == status, (method, path, reply.status)
        csp = reply.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, \
            (method, path, csp)
        assert "unsafe-inline" not in csp
        assert reply.headers.get("X-Content-Type-Options") == "nosniff", (method, path)
        assert reply.headers.get("X-Frame-Options") == "DENY", (method, path)


def test_session_cookie_is_httponly_strict_and_links_are_one_time(farm: Farm) -> None:
    """The cookie is HttpOnly and SameSite=Strict; a used link never signs in again; an off-site next= goes home."""
    dashboard = Dashboard(farm)
    link = dashboard.login_link()
    first = dashboard.request("GET", link + "&next=//evil.example/x")
    assert first.status == 303 and first.headers["Location"] == "/"
    cookie = first.headers.get("Set-Cookie", "")
    assert re.search(r"aifarm_session=[^;]+", cookie)
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes, cookie
    assert attributes.get("samesite", "").lower() == "samesite=strict", cookie
    assert attributes.get("path") == "Path=/", cookie
    again = dashboard.request("GET", link)
    assert again.status == 403 and "Set-Cookie" not in again.headers
    printed = urllib.parse.urlsplit(farm.agent.signin_url)
    printed_link = f"{printed.path}?{printed.query}"
    dashboard.request("GET", printed_link)  # used now, if no one had used it yet
    assert dashboard.request("GET", printed_link).status == 403
    forged = dashboard.request("GET", "/tasks", headers={"Cookie": "aifarm_session=1.2." + "0" * 64})
    assert forged.status == 401


@pytest.mark.parametrize("path", ["/tasks/99999999999999999999999999",
                                  "/api/v1/tasks/99999999999999999999999999", "/api/v1/tasks/-1",
                                  "/api/v1/tasks/99999999999999999999999999/logs", "/clients/" + "a" * 5000,
                                  "/clients/%00", "/api/v1/clients/%00", "/models/99999999999999999999999/download"])
def test_odd_ids_in_urls_are_not_server_errors(dash: Dashboard, path: str) -> None:
    """Ids beyond any integer column, negative, NUL or very long: 4xx (with CSP), never 500."""
    reply = dash.request("GET", path, cookie=True)
    assert 400 <= reply.status < 500, (path, reply.status, reply.text[:300])
    assert "Content-Security-Policy" in reply.headers
