"""Models are copied by pulling: an agent finds a version nobody else holds and fetches it from its owner, verified."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from app.db.engine import create_database
from app.db.queries import models as model_queries
from app.files import sha256_file
from tests.agent.harness import AgentProcess, wait_for
from tests.training.e2e import read, sync, upgraded

FAST = ("--heartbeat-interval", "1s")
pytestmark = pytest.mark.slow


async def _register(url: str, name: str, owner: str, relative: str, sha256: str) -> None:
    db = create_database(url)
    try:
        async with db.begin() as conn:
            await model_queries.register(conn, name=name, url=f"aifarm://{owner}/{relative}", sha256=sha256,
                                         config={"replicas": []})
    finally:
        await db.dispose()


def _version(url: str, name: str) -> dict[str, Any]:
    version = sync(read(url, model_queries.get_version, name, "1"))
    assert isinstance(version, dict)
    return version


async def test_a_model_nobody_else_holds_is_pulled_by_another_agent(tmp_path: Path, sqlite_url: str) -> None:
    """A version registered by A (written straight to the database, A does nothing more) is copied by B from A's
    peer API into B's fetched/A/ and recorded as B's replica; a version whose file does not match its sha256 is
    refused and gets no replica."""
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST)
    b = AgentProcess(tmp_path, "b", "--database-url", sqlite_url, *FAST)
    try:
        payload = os.urandom(300_000)
        model = a.data_dir / "models" / "probe-v1.pt"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(payload)
        await _register(sqlite_url, "probe", a.client_id, "models/probe-v1.pt", hashlib.sha256(payload).hexdigest())
        bad = a.data_dir / "models" / "bad-v1.pt"
        bad.write_bytes(b"not what was registered")
        await _register(sqlite_url, "bad", a.client_id, "models/bad-v1.pt", "0" * 64)

        wait_for(lambda: _version(sqlite_url, "probe")["config"].get("replicas"), 40, "a replica of the model")
        assert _version(sqlite_url, "probe")["config"]["replicas"] == [b.client_id]
        copy = b.data_dir / "fetched" / a.client_id / "models" / "probe-v1.pt"
        assert sha256_file(copy) == hashlib.sha256(payload).hexdigest()
        wait_for(lambda: "bad v1: copy from" in b.log(), 40, "the refused copy to be logged")
        assert not _version(sqlite_url, "bad")["config"].get("replicas")
        assert not (b.data_dir / "fetched" / a.client_id / "models" / "bad-v1.pt").exists()
        time.sleep(12)  # two more rounds of the replicator: a refused copy is not retried at once
        assert b.log().count("bad v1: copy from") == 1
    finally:
        a.stop()
        b.stop()
