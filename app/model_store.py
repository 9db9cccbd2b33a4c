"""Finding and fetching model versions: `aifarm://CLIENT/PATH` URLs resolved through the clients table."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.db.engine import Database
from app.db.queries import clients as client_queries
from app.db.queries import farms as farm_queries
from app.db.queries import models as model_queries
from app.errors import AifarmError, NotFound
from app.files import sha256_file
from app.peerapi.client import ChecksumMismatch, PeerClient, PeerError
from app.peerfiles import registered_endpoints
from app.textui import BYTES, ProgressDisplay
from app.training.model_files import ModelFileError, meta_path, read_meta, write_meta

SCHEME = "aifarm://"


@dataclass(frozen=True)
class Location:
    """Where one copy of a model file lives."""

    client_id: str
    path: str


def parse_url(url: str) -> Location:
    """The client and relative path of an aifarm:// URL."""
    if not url.startswith(SCHEME) or "/" not in url[len(SCHEME):]:
        raise AifarmError(f"{url!r} is not an aifarm:// model URL")
    client_id, path = url[len(SCHEME):].split("/", 1)
    return Location(client_id, path)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """NAME or NAME:VERSION."""
    name, _, version = ref.partition(":")
    return name, version or None


async def _endpoints(db: Database, client_ids: list[str]) -> list[tuple[str, str, int]]:
    own_hostname = socket.gethostname()
    out = []
    async with db.connect() as conn:
        for client_id in client_ids:
            row = await client_queries.get_client(conn, client_id)
            out += [(client_id, host, port) for host, port in registered_endpoints(row, own_hostname)]
    return out


async def pull(db: Database, ref: str, dest: Path | None, farm_name: str, client_id: str | None, *,
               progress: bool = True) -> tuple[dict[str, Any], Path]:
    """Download a model version from its owner or a replica, verifying its sha256; returns (row, file).

    The request is signed as `client_id` (this machine's agent), which peers accept only while it is active."""
    name, version = parse_ref(ref)
    async with db.connect() as conn:
        row = await model_queries.get_version(conn, name, version)
        secret = await farm_queries.get_secret(conn, farm_name)
        member = client_id is not None and await client_queries.is_active_member(conn, client_id, farm_name)
    if row is None:
        raise NotFound(f"model {ref!r} does not exist (see `aifarm models`)")
    if secret is None:
        raise AifarmError(f"farm {farm_name!r} has no secret in this database; run an agent or `aifarm join` first")
    if not member or client_id is None:
        raise AifarmError(f"this machine's agent is not an active client of farm {farm_name!r}; peers serve files "
                          "only to active clients, so start it (`aifarm run`) and pull again")
    location = parse_url(row["url"])
    holders = [location.client_id] + [c for c in (row["config"] or {}).get("replicas", []) if c != location.client_id]
    dest = weights_destination(dest, name, str(row["version"]), Path(location.path).suffix)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for holder, host, port in await _endpoints(db, holders):
        # The owner serves the file where it wrote it; a replica keeps its verified copy under fetched/OWNER/.
        path = location.path if holder == location.client_id else f"fetched/{location.client_id}/{location.path}"
        try:
            await _download(host, port, f"/peer/v1/files/{path}", dest, row["hash"], secret, client_id, progress)
            write_description(dest)
            return row, dest
        except AifarmError as exc:
            errors.append(f"{holder} at {host}:{port}: {exc}")
    raise AifarmError(f"no holder of model {name} v{row['version']} could deliver it"
                      + (": " + "; ".join(errors) if errors else " (none is active)"))


def weights_destination(output: Path | None, name: str, version: str, suffix: str) -> Path:
    """The weights file to write: `output` itself when it names a weights file, else NAME-vVERSION in that folder."""
    suffix = suffix or ".safetensors"
    if output is not None and output.suffix in (".safetensors", ".pt"):
        if output.suffix != suffix:
            raise AifarmError(f"model {name} v{version} is a {suffix} file; give -o a folder or a name ending in {suffix}")
        return output
    return (output or Path(".")) / f"{name}-v{version}{suffix}"


def write_description(weights: Path) -> Path | None:
    """The JSON beside a pulled safetensors file, from its header (an old .pt model has none)."""
    if weights.suffix != ".safetensors":
        return None
    try:
        meta = read_meta(weights)
    except ModelFileError:
        return None
    write_meta(meta, meta_path(weights))
    return meta_path(weights)


async def local_model(db: Database, ref: str, data_dir: Path, farm_name: str,
                      client_id: str | None) -> tuple[dict[str, Any], Path]:
    """A verified copy of a model version on this machine: its own file, a replica, or one pulled into fetched/."""
    name, version = parse_ref(ref)
    async with db.connect() as conn:
        row = await model_queries.get_version(conn, name, version)
    if row is None:
        raise NotFound(f"model {ref!r} does not exist (see `aifarm models`)")
    location = parse_url(row["url"])
    copy = data_dir / "fetched" / location.client_id / location.path
    own = data_dir / location.path if location.client_id == client_id else None
    for path in (own, copy):
        if path is not None and path.is_file() and sha256_file(path) == row["hash"]:
            return row, path
    return await pull(db, f"{name}:{row['version']}", copy, farm_name, client_id, progress=False)


def try_problem(row: dict[str, Any], path: Path, *, image: bool) -> str | None:
    """Why `models try` cannot run this model with this input (one line), or None."""
    label = f"model {row['name']} v{row['version']}"
    if path.suffix != ".safetensors":
        return f"{label} was saved as a bare state dict, without its recipe and tokenizer; it cannot be tried"
    try:
        meta = read_meta(path)
    except ModelFileError as exc:
        return f"{label}: {exc}"
    if meta.kind == "language model":
        return f"{label} is a language model ({meta.recipe}): give --prompt, not --image" if image else None
    if meta.input_kind == "image":
        return None if image else f"{label} is an image classifier ({meta.recipe}): give --image FILE, not a prompt"
    return (f"{label} is a {meta.kind} ({meta.recipe}); `models try` runs language models (--prompt) and "
            "image classifiers (--image)")


async def _download(host: str, port: int, path: str, dest: Path, sha256: str, secret: str, client_id: str,
                    progress: bool) -> None:
    client = PeerClient(client_id, lambda: secret)
    await client.start()
    try:
        with ProgressDisplay(dest.name, None, BYTES, quiet=not progress) as shown:
            def report(done: int, total: int | None) -> None:
                shown.set_total(total)
                shown.update(done)

            await client.download(host, port, path, dest, sha256, progress=report)
    except ChecksumMismatch:
        raise AifarmError(f"the file does not match the registered sha256 {sha256[:12]}…; discarded") from None
    except PeerError as exc:
        raise AifarmError(str(exc)) from None
    finally:
        await client.close()
