"""Built-in datasets: synthetic, mnist (IDX files), csv, text and npy, loaded into train/validation TensorDatasets."""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import io
import logging
import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import TensorDataset

from app.training.catalog import BUILTIN_DATASETS, INPUT_KINDS, Recipe, check_option
from app.training.fetch import Network, open_checked
from app.training.recipes import DataError, RecipeError, SourceNotAllowed
from app.training.sources import SourcePolicy, SourceRefused, check_path, check_url, is_url
from app.training.tokenizers import BpeTokenizer, ByteTokenizer, CharTokenizer, Tokenizer, TokenizerError, TokenizerSpec

local_log = logging.getLogger(__name__)

KINDS = INPUT_KINDS
DOWNLOAD_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
MNIST_SIDE = 28


@dataclass(frozen=True)
class DataInfo:
    """What a dataset produces: its input kind, per-sample input shape and number of classes."""

    kind: str  # "vector" | "image" | "tokens"
    input_shape: tuple[int, ...]  # per-sample: (features,) | (1, 28, 28) | (seq_len,)
    n_classes: int  # classes, or vocabulary size for tokens
    vocab: tuple[str, ...] | None = None  # characters for the text dataset
    tokenizer: TokenizerSpec | None = None  # how text becomes the tokens (saved with the model)


Loaded = tuple[torch.Tensor, torch.Tensor, DataInfo]


