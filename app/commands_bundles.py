"""`aifarm bundles ...`: organisers make keys, publish and revoke signed recipe bundles; volunteers trust keys."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from app.cli_db import farm_database
from app.config import Settings
from app.errors import ConfigError
from app.textui import print_json

if TYPE_CHECKING:
    from app.db.queries.bundles import BundleRow


class BundleInfo(TypedDict):
    """One bundle version as `bundles list` and `show` print it."""

    bundle: str
    sha256: str
    key: str
    publisher: str
    recipes: list[str]
    requires: list[str]
    trusted: bool
    published_at: str
    revoked: str | None


async def bundles_keygen(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles keygen KEYFILE`: a new Ed25519 signing key (mode 0600; it never goes to the database)."""
    from app.bundles import keys
    from app.bundles.manifest import BundleError

    path = Path(args.keyfile)
    try:
        key = keys.generate(path)
    except (BundleError, OSError) as exc:
        raise ConfigError(f"cannot write the key: {exc}") from None
    fingerprint = keys.fingerprint(keys.public_bytes(key))
    if args.json:
        print_json({"key": str(path), "fingerprint": fingerprint})
    else:
        print(f"signing key written to {path} (mode 0600; keep it offline, never share it)")
        print(f"fingerprint: {fingerprint}  (volunteers trust it with `aifarm bundles trust {fingerprint}`)")
    return 0


