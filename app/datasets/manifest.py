"""A published dataset's manifest: its kind, dtype, tokenizer and shards (name, size, samples, sha256). Stdlib only."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

KINDS = ("tokens", "images", "csv")
TOKEN_DTYPES = {"uint16": 2, "uint32": 4}
ROLES = ("tokens", "images", "labels", "csv", "tokenizer")
FORMAT = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
MAX_SHARDS = 100_000
PUBLISHED_DIR = "published"

Kind = Literal["tokens", "images", "csv"]


class ManifestError(ValueError):
    """A manifest that is malformed or does not match its shards."""


@dataclass(frozen=True)
class Shard:
    """One file of a dataset: its role (tokens, images, labels, csv, tokenizer) and shard index."""

    name: str
    role: str
    index: int
    bytes: int
    samples: int
    sha256: str


@dataclass(frozen=True)
class Tokenizer:
    """How text became token ids: `byte` (ids 0-255), or a tokenizers JSON file shipped as a shard."""

    type: str  # "byte" | "json"
    vocab_size: int
    file: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What a published dataset holds."""

    name: str
    version: int
    kind: str
    dtype: str
    shards: tuple[Shard, ...]
    tokenizer: Tokenizer | None = None
    sample_shape: tuple[int, ...] = ()
    classes: int = 0

    @property
    def total_bytes(self) -> int:
        """The size of every file together."""
        return sum(s.bytes for s in self.shards)

    @property
    def samples(self) -> int:
        """Samples of the data (tokens, images or rows), not counting labels or the tokenizer."""
        return sum(s.samples for s in self.data_shards)

    @property
    def data_shards(self) -> tuple[Shard, ...]:
        """The shards that hold samples (tokens, images or csv rows), in index order."""
        return tuple(s for s in self.shards if s.role in ("tokens", "images", "csv"))

    @property
    def largest_shard_samples(self) -> int:
        """Samples of the largest data shard (a context must fit in one)."""
        return max((s.samples for s in self.data_shards), default=0)

    def to_json(self) -> dict[str, Any]:
        """The manifest as stored in the database and as manifest.json."""
        data = asdict(self)
        data["format"] = FORMAT
        data["shards"] = [asdict(s) for s in self.shards]
        data["sample_shape"] = list(self.sample_shape)
        return data


def _int(data: dict[str, Any], key: str, where: str, low: int = 0) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ManifestError(f"{where}: {key} must be a whole number of at least {low}")
    return value


def _text(data: dict[str, Any], key: str, where: str, pattern: re.Pattern[str]) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise ManifestError(f"{where}: {key} is missing or malformed")
    return value


def _shard(raw: Any, at: int) -> Shard:
    where = f"shard {at}"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: must be an object")
    role = raw.get("role")
    if role not in ROLES:
        raise ManifestError(f"{where}: role must be one of {', '.join(ROLES)}")
    return Shard(name=_text(raw, "name", where, SHARD_NAME), role=str(role), index=_int(raw, "index", where),
                 bytes=_int(raw, "bytes", where), samples=_int(raw, "samples", where),
                 sha256=_text(raw, "sha256", where, SHA256))


def _tokenizer(raw: Any, names: set[str]) -> Tokenizer | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in ("byte", "json"):
        raise ManifestError("tokenizer: type must be byte or json")
    vocab = _int(raw, "vocab_size", "tokenizer", 2)
    file = raw.get("file")
    if raw["type"] == "json" and (not isinstance(file, str) or file not in names):
        raise ManifestError("tokenizer: a json tokenizer must name one of the dataset's files")
    return Tokenizer(str(raw["type"]), vocab, file if isinstance(file, str) else None)


def parse_manifest(raw: Any) -> Manifest:
    """A Manifest from its JSON form (read from the database: not trusted); ManifestError naming the problem."""
    if not isinstance(raw, dict):
        raise ManifestError("the manifest must be a JSON object")
    if raw.get("format") != FORMAT:
        raise ManifestError(f"unknown manifest format {raw.get('format')!r} (this version reads {FORMAT})")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"kind must be one of {', '.join(KINDS)}")
    raw_shards = raw.get("shards")
    if not isinstance(raw_shards, list) or not raw_shards or len(raw_shards) > MAX_SHARDS:
        raise ManifestError(f"shards must be a list of 1 to {MAX_SHARDS} files")
    shards = tuple(_shard(s, i) for i, s in enumerate(raw_shards))
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ManifestError("two shards have the same name")
    dtype = raw.get("dtype")
    if not isinstance(dtype, str) or len(dtype) > 16:
        raise ManifestError("dtype must be a text")
    if kind == "tokens" and dtype not in TOKEN_DTYPES:
        raise ManifestError(f"a token dataset's dtype must be one of {', '.join(TOKEN_DTYPES)}")
    shape = raw.get("sample_shape", [])
    if not isinstance(shape, list) or len(shape) > 4 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                                            for d in shape):
        raise ManifestError("sample_shape must be a list of at most 4 positive whole numbers")
    manifest = Manifest(name=_text(raw, "name", "manifest", NAME), version=_int(raw, "version", "manifest", 1),
                        kind=str(kind), dtype=dtype, shards=shards,
                        tokenizer=_tokenizer(raw.get("tokenizer"), set(names)), sample_shape=tuple(shape),
                        classes=_int(raw, "classes", "manifest") if "classes" in raw else 0)
    _check_sizes(manifest)
    return manifest


def _check_sizes(manifest: Manifest) -> None:
    """Each shard's size agrees with its sample count, where the kind fixes one by the other."""
    if not manifest.data_shards:
        raise ManifestError("the manifest lists no data shards")
    for shard in manifest.shards:
        if shard.role == "tokens" and shard.bytes != shard.samples * TOKEN_DTYPES[manifest.dtype]:
            raise ManifestError(f"shard {shard.name}: {shard.bytes} bytes do not hold {shard.samples} "
                                f"{manifest.dtype} tokens")
    if manifest.kind == "images":
        labels = {s.index: s for s in manifest.shards if s.role == "labels"}
        for shard in manifest.data_shards:
            if shard.index not in labels or labels[shard.index].samples != shard.samples:
                raise ManifestError(f"shard {shard.name}: no labels file with the same number of samples")


def dataset_folder(data_dir: Path, name: str, version: int) -> Path:
    """Where a dataset's shards live in a data dir (the publisher's and every holder's)."""
    return data_dir / "datasets" / PUBLISHED_DIR / name / str(version)


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shard_ok(folder: Path, shard: Shard) -> bool:
    """True when the shard lies in folder with its size and sha256."""
    path = folder / shard.name
    try:
        if path.stat().st_size != shard.bytes:
            return False
        return sha256_of(path) == shard.sha256
    except OSError:
        return False