def resolved_options(recipe: Recipe, options: Any) -> dict[str, Any]:
    """The recipe's options with catalog defaults filled in, checked against the catalog; RecipeError if wrong."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise RecipeError(f"{recipe.kind} {recipe.name!r}: options must be a mapping, not {type(options).__name__}")
    unknown = sorted(set(options) - set(recipe.options))
    if unknown:
        raise RecipeError(f"{recipe.kind} {recipe.name!r}: unknown option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(recipe.options))}")
    out: dict[str, Any] = {}
    for key, option in recipe.options.items():
        value = options.get(key)
        if value is None:
            if option.required:
                raise RecipeError(f"{recipe.kind} {recipe.name!r}: option {key!r} is required")
            if option.default is None:
                out[key] = None
                continue
            value = option.default
        problem = check_option(key, option, value)
        if problem:
            raise RecipeError(f"{recipe.kind} {recipe.name!r}: option {key!r} {problem} (got {value!r})")
        out[key] = list(value) if isinstance(value, list) else value
    return out


def load_dataset(name: str, options: dict[str, Any], *, cache_dir: Path, validation_split: float, seed: int,
                 policy: SourcePolicy, want: str | None = None, network: Network | None = None,
                 log: Callable[[str], None] = print) -> tuple[TensorDataset, TensorDataset, DataInfo]:
    """Load a built-in dataset and split it deterministically into (train, validation, info)."""
    recipe = BUILTIN_DATASETS.get(name) if isinstance(name, str) else None
    if recipe is None:
        raise RecipeError(f"unknown dataset {name!r}; built-in datasets: {', '.join(sorted(BUILTIN_DATASETS))}")
    if want is not None and want not in KINDS:
        raise RecipeError(f"unknown input kind {want!r}; expected one of {', '.join(KINDS)}")
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not math.isfinite(validation_split) or not 0 <= validation_split < 1:
        raise RecipeError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RecipeError(f"seed must be a whole number, got {seed!r}")
    opts = resolved_options(recipe, options)
    inputs, targets, info = _LOADERS[name](opts, _Fetch(Path(cache_dir), policy, network, log))
    inputs, info = as_input_kind(inputs, info, want)
    train, validation = split_dataset(inputs, targets, validation_split, seed)
    return train, validation, info


def as_input_kind(inputs: torch.Tensor, info: DataInfo, want: str | None) -> tuple[torch.Tensor, DataInfo]:
    """The inputs as the kind a model is fed where a conversion exists (images flattened to vectors), else as they are."""
    if info.kind == "image" and want == "vector":
        inputs = inputs.reshape(inputs.shape[0], -1)
        info = DataInfo("vector", (int(inputs.shape[1]),), info.n_classes, info.vocab, info.tokenizer)
    return inputs, info


def split_dataset(inputs: torch.Tensor, targets: torch.Tensor, validation_split: float,
                  seed: int) -> tuple[TensorDataset, TensorDataset]:
    """A seeded permutation split: validation gets the first round(n*split) samples (at least 1, at most n-1)."""
    n = int(inputs.shape[0])
    if n != int(targets.shape[0]):
        raise RecipeError(f"{n} inputs but {int(targets.shape[0])} targets")
    if n < 2:
        raise RecipeError(f"the dataset has {n} sample(s); at least 2 are needed for a training and a validation set")
    n_val = min(max(1, round(n * validation_split)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return TensorDataset(inputs[train_idx], targets[train_idx]), TensorDataset(inputs[val_idx], targets[val_idx])


# --- synthetic -----------------------------------------------------------------------------------------------------

def _synthetic(opts: dict[str, Any], fetch: _Fetch) -> Loaded:
    """Deterministic generated data: Gaussian blobs, patterned images or arithmetic token sequences."""
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    samples, classes, noise = int(opts["samples"]), int(opts["classes"]), float(opts["noise"])
    kind = opts["kind"]
    if kind == "vector":
        features = int(opts["features"])
        centres = torch.randn(classes, features, generator=gen) * 2.0
        labels = torch.randperm(samples, generator=gen) % classes
        inputs = centres[labels] + noise * torch.randn(samples, features, generator=gen)
        return inputs.float(), labels.long(), DataInfo("vector", (features,), classes)
    if kind == "image":
        coarse = torch.rand(classes, 1, 7, 7, generator=gen)
        patterns = torch.nn.functional.interpolate(coarse, size=(MNIST_SIDE, MNIST_SIDE), mode="bilinear",
                                                   align_corners=False)
        labels = torch.randperm(samples, generator=gen) % classes
        inputs = patterns[labels] + noise * torch.randn(samples, 1, MNIST_SIDE, MNIST_SIDE, generator=gen)
        return inputs.clamp_(0.0, 1.0).float(), labels.long(), DataInfo("image", (1, MNIST_SIDE, MNIST_SIDE), classes)
    if kind == "tokens":
        seq_len, vocab = int(opts["seq_len"]), int(opts["vocab"])
        max_step = max(1, min(3, vocab - 1))
        starts = torch.randint(0, vocab, (samples, 1), generator=gen)
        steps = torch.randint(1, max_step + 1, (samples, 1), generator=gen)
        seqs = (starts + steps * torch.arange(seq_len + 1).unsqueeze(0)) % vocab
        seqs = seqs.long()
        return seqs[:, :-1].contiguous(), seqs[:, 1:].contiguous(), DataInfo("tokens", (seq_len,), vocab)
    raise RecipeError(f"synthetic: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


# --- sources: local paths and verified downloads -------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_source(source: str, sha256: str | None, *, cache_dir: Path, what: str, policy: SourcePolicy,
                 network: Network | None = None, field: str | None = None, log: Callable[[str], None] = print) -> Path:
    """A local file for a source: a path inside dataset_dirs (verified when sha256 is given) or a verified download.

    A path outside the allowed folders is refused (RecipeError) before anything is opened; a URL that cannot be
    fetched, for whatever reason, gives the same DataError, with the reason only in this machine's log.
    """
    if not isinstance(source, str) or not source.strip():
        raise RecipeError(f"{what}: the source must be a file path or an http(s) URL")
    expected = sha256.strip().lower() if isinstance(sha256, str) and sha256.strip() else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise RecipeError(f"{what}: the sha256 must be 64 hexadecimal characters, got {sha256!r}")
    if is_url(source):
        if not expected:
            raise RecipeError(f"{what}: a sha256 is required for the URL {source}")
        return _download(source, expected, Path(cache_dir), policy, network or Network(), log)
    if "://" in source:
        raise RecipeError(f"{what}: only http:// and https:// URLs are supported, not {source}")
    try:
        path = check_path(source, policy.dirs)
    except SourceRefused as exc:
        raise SourceNotAllowed(f"{field or what}: {source} is not allowed: {exc}") from None
    if not path.is_file():
        raise DataError(f"{what}: file not found: {source}")
    if expected:
        try:
            actual = _sha256_file(path)
        except OSError as exc:
            raise DataError(f"{what}: cannot read {source}: {exc.strerror}") from None
        if actual != expected:
            raise DataError(f"sha256 mismatch for {source}: the file's sha256 is not {expected}")
    return path


def _fetch_failed(url: str, detail: str) -> DataError:
    """The one error every failed download gives; the detail goes only to this machine's log."""
    local_log.warning("could not fetch %s: %s", url, detail)
    return DataError(f"could not fetch {url} (see this machine's log)")


