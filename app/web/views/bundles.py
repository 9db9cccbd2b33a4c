"""The Settings page's recipe bundles: each organiser key with what it signed, and the volunteer's trust buttons."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from app.bundles.keys import normalise_fingerprint
from app.bundles.manifest import BundleError, parse_manifest
from app.bundles.trust import TrustStore
from app.db.queries import bundles as bundle_queries
from app.errors import ValidationError
from app.web.deps import DashboardDeps
from app.web.keys import DEPS_KEY


@dataclass(frozen=True)
class KeyView:
    """One organiser key: who published with it, the bundles and recipes it signed, whether this machine trusts it."""

    fingerprint: str
    publisher: str
    bundles: tuple[str, ...]
    recipes: tuple[str, ...]
    trusted: bool


async def bundle_keys(deps: DashboardDeps) -> list[KeyView]:
    """Every key that signed a bundle of the farm, and whether this machine trusts it."""
    async with deps.db.connect() as conn:
        rows = await bundle_queries.list_all(conn)
    trusted = TrustStore(deps.settings.data_dir).keys()
    grouped: dict[str, list[bundle_queries.BundleRow]] = {}
    for row in rows:
        grouped.setdefault(row.key_fingerprint, []).append(row)
    views = []
    for fingerprint, signed in grouped.items():
        publisher, recipes = "?", set[str]()
        for row in signed:
            try:
                manifest = parse_manifest(row.manifest)
            except BundleError:
                continue
            publisher = manifest.publisher
            recipes.update(manifest.recipes)
        views.append(KeyView(fingerprint, publisher,
                             tuple(r.ref + (" (revoked)" if r.revoked_at else "") for r in signed),
                             tuple(sorted(recipes)), fingerprint in trusted))
    return views


async def _posted_key(request: web.Request) -> tuple[DashboardDeps, str]:
    deps = request.app[DEPS_KEY]
    try:
        fingerprint = normalise_fingerprint(str((await request.post()).get("fingerprint", "")))
    except ValueError as exc:
        raise ValidationError(str(exc), {"fingerprint": str(exc)}) from None
    return deps, fingerprint


async def trust(request: web.Request) -> web.StreamResponse:
    """Trust a key that signed a bundle of this farm; then back to the settings."""
    deps, fingerprint = await _posted_key(request)
    async with deps.db.connect() as conn:
        rows = await bundle_queries.by_fingerprint(conn, fingerprint)
    if not rows:
        raise ValidationError(f"no bundle of this farm is signed by key {fingerprint}",
                              {"fingerprint": "no bundle is signed by this key"})
    view = next(v for v in await bundle_keys(deps) if v.fingerprint == fingerprint)
    await asyncio.to_thread(TrustStore(deps.settings.data_dir).add, fingerprint, rows[0].public_key, view.publisher)
    raise web.HTTPSeeOther("/settings#bundles-title")


async def untrust(request: web.Request) -> web.StreamResponse:
    """Stop trusting a key; then back to the settings."""
    deps, fingerprint = await _posted_key(request)
    await asyncio.to_thread(TrustStore(deps.settings.data_dir).remove, fingerprint)
    raise web.HTTPSeeOther("/settings#bundles-title")
