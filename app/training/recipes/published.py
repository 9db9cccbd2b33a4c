"""A published dataset read from its local shards (fetched and verified by the agent), memory-mapped, never whole.

Token shards give windows of seq_len + 1 tokens (inputs and next-token targets) that do not cross shards; image
shards give (C, H, W) floats and their labels. The last windows or images are the validation split, at most
max_validation_samples of them. CSV shards are read like the csv dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.datasets.manifest import Manifest, ManifestError, parse_manifest
from app.training.recipes import DataError, RecipeError
from app.training.recipes.datasets import DataInfo, as_input_kind, parse_csv, split_dataset

MANIFEST_FILE = "manifest.json"


class TokenWindows:
    """Windows [start, start + seq_len] of memory-mapped token shards; indexing gives (inputs, targets) int64."""

    def __init__(self, shards: list[np.memmap], seq_len: int, first: int, count: int) -> None:
        self.shards = shards
        self.seq_len = seq_len
        per_shard = [max(0, (len(s) - 1) // seq_len) for s in shards]
        self.ends = np.cumsum(per_shard)
        self.first = first
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, slice):
            index = range(*index.indices(self.count))
        ids = np.asarray(index, dtype=np.int64).reshape(-1) + self.first
        which = np.searchsorted(self.ends, ids, side="right")
        starts = (ids - np.concatenate(([0], self.ends[:-1]))[which]) * self.seq_len
        rows = np.stack([np.asarray(self.shards[w][s:s + self.seq_len + 1], dtype=np.int64)
                         for w, s in zip(which.tolist(), starts.tolist(), strict=True)])
        tensor = torch.from_numpy(rows)
        return tensor[:, :-1].contiguous(), tensor[:, 1:].contiguous()


class ImageShards:
    """Images and labels of memory-mapped .npy shard pairs; indexing gives (float images, int64 labels)."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], first: int, count: int,
                 flatten: bool) -> None:
        self.images, self.labels = images, labels
        self.ends = np.cumsum([len(a) for a in images])
        self.first, self.count, self.flatten = first, count, flatten

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, slice):
            index = range(*index.indices(self.count))
        ids = np.asarray(index, dtype=np.int64).reshape(-1) + self.first
        which = np.searchsorted(self.ends, ids, side="right")
        local = ids - np.concatenate(([0], self.ends[:-1]))[which]
        pictures = np.stack([self.images[w][i] for w, i in zip(which.tolist(), local.tolist(), strict=True)])
        labels = np.array([self.labels[w][i] for w, i in zip(which.tolist(), local.tolist(), strict=True)], dtype=np.int64)
        scaled = pictures.astype(np.float32) / (255.0 if pictures.dtype == np.uint8 else 1.0)
        inputs = torch.from_numpy(scaled)
        if self.flatten:
            inputs = inputs.reshape(len(ids), -1)
        return inputs, torch.from_numpy(labels)


def _manifest(folder: Path) -> Manifest:
    try:
        return parse_manifest(json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise DataError(f"the published dataset's folder has no {MANIFEST_FILE} (not fetched?)") from None
    except (ValueError, ManifestError) as exc:
        raise RecipeError(f"the published dataset's manifest is malformed: {exc}") from None


def _split(total: int, validation_split: float, cap: int) -> tuple[int, int]:
    """(train count, validation count): the validation samples are the last ones."""
    if total < 2:
        raise RecipeError(f"the dataset has {total} sample(s); at least 2 are needed")
    n_val = min(max(1, round(total * validation_split)), cap, total - 1)
    return total - n_val, n_val


def load_published(options: dict[str, Any], folder: Path, *, validation_split: float, seed: int,
                   want: str | None) -> tuple[Any, Any, DataInfo]:
    """Train and validation sets over the shards in folder, as the model's input kind."""
    manifest = _manifest(folder)
    cap = int(options.get("max_validation_samples") or 2048)
    if manifest.kind == "tokens":
        seq_len = int(options.get("seq_len") or 128)
        shards = [np.memmap(folder / s.name, dtype=np.dtype(manifest.dtype).newbyteorder("<"), mode="r")
                  for s in manifest.data_shards]
        total = int(sum(max(0, (len(s) - 1) // seq_len) for s in shards))
        n_train, n_val = _split(total, validation_split, cap)
        vocab = manifest.tokenizer.vocab_size if manifest.tokenizer else int(max(int(s.max()) for s in shards) + 1)
        info = DataInfo("tokens", (seq_len,), vocab)
        return (TokenWindows(shards, seq_len, 0, n_train), TokenWindows(shards, seq_len, n_train, n_val), info)
    if manifest.kind == "images":
        labels_of = {s.index: s for s in manifest.shards if s.role == "labels"}
        images = [np.load(folder / s.name, mmap_mode="r", allow_pickle=False) for s in manifest.data_shards]
        labels = [np.load(folder / labels_of[s.index].name, mmap_mode="r", allow_pickle=False)
                  for s in manifest.data_shards]
        total = int(sum(len(a) for a in images))
        n_train, n_val = _split(total, validation_split, cap)
        flatten = want == "vector"
        shape = manifest.sample_shape
        info = DataInfo("vector", (int(np.prod(shape)),), manifest.classes) if flatten else \
            DataInfo("image", tuple(shape), manifest.classes)
        return (ImageShards(images, labels, 0, n_train, flatten), ImageShards(images, labels, n_train, n_val, flatten),
                info)
    header, rows = None, []
    for shard in manifest.data_shards:
        lines = (folder / shard.name).read_text(encoding="utf-8").splitlines(keepends=True)
        header = header or lines[0]
        rows += lines[1:]
    inputs, targets, info = parse_csv(("".join([header or ""] + rows)).encode(), manifest.name,
                                      str(options.get("label_column") or "label"))
    inputs, info = as_input_kind(inputs, info, want)
    train, validation = split_dataset(inputs, targets, validation_split, seed)
    return train, validation, info
