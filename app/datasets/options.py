"""What a task asks of a published dataset (`dataset: "published"` and its options), and whether it fits. Stdlib only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.datasets.manifest import Manifest

RECIPE = "published"
KIND_GIVES = {"tokens": ("tokens",), "images": ("image", "vector"), "csv": ("vector",)}


@dataclass(frozen=True)
class Wanted:
    """The published dataset a task names, and the options that depend on its data."""

    name: str
    version: int | None
    seq_len: int


def wanted(config: dict[str, Any]) -> Wanted | None:
    """The published dataset of a task's config, or None when it names another dataset recipe."""
    if config.get("dataset") != RECIPE:
        return None
    options = config.get("dataset_options") or {}
    version = options.get("version")
    return Wanted(str(options.get("name", "")), int(version) if isinstance(version, int) else None,
                  int(options.get("seq_len") or 0))


def fit_problem(manifest: Manifest, want: Wanted) -> tuple[str, str] | None:
    """(option, why) when the task's options do not fit the data, else None."""
    if manifest.kind == "tokens":
        longest = manifest.largest_shard_samples
        if want.seq_len + 1 > longest:
            return "seq_len", (f"{want.seq_len} does not fit dataset {manifest.name!r} v{manifest.version}: "
                               f"its largest shard holds {longest} tokens (a sequence needs seq_len + 1)")
    elif manifest.data_shards and sum(s.samples for s in manifest.data_shards) < 2:
        return "name", f"dataset {manifest.name!r} v{manifest.version} has fewer than 2 samples"
    return None
