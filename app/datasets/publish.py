"""Build a dataset's fixed-size shards and their manifest from a file or folder (on the publisher's machine).

Text becomes a token stream (`.bin`, uint16 or uint32 ids), images and labels become `.npy` pairs, CSV becomes
CSV shards that each repeat the header. Nothing of the source is loaded whole.
"""

from __future__ import annotations

import codecs
import csv
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.datasets.manifest import Manifest, Shard, Tokenizer, sha256_of
from app.datasets.tokenizer import TextTokenizer, TokenizerError, load_tokenizer

MIN_SHARD_BYTES = 1024
MAX_SHARD_BYTES = 1 << 34
DEFAULT_SHARD_BYTES = 64 << 20
READ_BYTES = 1 << 20
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text", ".html", ".py", ".json", ".csv", ".tex", "")
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
         "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


class PublishError(ValueError):
    """The source cannot be published as asked; the message names the problem (never the file's content)."""


@dataclass
class Built:
    """Shards written into a staging folder, before the dataset has a version."""

    kind: str
    dtype: str
    shards: list[Shard] = field(default_factory=list)
    tokenizer: Tokenizer | None = None
    sample_shape: tuple[int, ...] = ()
    classes: int = 0

    def manifest(self, name: str, version: int) -> Manifest:
        """The manifest of these shards as version `version` of `name`."""
        return Manifest(name=name, version=version, kind=self.kind, dtype=self.dtype, shards=tuple(self.shards),
                        tokenizer=self.tokenizer, sample_shape=self.sample_shape, classes=self.classes)


def parse_size(text: str) -> int:
    """Bytes from '64MB', '512k', '1G' or a plain number; PublishError when out of range."""
    raw = text.strip().lower().replace(" ", "")
    digits = raw.rstrip("abgikm")
    unit = raw[len(digits):]
    try:
        value = float(digits) * UNITS[unit]
    except (ValueError, KeyError):
        raise PublishError(f"--shard-size {text!r} is not a size such as 64MB, 512k or 1G") from None
    if not MIN_SHARD_BYTES <= value <= MAX_SHARD_BYTES:
        raise PublishError(f"--shard-size must be between {MIN_SHARD_BYTES} bytes and 16 GB, not {text!r}")
    return int(value)


def source_kind(source: Path) -> str:
    """tokens, images or csv, from what the source is."""
    if source.is_dir() and (source / "images.npy").is_file():
        return "images"
    if source.suffix.lower() == ".npz":
        return "images"
    if source.suffix.lower() == ".csv":
        return "csv"
    return "tokens"


def build(source: Path, staging: Path, *, tokenizer: str = "byte", shard_bytes: int = DEFAULT_SHARD_BYTES) -> Built:
    """Write the shards of source into staging; PublishError naming what is wrong."""
    if not source.exists():
        raise PublishError(f"{source} does not exist")
    staging.mkdir(parents=True, exist_ok=True)
    kind = source_kind(source)
    if kind == "images":
        return _images(source, staging, shard_bytes)
    if kind == "csv":
        return _csv(source, staging, shard_bytes)
    try:
        tok = load_tokenizer(tokenizer)
    except TokenizerError as exc:
        raise PublishError(str(exc)) from None
    return _tokens(_text_files(source), staging, tok, shard_bytes)


def _shard(path: Path, role: str, index: int, samples: int) -> Shard:
    return Shard(path.name, role, index, path.stat().st_size, samples, sha256_of(path))


# --- tokens ---------------------------------------------------------------------------------------------------------

def _text_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    files = sorted(p for p in source.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(source).parts)
                   and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise PublishError(f"{source} holds no text files ({', '.join(s for s in TEXT_SUFFIXES if s)})")
    return files


def _utf8_chunks(files: list[Path]) -> Iterator[bytes]:
    """The files' bytes in chunks that end on a character boundary, each file checked as UTF-8."""
    for path in files:
        check = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with path.open("rb") as handle:
            while chunk := handle.read(READ_BYTES):
                try:
                    check.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise PublishError(f"{path}: not UTF-8 text (invalid byte at offset {offset + exc.start})") from None
                offset += len(chunk)
                yield chunk
            try:
                check.decode(b"", final=True)
            except UnicodeDecodeError:
                raise PublishError(f"{path}: not UTF-8 text (it ends inside a character)") from None
        yield b"\n"


