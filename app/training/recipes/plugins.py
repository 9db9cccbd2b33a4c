"""Built-in recipes, or those a volunteer installed as `aifarm.recipes` entry points (worker side only).

An installed model is an entry point `model.NAME` resolving to `build(options, info) -> torch.nn.Module`;
an installed dataset is `dataset.NAME` resolving to
`load(options, *, cache_dir, validation_split, seed, want, log) -> (train, validation, DataInfo)`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from app.training.catalog import BUILTIN_DATASETS, BUILTIN_MODELS, ENTRY_POINT_GROUP
from app.training.recipes import RecipeError
from app.training.recipes import datasets as builtin_datasets
from app.training.recipes import models as builtin_models
from app.training.sources import SourcePolicy


def _installed(kind: str, name: str) -> Callable[..., Any]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == f"{kind}.{name}":
            try:
                loaded: Callable[..., Any] = ep.load()
                return loaded
            except Exception as exc:  # a broken plugin is the volunteer's to fix; say which
                raise RecipeError(f"installed {kind} recipe {name!r} ({ep.value}) failed to load: {exc}") from None
    raise RecipeError(f"unknown {kind} {name!r}: neither built in nor installed on this machine")


def build_model(name: str, options: dict[str, Any], info: Any) -> Any:
    """A built-in or installed model."""
    if name in BUILTIN_MODELS:
        return builtin_models.build_model(name, options, info)
    return _installed("model", name)(options, info)


def load_dataset(name: str, options: dict[str, Any], *, cache_dir: Path, validation_split: float, seed: int,
                 want: str | None, log: Callable[[str], None], policy: SourcePolicy) -> Any:
    """A built-in or installed dataset (built-in sources are checked against policy before anything is opened)."""
    if name in BUILTIN_DATASETS:
        return builtin_datasets.load_dataset(name, options, cache_dir=cache_dir, validation_split=validation_split,
                                             seed=seed, want=want, log=log, policy=policy)
    return _installed("dataset", name)(options, cache_dir=cache_dir, validation_split=validation_split, seed=seed,
                                       want=want, log=log)
