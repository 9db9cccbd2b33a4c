"""A second copy of every model: each agent looks for versions that no other client holds yet and pulls one from its
owner (sha256-checked, through PeerFiles), so data only flows from the holder to the copier."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from app.db.engine import Database
from app.db.queries import models as model_queries
from app.errors import AifarmError, DatabaseUnavailable
from app.model_store import parse_url
from app.peerfiles import PeerFiles

log = logging.getLogger(__name__)

EventSink = Callable[[str, str], None]
REPLICATE_INTERVAL = 5.0
CLAIM_STALE_SECONDS = 600.0
DB_ERRORS = (DatabaseUnavailable, SQLAlchemyError, OSError)


class Replicator:
    """Pulls a copy of a model version another client registered and nobody else holds; records the replica."""

    def __init__(self, db: Database, client_id: str, files: PeerFiles, events: EventSink, *,
                 may_work: Callable[[], bool] = lambda: True) -> None:
        self.db = db
        self.client_id = client_id
        self.files = files
        self.events = events
        self.may_work = may_work
        self._failed: dict[int, float] = {}  # version id -> when a copy last failed: retried after CLAIM_STALE_SECONDS

    async def loop(self) -> None:
        """Every few seconds (jittered, so agents do not race for the same version): copy one version."""
        while True:
            await asyncio.sleep(REPLICATE_INTERVAL * random.uniform(0.7, 1.3))
            if not self.may_work():
                continue
            try:
                await self.replicate_one()
            except DB_ERRORS as exc:
                log.debug("replication skipped: %s", exc)

    async def replicate_one(self) -> str | None:
        """Copy the newest version without a replica that another client owns; returns 'NAME vVERSION' or None."""
        async with self.db.connect() as conn:
            candidates = await model_queries.without_replica(conn)
        for row in candidates:
            try:
                owner = parse_url(row["url"])
            except AifarmError:  # a URL of another scheme: not ours to copy
                continue
            if owner.client_id == self.client_id or time.time() - self._failed.get(row["id"], 0.0) < CLAIM_STALE_SECONDS:
                continue
            async with self.db.begin() as conn:
                if not await model_queries.claim_replication(conn, row["id"], self.client_id, time.time(),
                                                             CLAIM_STALE_SECONDS):
                    continue
            label = f"model {row['name']} v{row['version']}"
            if await self.files.fetch(owner.client_id, owner.path, row["hash"]) is None:
                self._failed[row["id"]] = time.time()
                self.events("warning", f"{label}: copy from {owner.client_id} failed; another agent may try later")
                continue
            async with self.db.begin() as conn:
                await model_queries.add_replica(conn, row["id"], self.client_id)
            self.events("info", f"{label} copied from {owner.client_id}")
            return label
        return None