def _tokens(files: list[Path], staging: Path, tok: TextTokenizer, shard_bytes: int) -> Built:
    itemsize = 2 if tok.dtype == "uint16" else 4
    per_shard = max(1, shard_bytes // itemsize) * itemsize
    built = Built("tokens", tok.dtype, tokenizer=Tokenizer(tok.type, tok.vocab_size,
                                                           "tokenizer.json" if tok.file else None))
    pending = bytearray()
    index = 0

    def flush(final: bool) -> None:
        nonlocal index, pending
        while len(pending) >= per_shard or (final and pending):
            part, pending = bytes(pending[:per_shard]), pending[per_shard:]
            path = staging / f"shard-{index:05d}.bin"
            path.write_bytes(part)
            built.shards.append(_shard(path, "tokens", index, len(part) // itemsize))
            index += 1

    text_tail = b""
    for chunk in _utf8_chunks(files):
        data = text_tail + chunk
        cut = _char_boundary(data)
        data, text_tail = data[:cut], data[cut:]
        pending += tok.encode(data)
        flush(final=False)
    pending += tok.encode(text_tail)
    flush(final=True)
    if not built.shards:
        raise PublishError("the source holds no text")
    if tok.file is not None:
        target = staging / "tokenizer.json"
        shutil.copyfile(tok.file, target)
        built.shards.append(_shard(target, "tokenizer", 0, tok.vocab_size))
    return built


def _char_boundary(data: bytes) -> int:
    """The length of data's prefix that ends on a UTF-8 character boundary."""
    cut = len(data)
    while cut > 0 and cut > len(data) - 4 and (data[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut > 0 and data[cut - 1] >= 0xC0:
        cut -= 1
    return cut


# --- images ---------------------------------------------------------------------------------------------------------

def _load_arrays(source: Path) -> tuple[Any, Any]:
    import numpy as np

    try:
        if source.is_dir():
            images = np.load(source / "images.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(source / "labels.npy", mmap_mode="r", allow_pickle=False)
        else:
            with np.load(source, allow_pickle=False) as archive:
                if "images" not in archive or "labels" not in archive:
                    raise PublishError(f"{source}: an image archive must hold the arrays `images` and `labels`")
                images, labels = archive["images"], archive["labels"]
    except PublishError:
        raise
    except FileNotFoundError as exc:
        raise PublishError(f"{source}: {Path(exc.filename or 'labels.npy').name} is missing") from None
    except (ValueError, OSError) as exc:
        raise PublishError(f"{source}: not a readable .npy/.npz file ({type(exc).__name__})") from None
    return images, labels


def _images(source: Path, staging: Path, shard_bytes: int) -> Built:
    import numpy as np

    images, labels = _load_arrays(source)
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise PublishError(f"{source}: images must be an array of shape (N, H, W) or (N, C, H, W) with N > 0")
    if images.dtype not in (np.uint8, np.float32):
        raise PublishError(f"{source}: images must be uint8 or float32, not {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise PublishError(f"{source}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
    if labels.dtype.kind not in "iu" or (labels.size and int(labels.min()) < 0):
        raise PublishError(f"{source}: labels must be whole numbers from 0")
    shape = tuple(int(d) for d in images.shape[1:])
    if len(shape) == 2:
        shape = (1, *shape)
    per_image = int(np.prod(shape)) * images.dtype.itemsize
    per_shard = max(1, shard_bytes // per_image)
    built = Built("images", str(images.dtype), sample_shape=shape, classes=int(labels.max()) + 1)
    for index, start in enumerate(range(0, images.shape[0], per_shard)):
        part = np.ascontiguousarray(images[start:start + per_shard]).reshape(-1, *shape)
        image_path, label_path = staging / f"shard-{index:05d}.images.npy", staging / f"shard-{index:05d}.labels.npy"
        np.save(image_path, part, allow_pickle=False)
        np.save(label_path, np.asarray(labels[start:start + per_shard], dtype=np.int64), allow_pickle=False)
        built.shards += [_shard(image_path, "images", index, len(part)), _shard(label_path, "labels", index, len(part))]
    return built


# --- csv ------------------------------------------------------------------------------------------------------------

def _csv(source: Path, staging: Path, shard_bytes: int) -> Built:
    built = Built("csv", "text")
    try:
        with source.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise PublishError(f"{source}: the file is empty (a header row is needed)")
            index, rows, size, out = 0, 0, 0, io.StringIO()

            def flush() -> None:
                nonlocal index, rows, size, out
                path = staging / f"shard-{index:05d}.csv"
                path.write_text(out.getvalue(), encoding="utf-8")
                built.shards.append(_shard(path, "csv", index, rows))
                index, rows, size, out = index + 1, 0, 0, io.StringIO()

            writer = csv.writer(out)
            for row in reader:
                if rows == 0:
                    writer.writerow(header)
                line = io.StringIO()
                csv.writer(line).writerow(row)
                out.write(line.getvalue())
                rows += 1
                size += len(line.getvalue().encode())
                if size >= shard_bytes:
                    flush()
                    writer = csv.writer(out)
            if rows:
                flush()
    except UnicodeDecodeError:
        raise PublishError(f"{source}: not UTF-8 text") from None
    except csv.Error:
        raise PublishError(f"{source}: malformed CSV") from None
    if not built.shards:
        raise PublishError(f"{source}: no data rows after the header")
    return built
