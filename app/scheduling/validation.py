"""The one task validator used by `aifarm submit`, POST /api/v1/tasks and the dashboard form.

It names every problem (as `field path: message`) and returns a normalised task; nothing is written
unless it passes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import parse_duration
from app.errors import ValidationError
from app.training.catalog import (
    BUILTIN_DATASETS,
    BUILTIN_MODELS,
    INPUT_KINDS,
    RESNET_DEPTHS,
    Catalog,
    Recipe,
    check_option,
)
from app.training.sources import SourcePolicy, source_problem

TASK_TYPES = ("training",)
MAX_N_CLIENTS = 64
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" would accept a trailing newline
INTERVAL_STEPS = re.compile(r"^\s*([0-9]{1,12})\s*steps?\s*$", re.ASCII)
BARE_NUMBER = re.compile(r"^\s*[0-9.]+\s*$", re.ASCII)
MAX_INTERVAL_STEPS = 1_000_000_000
MAX_INTERVAL_SECONDS = 7 * 86400

TOP_LEVEL = {"type", "requirements", "config", "priority"}
REQUIREMENTS = ("min_gpu_memory", "min_cpu_cores", "min_ram")
REQUIREMENT_MAX = 10**9
PRIORITY_RANGE = (-1000, 1000)
LOCAL_HASH_LIMIT = 256 << 20  # a published dataset's shards held here are hashed at submit up to this size


@dataclass(frozen=True)
class ConfigField:
    """A config field: type, bounds, default (None: required)."""

    kind: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


CONFIG_FIELDS: dict[str, ConfigField] = {
    "name": ConfigField("name", help="name of the model; the final model is registered under it"),
    "model": ConfigField("model", help="a model recipe"),
    "dataset": ConfigField("dataset", help="a dataset recipe"),
    "batch_size": ConfigField("int", None, 1, 65_536, help="samples per step on each rank"),
    "learning_rate": ConfigField("float", None, 0, 10, help="optimizer step size (> 0)"),
    "epochs": ConfigField("int", None, 1, 100_000, help="passes over the training split"),
    "distributed": ConfigField("bool", help="train on several clients at once"),
    "n_clients": ConfigField("int", None, 1, MAX_N_CLIENTS, help="clients (ranks) of a distributed task"),
    "min_clients": ConfigField("optional_int", None, 1, MAX_N_CLIENTS,
                               help="elastic: the fewest clients the group trains with (1..n_clients; absent: "
                                    "n_clients, a fixed group)"),
    "optimizer": ConfigField("str", "adam", choices=("adam", "adamw", "sgd"), help="optimizer"),
    "momentum": ConfigField("float", 0.9, 0, 0.999, help="SGD momentum"),
    "weight_decay": ConfigField("float", 0.0, 0, 1, help="weight decay"),
    "lr_schedule": ConfigField("str", "constant", choices=("constant", "cosine", "step"), help="learning-rate schedule"),
    "seed": ConfigField("int", 0, 0, 2**31 - 1, help="seed of initialisation and shuffling"),
    "validation_split": ConfigField("float", 0.1, 0.01, 0.5, help="share of the data held out for validation"),
    "checkpoint_interval": ConfigField("interval", "200 steps", help="'N steps' or a duration such as '30 s' or '1h30m'"),
    "keep_checkpoints": ConfigField("int", 3, 1, 100, help="regular checkpoints kept per task"),
    "max_steps": ConfigField("optional_int", None, 1, 10**9, help="stop after this many steps (optional)"),
    "max_attempts": ConfigField("optional_int", None, 1, 100, help="failed attempts before the task fails"),
    "sync": ConfigField("str", "auto", choices=("auto", "ddp", "diloco"),
                        help="gradients every step (ddp), H local steps then averaged updates (diloco), or chosen "
                             "from the measured links when the group forms (auto)"),
    "inner_steps": ConfigField("int", 100, 1, 100_000, help="diloco: local steps between two exchanges (H)"),
    "outer_lr": ConfigField("float", 0.7, 0, 10, help="diloco: the outer Nesterov SGD's learning rate (> 0)"),
    "outer_momentum": ConfigField("float", 0.9, 0, 0.999, help="diloco: the outer Nesterov SGD's momentum"),
    "compression": ConfigField("str", "fp16", choices=("none", "fp16", "int8"),
                               help="diloco: how the averaged updates travel (int8: per-block scales)"),
    "precision": ConfigField("str", "auto", choices=("auto", "fp32", "bf16", "fp16"),
                             help="auto: bf16 on GPUs that have it, fp16 on other GPUs, fp32 on the CPU"),
    "accumulate_steps": ConfigField("int", 1, 1, 1024, help="batches whose gradients are summed per optimizer step"),
    "grad_clip": ConfigField("optional_float", None, 0, 1e6, help="clip the gradients' total norm to this (> 0)"),
    "warmup_steps": ConfigField("int", 0, 0, 10**9, help="steps of linear learning-rate warm-up before the schedule"),
    "model_options": ConfigField("options", {}, help="options of the model recipe"),
    "dataset_options": ConfigField("options", {}, help="options of the dataset recipe"),
}
REQUIRED_CONFIG = ("name", "model", "dataset", "batch_size", "learning_rate", "epochs", "distributed", "n_clients")


@dataclass(frozen=True)
class BundleChoice:
    """A published bundle version a task may name: its NAME==VERSION and the recipes it brings."""

    ref: str
    models: frozenset[str]
    datasets: frozenset[str]


BundleLookup = dict[str, "BundleChoice | str"]  # the ref as given -> the version chosen, or why none


@dataclass(frozen=True)
class TaskSpec:
    """A validated task, ready to insert."""

    type: str
    requirements: dict[str, int]
    config: dict[str, Any]
    priority: int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (not isinstance(value, float) or math.isfinite(value)))


def parse_interval(value: Any) -> tuple[float, str] | None:
    """(count, 'steps') from 200 or '200 steps', else (seconds, 'seconds') from a duration such as '30s' or '1h30m'."""
    if _is_int(value):
        return (value, "steps") if 0 < value <= MAX_INTERVAL_STEPS else None
    if not isinstance(value, str):
        return None
    match = INTERVAL_STEPS.match(value)
    if match:
        count = int(match.group(1))
        return (count, "steps") if 0 < count <= MAX_INTERVAL_STEPS else None
    if BARE_NUMBER.match(value):
        return None  # a number in a text is ambiguous here: a JSON number counts steps
    try:
        return (parse_duration(value, 1.0, MAX_INTERVAL_SECONDS), "seconds")
    except ValueError:
        return None


def _check_field(name: str, spec: ConfigField, value: Any) -> str | None:
    if spec.kind == "name":
        if not isinstance(value, str) or not NAME.match(value):
            return "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif spec.kind in ("int", "optional_int"):
        if spec.kind == "optional_int" and value is None:
            return None
        if not _is_int(value):
            return "must be a whole number"
        if spec.minimum is not None and value < spec.minimum:
            return f"must be at least {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return f"must be at most {spec.maximum:g}"
    elif spec.kind in ("float", "optional_float"):
        if spec.kind == "optional_float" and value is None:
            return None
        if not _is_number(value):
            return "must be a number"
        if name in ("learning_rate", "outer_lr", "grad_clip") and value <= 0:
            return "must be greater than 0"
        if spec.minimum is not None and value < spec.minimum:
            return f"must be at least {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return f"must be at most {spec.maximum:g}"
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            return "must be true or false"
    elif spec.kind == "str":
        if not isinstance(value, str) or value not in spec.choices:
            return f"must be one of {', '.join(spec.choices)}"
    elif spec.kind == "interval":
        if parse_interval(value) is None:
            return (f"must be a number of steps or a text such as '200 steps', '30 s' or '5 min' (or 1h30m, 1.5h, 1d) "
                    f"(1 to {MAX_INTERVAL_STEPS} steps, or 1 s to {MAX_INTERVAL_SECONDS // 60} min)")
    elif spec.kind == "options":
        if not isinstance(value, dict):
            return "must be an object"
    return None


def validate_task(data: Any, catalog: Catalog, sources: SourcePolicy | None = None,
                  bundles: BundleLookup | None = None) -> TaskSpec:
    """A normalised TaskSpec, or ValidationError naming every problem (field path -> message).

    Dataset sources must be allowed by `sources`: URLs on the farm's dataset hosts, local paths inside the
    submitting machine's dataset_dirs (the default allows neither).
    """
    problems: dict[str, str] = {}
    if not isinstance(data, dict):
        raise ValidationError("a task must be a JSON object with type, requirements, config and priority",
                              {"task": "must be a JSON object"})
    for key in sorted(set(data) - TOP_LEVEL):
        problems[key] = "unknown field"

    task_type = data.get("type", "training")
    if task_type not in TASK_TYPES:
        problems["type"] = f"must be one of {', '.join(TASK_TYPES)}"

    requirements: dict[str, int] = {}
    raw_req = data.get("requirements", {})
    if not isinstance(raw_req, dict):
        problems["requirements"] = "must be an object with min_gpu_memory, min_cpu_cores and min_ram"
    else:
        for key in sorted(set(raw_req) - set(REQUIREMENTS)):
            problems[f"requirements.{key}"] = "unknown field"
        for key in REQUIREMENTS:
            value = raw_req.get(key, 0)
            if not _is_int(value):
                problems[f"requirements.{key}"] = "must be a whole number"
            elif not 0 <= value <= REQUIREMENT_MAX:
                problems[f"requirements.{key}"] = f"must be between 0 and {REQUIREMENT_MAX}"
            else:
                requirements[key] = value

    priority = data.get("priority", 0)
    if not _is_int(priority):
        problems["priority"] = "must be a whole number"
    elif not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        problems["priority"] = f"must be between {PRIORITY_RANGE[0]} and {PRIORITY_RANGE[1]}"

    raw_config = data.get("config")
    bundle = _bundle(raw_config, bundles or {}, problems)
    if bundle is not None:
        catalog = with_bundle(catalog, bundle)
    config = _validate_config(raw_config, catalog, problems, sources or SourcePolicy())
    if bundle is not None:
        config["bundle"] = bundle.ref
    if problems:
        listed = "; ".join(f"{path}: {message}" for path, message in problems.items())
        count = len(problems)
        raise ValidationError(f"invalid task ({count} problem{'s' if count > 1 else ''}): {listed}", problems)
    return TaskSpec(task_type, requirements, config, priority)


def _bundle(raw: Any, bundles: BundleLookup, problems: dict[str, str]) -> BundleChoice | None:
    """The bundle a config names (None when it names none or it is refused, with the problem noted)."""
    if not isinstance(raw, dict) or "bundle" not in raw:
        return None
    found = bundles.get(raw["bundle"]) if isinstance(raw["bundle"], str) else None
    if isinstance(found, BundleChoice):
        return found
    problems["config.bundle"] = found or "must be a published bundle: NAME or NAME==VERSION"
    return None


def with_bundle(catalog: Catalog, bundle: BundleChoice) -> Catalog:
    """The built-in recipes and those the bundle brings (a bundle task runs in the bundle's own environment)."""
    def recipe(name: str, kind: str) -> Recipe:
        return Recipe(name, kind, frozenset(INPUT_KINDS), {}, f"from bundle {bundle.ref}", builtin=False)

    return Catalog({**BUILTIN_MODELS, **{m: recipe(m, "model") for m in bundle.models}},
                   {**BUILTIN_DATASETS, **{d: recipe(d, "dataset") for d in bundle.datasets}})


def _validate_config(raw: Any, catalog: Catalog, problems: dict[str, str], sources: SourcePolicy) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems["config"] = "must be an object with name, model, dataset, batch_size, learning_rate, epochs, distributed and n_clients"
        return {}
    for key in sorted(set(raw) - set(CONFIG_FIELDS) - {"bundle"}):
        problems[f"config.{key}"] = "unknown field"
    config: dict[str, Any] = {}
    for name, spec in CONFIG_FIELDS.items():
        if name not in raw:
            if name in REQUIRED_CONFIG:
                problems[f"config.{name}"] = "is required"
            else:
                config[name] = spec.default
            continue
        error = _check_field(name, spec, raw[name])
        if error:
            problems[f"config.{name}"] = error
        else:
            config[name] = raw[name]

    model, dataset = config.get("model"), config.get("dataset")
    if "model" in raw and not isinstance(raw["model"], str):
        problems["config.model"] = "must be a text"
    elif isinstance(model, str) and model not in catalog.models:
        problems["config.model"] = f"unknown model {model!r}; available: {', '.join(sorted(catalog.models))}"
    if "dataset" in raw and not isinstance(raw["dataset"], str):
        problems["config.dataset"] = "must be a text"
    elif isinstance(dataset, str) and dataset not in catalog.datasets:
        problems["config.dataset"] = f"unknown dataset {dataset!r}; available: {', '.join(sorted(catalog.datasets))}"

    if config.get("distributed") is False and isinstance(config.get("n_clients"), int) and config["n_clients"] != 1:
        problems["config.n_clients"] = "must be 1 when distributed is false"
    _check_min_clients(config, problems)

    if isinstance(model, str) and model in catalog.models and isinstance(config.get("model_options"), dict):
        config["model_options"] = _validate_options("config.model_options", catalog.models[model],
                                                    config["model_options"], problems, sources)
    if isinstance(dataset, str) and dataset in catalog.datasets and isinstance(config.get("dataset_options"), dict):
        config["dataset_options"] = _validate_options("config.dataset_options", catalog.datasets[dataset],
                                                      config["dataset_options"], problems, sources)
        _check_data_fit(config, catalog, problems)
    return config


def _check_min_clients(config: dict[str, Any], problems: dict[str, str]) -> None:
    """min_clients defaults to n_clients (a fixed group) and may not exceed it."""
    largest = config.get("n_clients")
    if not _is_int(largest) or "config.min_clients" in problems:
        return
    smallest = config.get("min_clients")
    if smallest is None:
        config["min_clients"] = largest
    elif smallest > largest:
        problems["config.min_clients"] = f"must be at most n_clients ({largest})"


def _validate_options(path: str, recipe: Any, given: dict[str, Any], problems: dict[str, str],
                      sources: SourcePolicy) -> dict[str, Any]:
    if not recipe.builtin:
        return dict(given)  # an installed recipe validates its own options in the worker
    out: dict[str, Any] = {}
    for key in sorted(set(given) - set(recipe.options)):
        problems[f"{path}.{key}"] = f"unknown option of {recipe.kind} {recipe.name!r}"
    for key, option in recipe.options.items():
        if key not in given:
            if option.required:
                problems[f"{path}.{key}"] = "is required"
            elif option.default is not None:
                out[key] = option.default
            continue
        error = check_option(key, option, given[key])
        if error:
            problems[f"{path}.{key}"] = error
        else:
            out[key] = given[key]
    for key, option in recipe.options.items():
        if option.kind == "source" and isinstance(out.get(key), str):
            refused = source_problem(out[key], sources)
            if refused:
                problems[f"{path}.{key}"] = f"{out[key]} {refused}"
        if option.kind == "source" and isinstance(out.get(key), str) and "://" in out[key]:
            sha_key = "sha256" if key == "source" else f"{key}_sha256"
            if sha_key in recipe.options and sha_key not in out and f"{path}.{sha_key}" not in problems:
                problems[f"{path}.{sha_key}"] = f"is required when {key} is a URL"
    return out


def _check_data_fit(config: dict[str, Any], catalog: Catalog, problems: dict[str, str]) -> None:
    model_name, dataset_name = config.get("model"), config.get("dataset")
    if not isinstance(model_name, str) or not isinstance(dataset_name, str):
        return  # a model or dataset that is not a text is reported already (and cannot be a dict key)
    model, dataset = catalog.models.get(model_name), catalog.datasets.get(dataset_name)
    if model is None or dataset is None or not model.builtin or not dataset.builtin:
        return
    produced = set(dataset.data)
    if dataset.name == "synthetic":
        if "config.dataset_options.kind" in problems:
            return  # the kind itself is wrong: do not report a mismatch with the default it fell back to
        produced = {config["dataset_options"].get("kind", "vector")}
    if not produced & set(model.data):
        problems["config.dataset"] = (
            f"model {model.name!r} needs {' or '.join(sorted(model.data))} data; "
            f"dataset {dataset.name!r} gives {' or '.join(sorted(produced))}"
        )
    elif not any(key.startswith("config.model_options.") for key in problems):
        _check_model_options_fit(model.name, config, problems)


def _check_model_options_fit(model: str, config: dict[str, Any], problems: dict[str, str]) -> None:
    """Model options that do not fit each other or the data: heads and embedding, context and seq_len, depth."""
    options, data = config.get("model_options") or {}, config.get("dataset_options") or {}
    if model == "transformer":
        embedding, heads, context = options["embedding"], options["heads"], options["context"]
        if embedding % heads:
            problems["config.model_options.heads"] = f"must divide embedding ({embedding}); got {heads}"
        seq_len = data.get("seq_len")
        if isinstance(seq_len, int) and seq_len > context and "config.dataset_options.seq_len" not in problems:
            problems["config.model_options.context"] = (f"is {context}, shorter than the dataset's sequences "
                                                        f"(dataset_options.seq_len {seq_len})")
    elif model == "resnet" and options["depth"] not in RESNET_DEPTHS:
        problems["config.model_options.depth"] = f"must be one of {', '.join(map(str, RESNET_DEPTHS))}"
    if config.get("dataset") == "text" and data.get("tokenizer") == "bpe" and not data.get("tokenizer_file"):
        problems["config.dataset_options.tokenizer_file"] = "is required when tokenizer is bpe"


def published_problems(config: dict[str, Any], manifest: Any, catalog: Catalog,
                       local_folder: Path | None = None) -> dict[str, str]:
    """What keeps a task from running on its published dataset (field path -> message); {} when it fits.

    `manifest` is the stored manifest of the dataset the task names (None: no such dataset); `local_folder` is
    where this machine holds its shards, if it does (checked against the manifest).
    """
    from app.datasets.manifest import NAME as DATASET_NAME
    from app.datasets.manifest import ManifestError, parse_manifest, shard_ok
    from app.datasets.options import KIND_GIVES, fit_problem, wanted

    want = wanted(config)
    if want is None:
        return {}
    field = "config.dataset_options.name"
    shown = f"{want.name!r}" + (f" version {want.version}" if want.version is not None else "")
    if not DATASET_NAME.match(want.name):
        return {field: "must be a published dataset's name (letters, digits, '.', '_' or '-')"}
    if manifest is None:
        return {field: f"no published dataset {shown} (see `aifarm datasets list`)"}
    try:
        parsed = parse_manifest(manifest)
    except ManifestError as exc:
        return {field: f"dataset {shown}: its manifest does not match its shards: {exc}"}
    if local_folder is not None and local_folder.is_dir():
        check_hash = parsed.total_bytes <= LOCAL_HASH_LIMIT
        for shard in parsed.shards:
            path = local_folder / shard.name
            size_ok = path.is_file() and path.stat().st_size == shard.bytes
            if not size_ok or (check_hash and not shard_ok(local_folder, shard)):
                return {field: f"dataset {shown}: shard {shard.name} here does not match the manifest"}
    problem = fit_problem(parsed, want)
    if problem is not None:
        return {f"config.dataset_options.{problem[0]}": problem[1]}
    model = catalog.models.get(str(config.get("model")))
    gives = KIND_GIVES.get(parsed.kind, ())
    if model is not None and model.builtin and not set(gives) & set(model.data):
        return {"config.dataset": f"model {model.name!r} needs {' or '.join(sorted(model.data))} data; "
                                  f"dataset {shown} gives {' or '.join(gives)}"}
    return {}