async def bundles_publish(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles publish WHEEL --key KEY`: sign the wheel's manifest and register it; this data dir serves it."""
    from app.bundles import install, keys
    from app.bundles.manifest import BundleError, manifest_of
    from app.db.queries import bundles as bundle_queries
    from app.db.queries.bundles import BundleRow
    from app.identity import load_or_create_client_id

    try:
        key = keys.load_private(Path(args.key))
        public = keys.public_bytes(key)
        fingerprint = keys.fingerprint(public)
        manifest = manifest_of(Path(args.wheel), args.publisher or settings.farm_name, fingerprint)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {args.wheel}: {exc.strerror}") from None
    text = manifest.canonical().decode()
    row = BundleRow(manifest.name, manifest.version, manifest.sha256, fingerprint, keys.encode_public(public),
                    keys.sign(key, text.encode()), text, load_or_create_client_id(settings.data_dir), None, None)
    served = install.wheel_path(settings.data_dir, manifest)
    served.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.wheel, served)
    async with farm_database(settings.effective_database_url) as db, db.begin() as conn:
        added = await bundle_queries.insert(conn, row)
    if not added:
        raise ConfigError(f"bundle {manifest.ref} is published already; publish a new version")
    if args.json:
        print_json({"bundle": manifest.ref, "sha256": manifest.sha256, "key": fingerprint,
                    "recipes": list(manifest.recipes)})
    else:
        print(f"published {manifest.ref} ({', '.join(manifest.recipes)}), sha256 {manifest.sha256}")
        print(f"signed by key {fingerprint}; this data dir's agent serves the wheel to peers")
    return 0


async def bundles_trust(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles trust FINGERPRINT`: this machine installs and runs bundles signed by that key."""
    from app.bundles.trust import TrustStore
    from app.db.queries import bundles as bundle_queries

    fingerprint = _fingerprint(args.fingerprint)
    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        rows = await bundle_queries.by_fingerprint(conn, fingerprint)
    if not rows:
        raise ConfigError(f"no bundle in this farm is signed by key {fingerprint}; nothing to trust")
    publisher = _publisher(rows[0])
    added = TrustStore(settings.data_dir).add(fingerprint, rows[0].public_key, publisher)
    refs = ", ".join(r.ref + (" (revoked)" if r.revoked_at else "") for r in rows)
    print(f"{'trusted' if added else 'already trusted'}: key {fingerprint} of {publisher}; it signed {refs}")
    return 0


async def bundles_untrust(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles untrust FINGERPRINT`: stop installing bundles signed by that key."""
    from app.bundles.trust import TrustStore

    fingerprint = _fingerprint(args.fingerprint)
    if not TrustStore(settings.data_dir).remove(fingerprint):
        raise ConfigError(f"key {fingerprint} is not trusted on this machine")
    print(f"key {fingerprint} is no longer trusted; its bundles are not installed or run here")
    return 0


async def bundles_list(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles list`: every published bundle version, whether its key is trusted here, revoked or not."""
    from app.bundles.trust import TrustStore
    from app.db.queries import bundles as bundle_queries

    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        rows = await bundle_queries.list_all(conn)
    trusted = TrustStore(settings.data_dir).keys()
    items = [_describe(r, r.key_fingerprint in trusted) for r in rows]
    if args.json:
        print_json({"bundles": [dict(i) for i in items]})
        return 0
    for item in items:
        state = "revoked" if item["revoked"] else ("trusted" if item["trusted"] else "not trusted")
        print(f"{item['bundle']:<32} key {item['key']} ({item['publisher']}), {state}: {', '.join(item['recipes'])}")
    if not items:
        print("no bundles are published in this farm")
    return 0


async def bundles_show(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles show NAME[==VERSION]`: one bundle's manifest, key, signature state here."""
    from app.bundles.manifest import parse_ref
    from app.bundles.trust import TrustStore
    from app.db.queries import bundles as bundle_queries

    try:
        ref = parse_ref(args.ref)
    except ValueError as exc:
        raise ConfigError(f"bundle {exc}") from None
    async with farm_database(settings.effective_database_url) as db, db.connect() as conn:
        rows = [r for r in await bundle_queries.versions(conn, ref.name) if ref.version in (None, r.version)]
    if not rows:
        raise ConfigError(f"no bundle {args.ref} is published in this farm")
    trusted = TrustStore(settings.data_dir).keys()
    items = [_describe(r, r.key_fingerprint in trusted) for r in rows]
    if args.json:
        print_json({"bundles": [dict(i) for i in items]})
        return 0
    for item in items:
        print(f"{item['bundle']}\n  recipes:   {', '.join(item['recipes'])}\n  requires:  {', '.join(item['requires']) or '-'}"
              f"\n  sha256:    {item['sha256']}\n  key:       {item['key']} ({item['publisher']}), "
              f"{'trusted here' if item['trusted'] else 'not trusted here'}\n  published: {item['published_at']}"
              + (f"\n  REVOKED:   {item['revoked']}" if item["revoked"] else ""))
    return 0


async def bundles_revoke(args: argparse.Namespace, settings: Settings) -> int:
    """`aifarm bundles revoke NAME==VERSION --key KEY`: agents stop its tasks and delete its environment."""
    from app.bundles import keys
    from app.bundles.manifest import BundleError, parse_ref
    from app.db.queries import bundles as bundle_queries

    try:
        ref = parse_ref(args.ref)
        key = keys.load_private(Path(args.key))
    except ValueError as exc:
        raise ConfigError(f"bundle {exc}") from None
    except BundleError as exc:
        raise ConfigError(str(exc)) from None
    if ref.version is None:
        raise ConfigError("name the version to revoke: NAME==VERSION")
    fingerprint = keys.fingerprint(keys.public_bytes(key))
    async with farm_database(settings.effective_database_url) as db, db.begin() as conn:
        row = await bundle_queries.get(conn, ref.name, ref.version)
        if row is None:
            raise ConfigError(f"no bundle {ref} is published in this farm")
        if row.key_fingerprint != fingerprint:
            raise ConfigError(f"bundle {ref} was signed by key {row.key_fingerprint}, not by {fingerprint}")
        changed = await bundle_queries.revoke(conn, ref.name, ref.version)
    print(f"bundle {ref} {'revoked: agents stop its tasks and remove it' if changed else 'was revoked already'}")
    return 0


def _fingerprint(text: str) -> str:
    from app.bundles.keys import normalise_fingerprint

    try:
        return normalise_fingerprint(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _publisher(row: BundleRow) -> str:
    from app.bundles.manifest import BundleError, parse_manifest

    try:
        return parse_manifest(row.manifest).publisher
    except BundleError:
        return "?"


def _describe(row: BundleRow, trusted: bool) -> BundleInfo:
    from app.bundles.manifest import BundleError, parse_manifest

    try:
        manifest = parse_manifest(row.manifest)
        recipes, requires, publisher = list(manifest.recipes), list(manifest.requires), manifest.publisher
    except BundleError:
        recipes, requires, publisher = [], [], "?"
    return BundleInfo(bundle=row.ref, sha256=row.sha256, key=row.key_fingerprint, publisher=publisher, recipes=recipes,
                      requires=requires, trusted=trusted, published_at=str(row.published_at),
                      revoked=str(row.revoked_at) if row.revoked_at else None)
