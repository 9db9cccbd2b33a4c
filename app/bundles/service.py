"""The agent's bundles: which bundles named by pending tasks this machine can run (trusted, verified, installed,
sandboxed), why not when it cannot, and the revocations it acts on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from app.bundles import install as installer
from app.bundles import sandbox
from app.bundles.install import BundleEnv
from app.bundles.manifest import BundleError, Manifest, parse_manifest
from app.bundles.trust import TrustStore
from app.db.engine import Database
from app.db.queries import bundles as bundle_queries
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries.bundles import BundleRow

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0
FetchWheel = Callable[[list[str], Manifest, Path], Awaitable[str | None]]  # owners to try, manifest, dest -> owner


@dataclass(frozen=True)
class Verdict:
    """Whether this machine can run a bundle, and why not."""

    ref: str
    env: BundleEnv | None
    reason: str = ""
    retry: bool = False  # an unavailable wheel or an untrusted key may change; a bad signature does not


class BundleService:
    """Decides, installs and forgets bundles for one agent; the scheduler asks it before claiming."""

    def __init__(self, db: Database, data_dir: Path, client_id: str, fetch_wheel: FetchWheel, *,
                 allow_unsandboxed: Callable[[], bool]) -> None:
        self.db = db
        self.data_dir = data_dir
        self.client_id = client_id
        self.fetch_wheel = fetch_wheel
        self.allow_unsandboxed = allow_unsandboxed
        self.trust = TrustStore(data_dir)
        self.verdicts: dict[str, Verdict] = {}
        self.noted: set[tuple[int, str]] = set()
        self.sandbox_problem: str | None = sandbox.available()
        self._refreshed = 0.0
        self._lock = asyncio.Lock()
        if self.sandbox_problem:
            log.warning("bundle tasks: the worker sandbox is unavailable (%s); %s", self.sandbox_problem,
                        "bundle code would run unconfined (allow_unsandboxed_bundles is set)" if allow_unsandboxed()
                        else "bundle tasks are not claimed here (set allow_unsandboxed_bundles = true to run them "
                             "unconfined)")

    def ready(self) -> frozenset[str]:
        """NAME==VERSION of the bundles installed and runnable here."""
        return frozenset(ref for ref, v in self.verdicts.items() if v.env is not None)

    def env(self, ref: str) -> BundleEnv | None:
        """The installed environment of a bundle."""
        verdict = self.verdicts.get(ref)
        return verdict.env if verdict else None

    def reasons(self) -> dict[str, str]:
        """Why each bundle named by a pending task cannot run here."""
        return {ref: v.reason for ref, v in self.verdicts.items() if v.env is None}

    async def refresh(self, *, force: bool = False) -> None:
        """Decide every bundle named by a pending task (installing trusted ones) and act on revocations."""
        if not force and time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        async with self._lock:
            self._refreshed = time.monotonic()
            async with self.db.connect() as conn:
                pending = await bundle_queries.pending_task_refs(conn)
                revoked = await bundle_queries.revoked_refs(conn)
            for ref in sorted(revoked & set(self.verdicts)):
                if self.verdicts[ref].env is not None:
                    self.forget(ref)
            for ref in sorted({ref for _, ref in pending}):
                verdict = self.verdicts.get(ref)
                if verdict is None or (verdict.env is None and verdict.retry) or ref in revoked:
                    self.verdicts[ref] = await self._decide(ref)
            await self._note(pending)

    def forget(self, ref: str) -> None:
        """A revoked bundle: its environment and wheel are deleted here."""
        name, _, version = ref.partition("==")
        if installer.remove(self.data_dir, name, version):
            log.warning("bundle %s was revoked; its environment was removed", ref)
        self.verdicts[ref] = Verdict(ref, None, f"bundle {ref} is revoked")

    async def is_revoked(self, ref: str) -> bool:
        """True when the farm database says the bundle is revoked."""
        name, _, version = ref.partition("==")
        async with self.db.connect() as conn:
            row = await bundle_queries.get(conn, name, version)
        return row is None or row.revoked_at is not None

    async def _decide(self, ref: str) -> Verdict:
        name, _, version = ref.partition("==")
        async with self.db.connect() as conn:
            row = await bundle_queries.get(conn, name, version)
        if row is None:
            return Verdict(ref, None, f"bundle {ref} is not published in this farm", retry=True)
        if row.revoked_at is not None:
            log.warning("bundle %s refused: it is revoked; not installed", ref)
            return Verdict(ref, None, f"bundle {ref} is revoked")
        trusted = self.trust.get(row.key_fingerprint)
        if trusted is None:
            return Verdict(ref, None, self._untrusted(row), retry=True)
        if self.sandbox_problem and not self.allow_unsandboxed():
            return Verdict(ref, None, f"bundle {ref} needs the worker sandbox, unavailable here: {self.sandbox_problem}"
                                      " (allow_unsandboxed_bundles = true runs it unconfined)", retry=True)
        try:
            manifest = self._verified_manifest(row, trusted.public_key)
            existing = installer.installed(self.data_dir, manifest)
            if existing is not None:
                return Verdict(ref, existing)
            wheel = await self._wheel(row, manifest)
            if wheel is None:
                return Verdict(ref, None, f"bundle {ref}: no peer could send its wheel yet", retry=True)
            env = await installer.install(self.data_dir, manifest, wheel)
        except BundleError as exc:
            log.warning("bundle %s refused: %s; nothing installed", ref, exc)
            return Verdict(ref, None, f"bundle {ref} refused: {exc}")
        log.info("bundle %s (key %s) verified and installed in %s", ref, row.key_fingerprint, env.path)
        return Verdict(ref, env)

    @staticmethod
    def _untrusted(row: BundleRow) -> str:
        publisher = "?"
        try:
            publisher = parse_manifest(row.manifest).publisher
        except BundleError:
            pass
        return (f"bundle {row.ref} is signed by key {row.key_fingerprint} ({publisher}), which this machine does not "
                f"trust; to run it: aifarm bundles trust {row.key_fingerprint}")

    @staticmethod
    def _verified_manifest(row: BundleRow, trusted_key: str) -> Manifest:
        installer.verify_signature(row.manifest, row.signature, trusted_key)
        manifest = parse_manifest(row.manifest)
        if (manifest.name, manifest.version, manifest.key, manifest.sha256) != \
                (row.name, row.version, row.key_fingerprint, row.sha256):
            raise BundleError("its signed manifest does not describe this bundle version")
        return manifest

    async def _wheel(self, row: BundleRow, manifest: Manifest) -> Path | None:
        """A verified local wheel: this machine's copy, else one fetched from the publisher or any peer."""
        path = installer.wheel_path(self.data_dir, manifest)
        if path.exists():
            await asyncio.to_thread(installer.verify_wheel, path, manifest)
            return path
        async with self.db.connect() as conn:
            active = [c["id"] for c in await client_queries.list_clients(conn, status="active")]
        owners = [o for o in dict.fromkeys([row.publisher_id or "", *active]) if o and o != self.client_id]
        owner = await self.fetch_wheel(owners, manifest, path)
        if owner is None:
            return None
        try:
            await asyncio.to_thread(installer.verify_wheel, path, manifest)
        except BundleError:
            path.unlink(missing_ok=True)
            raise
        log.info("bundle %s: wheel fetched from peer %s; its sha256 matches the signed manifest", row.ref, owner)
        return path

    async def _note(self, pending: list[tuple[int, str]]) -> None:
        """Say once in each waiting task's log why this machine does not take it."""
        notes = [(task_id, ref, self.verdicts[ref].reason) for task_id, ref in pending
                 if ref in self.verdicts and self.verdicts[ref].env is None and (task_id, ref) not in self.noted]
        if not notes:
            return
        async with self.db.begin() as conn:
            for task_id, ref, reason in notes:
                self.noted.add((task_id, ref))
                await log_queries.add_task_log(conn, task_id, self.client_id, "info", f"skipped on {self.client_id}: "
                                                                                      f"{reason}")