def _download(url: str, expected: str, cache_dir: Path, policy: SourcePolicy, network: Network,
              log: Callable[[str], None]) -> Path:
    """Download url into cache_dir/<sha256> (reusing a verified cached copy); the same DataError on any failure."""
    try:
        check_url(url, policy.hosts)  # a URL that may not be fetched does not get a cached copy either
    except SourceRefused as exc:
        raise _fetch_failed(url, f"refused: {exc}") from None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache directory {cache_dir}: {exc.strerror}") from None
    target = cache_dir / expected
    if _cached(target, expected):
        log(f"using the cached copy of {url}")
        return target
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".download-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            received, total, actual = _receive(url, policy, network, out)
        if total is not None and received != total:
            raise _fetch_failed(url, f"received {received} of {total} bytes")
        if actual != expected:
            raise _fetch_failed(url, f"sha256 mismatch: expected {expected}, got {actual}")
        os.replace(tmp, target)
        log(f"downloaded {url} ({received} bytes, sha256 verified)")
    except OSError as exc:
        raise _fetch_failed(url, f"{type(exc).__name__}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _cached(target: Path, expected: str) -> bool:
    """True when a verified copy is in the cache; a stale or damaged copy is removed, to be fetched again."""
    if not target.is_file():
        return False
    try:
        if _sha256_file(target) == expected:
            return True
        target.unlink()
    except OSError:
        pass
    return False


def _receive(url: str, policy: SourcePolicy, network: Network, out: BinaryIO) -> tuple[int, int | None, str]:
    """Fetch url into out: (bytes received, the announced length or None, their sha256); DataError on failure."""
    try:
        fetched = open_checked(url, policy.hosts, timeout=DOWNLOAD_TIMEOUT_S, network=network)
    except SourceRefused as exc:
        raise _fetch_failed(url, f"refused: {exc}") from None
    except (TimeoutError, http.client.HTTPException, OSError, ValueError) as exc:
        raise _fetch_failed(url, f"{type(exc).__name__}: {exc}") from None
    digest = hashlib.sha256()
    received = 0
    try:
        length = fetched.response.getheader("Content-Length")
        total = int(length) if length and length.isdigit() and int(length) > 0 else None
        next_pct = 10
        while chunk := fetched.response.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            if total:
                pct = min(100, received * 100 // total)
                if pct >= next_pct:
                    local_log.info("downloading %s: %d%% of %d bytes", url, pct, total)
                    next_pct = (pct // 10 + 1) * 10
    except (TimeoutError, http.client.HTTPException, OSError, ValueError) as exc:
        raise _fetch_failed(url, f"{type(exc).__name__}: {exc}") from None
    finally:
        fetched.close()
    return received, total, digest.hexdigest()


def _read_bytes(path: Path, what: str, name: str) -> bytes:
    """A file's bytes, gunzipped when the file is gzip-compressed (messages name the source, never the content)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{what}: cannot read {name}: {exc.strerror}") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise RecipeError(f"{what}: {name} is not a valid gzip file") from None
    return data


@dataclass(frozen=True)
class _Fetch:
    """Where downloads are cached, what may be opened or fetched, and where progress is reported."""

    cache_dir: Path
    policy: SourcePolicy
    network: Network | None
    log: Callable[[str], None]


def _load_source(opts: dict[str, Any], key: str, sha_key: str, fetch: _Fetch, what: str) -> tuple[bytes, str]:
    """The bytes of a source option (checked against the policy, downloaded and verified as needed) and its name."""
    source = opts[key]
    path = fetch_source(source, opts.get(sha_key), cache_dir=fetch.cache_dir, what=what, policy=fetch.policy,
                        network=fetch.network, field=f"config.dataset_options.{key}", log=fetch.log)
    return _read_bytes(path, what, source), source


# --- mnist ---------------------------------------------------------------------------------------------------------

def parse_idx_images(data: bytes, name: str) -> np.ndarray:
    """The (N, 28, 28) uint8 images of an IDX images file; RecipeError naming the file when malformed."""
    if len(data) < 16:
        raise RecipeError(f"{name}: truncated IDX header ({len(data)} bytes, expected at least 16)")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IDX_IMAGES_MAGIC:
        raise RecipeError(f"{name}: wrong magic number for an IDX images file (expected 0x{IDX_IMAGES_MAGIC:08x})")
    if (rows, cols) != (MNIST_SIDE, MNIST_SIDE):
        raise RecipeError(f"{name}: images are not {MNIST_SIDE}x{MNIST_SIDE}")
    if count == 0:
        raise RecipeError(f"{name}: the file holds no images")
    expected = 16 + count * rows * cols
    if len(data) != expected:
        raise RecipeError(f"{name}: the number of images in the header does not match the file's size "
                          f"({len(data)} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def parse_idx_labels(data: bytes, name: str) -> np.ndarray:
    """The (N,) uint8 labels of an IDX labels file; RecipeError naming the file when malformed."""
    if len(data) < 8:
        raise RecipeError(f"{name}: truncated IDX header ({len(data)} bytes, expected at least 8)")
    magic, count = struct.unpack(">II", data[:8])
    if magic != IDX_LABELS_MAGIC:
        raise RecipeError(f"{name}: wrong magic number for an IDX labels file (expected 0x{IDX_LABELS_MAGIC:08x})")
    if len(data) != 8 + count:
        raise RecipeError(f"{name}: the number of labels in the header does not match the file's size "
                          f"({len(data)} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def _mnist(opts: dict[str, Any], fetch: _Fetch) -> Loaded:
    """MNIST-format IDX images and labels as (N,1,28,28) floats in [0,1] and int64 classes."""
    image_bytes, image_name = _load_source(opts, "images", "images_sha256", fetch, "mnist images")
    label_bytes, label_name = _load_source(opts, "labels", "labels_sha256", fetch, "mnist labels")
    images = parse_idx_images(image_bytes, image_name)
    labels = parse_idx_labels(label_bytes, label_name)
    if len(images) != len(labels):
        raise RecipeError(f"count mismatch: {image_name} and {label_name} hold different numbers of samples")
    inputs = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    targets = torch.from_numpy(labels.astype(np.int64))
    n_classes = max(10, int(labels.max()) + 1)
    return inputs, targets, DataInfo("image", (1, MNIST_SIDE, MNIST_SIDE), n_classes)


# --- csv -----------------------------------------------------------------------------------------------------------

def _decode(data: bytes, name: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); RecipeError naming the file when not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{name}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def _csv(opts: dict[str, Any], fetch: _Fetch) -> Loaded:
    """Numeric feature columns (standardised) and a label column mapped to sorted class indices."""
    data, name = _load_source(opts, "source", "sha256", fetch, "csv")
    return parse_csv(data, name, opts["label_column"])


def parse_csv(data: bytes, name: str, label_column: str) -> Loaded:
    """CSV bytes as standardised features and class indices; messages name rows and columns, never a value."""
    reader = csv.reader(io.StringIO(_decode(data, name), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise RecipeError(f"{name}: the file is empty (a header row is needed)")
        header = [column.strip() for column in header]
        if label_column not in header:
            raise RecipeError(f"{name}: label column {label_column!r} is not one of the header's {len(header)} columns")
        label_at = header.index(label_column)
        feature_at = [i for i in range(len(header)) if i != label_at]
        if not feature_at:
            raise RecipeError(f"{name}: no feature columns besides the label column {label_column!r}")
        rows: list[list[float]] = []
        raw_labels: list[str] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            line = reader.line_num
            if len(row) != len(header):
                raise RecipeError(f"{name}: row {line} has {len(row)} cells but the header has {len(header)} columns")
            label = row[label_at].strip()
            if not label:
                raise RecipeError(f"{name}: row {line} has an empty label in column {label_column!r}")
            values: list[float] = []
            for i in feature_at:
                cell = row[i].strip()
                try:
                    value = float(cell)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise RecipeError(f"{name}: column {i + 1}, row {line}: the value is not a finite number")
                values.append(value)
            rows.append(values)
            raw_labels.append(label)
    except csv.Error:
        raise RecipeError(f"{name}: malformed CSV at row {reader.line_num}") from None
    if not rows:
        raise RecipeError(f"{name}: no data rows after the header")
    distinct = set(raw_labels)
    try:
        classes = sorted(distinct, key=int)
    except ValueError:
        classes = sorted(distinct)
    if len(classes) < 2:
        raise RecipeError(f"{name}: label column {label_column!r} has only one distinct value")
    index = {label: i for i, label in enumerate(classes)}
    features = np.asarray(rows, dtype=np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0)
    std[std == 0] = 1.0
    inputs = torch.from_numpy(((features - mean) / std).astype(np.float32))
    targets = torch.tensor([index[label] for label in raw_labels], dtype=torch.int64)
    return inputs, targets, DataInfo("vector", (len(feature_at),), len(classes))


# --- text ----------------------------------------------------------------------------------------------------------

def _text(opts: dict[str, Any], fetch: _Fetch) -> Loaded:
    """Non-overlapping windows of seq_len+1 tokens (characters, UTF-8 bytes or BPE tokens): inputs and next-token targets."""
    data, name = _load_source(opts, "source", "sha256", fetch, "text")
    text = _decode(data, name)
    seq_len = int(opts["seq_len"])
    tokenizer: Tokenizer
    ids: np.ndarray[Any, Any]
    if opts["tokenizer"] == "byte":
        tokenizer = ByteTokenizer()
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    elif opts["tokenizer"] == "bpe":
        if not opts.get("tokenizer_file"):
            raise RecipeError("text: option 'tokenizer_file' is required when tokenizer is bpe")
        raw, file_name = _load_source(opts, "tokenizer_file", "tokenizer_file_sha256", fetch, "text tokenizer")
        try:
            tokenizer = BpeTokenizer(_decode(raw, file_name))
        except TokenizerError as exc:
            raise RecipeError(f"{file_name}: {exc}") from None
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    else:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        points, ids = np.unique(codes, return_inverse=True)
        tokenizer = CharTokenizer(tuple(chr(int(p)) for p in points))
    if len(ids) < seq_len + 1:
        raise RecipeError(f"{name}: the text has {len(ids)} tokens, fewer than seq_len+1 = {seq_len + 1}")
    windows = len(ids) // (seq_len + 1)
    seqs = torch.from_numpy(ids[: windows * (seq_len + 1)].astype(np.int64).reshape(windows, seq_len + 1))
    vocab = tokenizer.vocab if isinstance(tokenizer, CharTokenizer) else None
    return (seqs[:, :-1].contiguous(), seqs[:, 1:].contiguous(),
            DataInfo("tokens", (seq_len,), tokenizer.vocab_size, vocab, tokenizer.spec()))


# --- npy -----------------------------------------------------------------------------------------------------------

def _npy_array(data: bytes, name: str) -> np.ndarray:
    """A .npy file's array, read without pickle; RecipeError naming the file when it is not one."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise RecipeError(f"{name}: not a NumPy .npy array (object arrays are refused)") from None
    if not isinstance(array, np.ndarray):
        raise RecipeError(f"{name}: not a NumPy .npy array")
    return array


def _npy(opts: dict[str, Any], fetch: _Fetch) -> Loaded:
    """(N, H, W) or (N, C, H, W) images (uint8 scaled to [0, 1]) and N whole-number labels."""
    image_bytes, image_name = _load_source(opts, "images", "images_sha256", fetch, "npy images")
    label_bytes, label_name = _load_source(opts, "labels", "labels_sha256", fetch, "npy labels")
    images, labels = _npy_array(image_bytes, image_name), _npy_array(label_bytes, label_name)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or min(images.shape) < 1:
        raise RecipeError(f"{image_name}: expected (N, H, W) or (N, C, H, W) images, got shape {images.shape}")
    if images.dtype.kind not in "uif" or labels.dtype.kind not in "ui" or labels.ndim != 1:
        raise RecipeError(f"{image_name}, {label_name}: expected numeric images and a 1-D array of whole-number labels")
    if len(images) != len(labels):
        raise RecipeError(f"count mismatch: {image_name} holds {len(images)} images, {label_name} {len(labels)} labels")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    inputs = torch.from_numpy(images.astype(np.float32) / scale)
    if not torch.isfinite(inputs).all():
        raise RecipeError(f"{image_name}: the images hold values that are not finite numbers")
    classes = int(labels.max()) + 1
    if int(labels.min()) < 0 or classes < 2:
        raise RecipeError(f"{label_name}: labels must be 0 or more, with at least 2 classes")
    shape = tuple(int(d) for d in inputs.shape[1:])
    return inputs, torch.from_numpy(labels.astype(np.int64)), DataInfo("image", shape, classes)


_LOADERS: dict[str, Callable[[dict[str, Any], _Fetch], Loaded]] = {
    "synthetic": _synthetic, "mnist": _mnist, "csv": _csv, "text": _text, "npy": _npy,
}
