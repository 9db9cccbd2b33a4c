"""Built-in recipes, or those a volunteer installed as `aifarm.recipes` entry points (worker side only).

An installed model is an entry point `model.NAME` resolving to `build(options, info) -> torch.nn.Module`; it may
declare the input kind it is fed as an attribute of that callable, `build.input_kind = "image"` (one of
vector, image, tokens; vector when it declares none). An installed dataset is `dataset.NAME` resolving to
`load(options, *, cache_dir, validation_split, seed, want, log) -> (train, validation, DataInfo)`, where `want`
is the input kind of the task's model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from app.training.catalog import BUILTIN_DATASETS, BUILTIN_MODELS, DEFAULT_INPUT_KIND, ENTRY_POINT_GROUP, INPUT_KINDS
from app.training.recipes import RecipeError
from app.training.recipes import datasets as builtin_datasets
from app.training.recipes import models as builtin_models
from app.training.sources import SourcePolicy


@dataclass(frozen=True)
class ModelRecipe:
    """A model a worker can train: the input kind it is fed, how its loss is taken, and how it is built."""

    name: str
    input_kind: str
    per_position: bool
    build: Callable[[dict[str, Any], Any], Any]


def _installed(kind: str, name: str) -> Callable[..., Any]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == f"{kind}.{name}":
            try:
                loaded: Callable[..., Any] = ep.load()
                return loaded
            except Exception as exc:  # a broken plugin is the volunteer's to fix; say which
                raise RecipeError(f"installed {kind} recipe {name!r} ({ep.value}) failed to load: {exc}") from None
    raise RecipeError(f"unknown {kind} {name!r}: neither built in nor installed on this machine")


def model_recipe(name: str) -> ModelRecipe:
    """The built-in model as the catalog declares it, or the installed one as its build callable declares it."""
    recipe = BUILTIN_MODELS.get(name)
    if recipe is not None and recipe.input_kind is not None:
        return ModelRecipe(name, recipe.input_kind, recipe.per_position, partial(builtin_models.build_model, name))
    build = _installed("model", name)
    declared = getattr(build, "input_kind", DEFAULT_INPUT_KIND)
    if not isinstance(declared, str) or declared not in INPUT_KINDS:
        raise RecipeError(f"installed model {name!r} declares input kind {declared!r}; "
                          f"expected one of {', '.join(INPUT_KINDS)}")
    return ModelRecipe(name, declared, False, build)


def build_model(name: str, options: dict[str, Any], info: Any) -> Any:
    """A built-in or installed model."""
    return model_recipe(name).build(options, info)


def load_dataset(name: str, options: dict[str, Any], *, cache_dir: Path, validation_split: float, seed: int,
                 want: str | None, log: Callable[[str], None], policy: SourcePolicy,
                 published: Path | None = None) -> Any:
    """A built-in or installed dataset (built-in sources are checked against policy before anything is opened);
    a published dataset is read from the folder the agent fetched it into."""
    if name == "published":
        if published is None:
            raise RecipeError("a published dataset needs the folder its shards were fetched into")
        from app.training.recipes.published import load_published

        return load_published(options, published, validation_split=validation_split, seed=seed, want=want)
    if name in BUILTIN_DATASETS:
        return builtin_datasets.load_dataset(name, options, cache_dir=cache_dir, validation_split=validation_split,
                                             seed=seed, want=want, log=log, policy=policy)
    return _installed("dataset", name)(options, cache_dir=cache_dir, validation_split=validation_split, seed=seed,
                                       want=want, log=log)
