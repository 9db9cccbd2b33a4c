"""The task validator on its own, behind service.submit on both backends, and through the real CLI and API."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db.engine import Database, create_database
from app.db.queries import dataset_hosts as dataset_host_queries
from app.db.schema import task_logs as task_logs_table
from app.db.schema import tasks as tasks_table
from app.errors import ValidationError
from app.scheduling import service
from app.scheduling.validation import MAX_N_CLIENTS, TaskSpec, parse_interval, validate_task
from app.training.catalog import Catalog
from app.training.sources import SourcePolicy
from tests.agent.harness import AgentProcess, agent_env

CATALOG = Catalog.load()
POLICY = SourcePolicy(dirs=(Path("/d"), Path("/data")), hosts=("example.org",))  # what the tables' sources need
SHA = "0123456789abcdef" * 4
BASE_CONFIG: dict[str, Any] = {
    "name": "demo",
    "model": "mlp",
    "dataset": "synthetic",
    "batch_size": 32,
    "learning_rate": 0.01,
    "epochs": 2,
    "distributed": False,
    "n_clients": 1,
}
MNIST_URLS = {"images": "https://example.org/train-images.gz", "labels": "https://example.org/train-labels.gz"}


def task(config: dict[str, Any] | None = None, *, drop: tuple[str, ...] = (), **top: Any) -> dict[str, Any]:
    """A task built from the valid base config, with config keys overridden or dropped and top-level keys set."""
    cfg = {**BASE_CONFIG, **(config or {})}
    for key in drop:
        del cfg[key]
    return {"type": "training", "requirements": {}, "config": cfg, "priority": 0, **top}


def case(case_id: str, data: Any, expected: dict[str, str]) -> Any:
    """One invalid submission with the exact field paths it must report and a fragment of each message."""
    return pytest.param(data, expected, id=case_id)


INVALID = [
    case("not-an-object-list", [task()], {"task": "must be a JSON object"}),
    case("not-an-object-text", "train an mlp please", {"task": "must be a JSON object"}),
    case("not-an-object-null", None, {"task": "must be a JSON object"}),
    case("unknown-top-level-field", task(colour="red"), {"colour": "unknown field"}),
    case("unknown-type", task(type="inference"), {"type": "must be one of training"}),
    case("config-not-an-object", {"config": ["mlp"]}, {"config": "must be an object"}),
    case("config-missing", {"type": "training"}, {"config": "must be an object"}),
    case("unknown-config-field", task({"lr": 0.1}), {"config.lr": "unknown field"}),
    case("unknown-requirement", task(requirements={"min_gpus": 1}), {"requirements.min_gpus": "unknown field"}),
    case("requirements-not-an-object", task(requirements=[8192]), {"requirements": "must be an object"}),
    case("missing-name", task(drop=("name",)), {"config.name": "is required"}),
    case("missing-model", task(drop=("model",)), {"config.model": "is required"}),
    case("missing-dataset", task(drop=("dataset",)), {"config.dataset": "is required"}),
    case("missing-learning-rate", task(drop=("learning_rate",)), {"config.learning_rate": "is required"}),
    case("missing-distributed", task(drop=("distributed",)), {"config.distributed": "is required"}),
    case("missing-n-clients", task(drop=("n_clients",)), {"config.n_clients": "is required"}),
    case("batch-size-text", task({"batch_size": "32"}), {"config.batch_size": "must be a whole number"}),
    case("sync-unknown", task({"sync": "async"}), {"config.sync": "must be one of auto, ddp, diloco"}),
    case("inner-steps-zero", task({"sync": "diloco", "inner_steps": 0}), {"config.inner_steps": "must be at least 1"}),
    case("outer-lr-zero", task({"outer_lr": 0}), {"config.outer_lr": "must be greater than 0"}),
    case("outer-momentum-one", task({"outer_momentum": 1.0}), {"config.outer_momentum": "must be at most 0.999"}),
    case("compression-unknown", task({"compression": "int4"}), {"config.compression": "must be one of none, fp16, int8"}),
    case("learning-rate-text", task({"learning_rate": "fast"}), {"config.learning_rate": "must be a number"}),
    case("distributed-text", task({"distributed": "yes"}), {"config.distributed": "must be true or false"}),
    case("epochs-fraction", task({"epochs": 1.5}), {"config.epochs": "must be a whole number"}),
    case("priority-bool", task(priority=True), {"priority": "must be a whole number"}),
    case("priority-too-high", task(priority=1001), {"priority": "must be between -1000 and 1000"}),
    case("n-clients-zero", task({"n_clients": 0}), {"config.n_clients": "must be at least 1"}),
    case("n-clients-65", task({"distributed": True, "n_clients": MAX_N_CLIENTS + 1}),
         {"config.n_clients": "must be at most 64"}),
    case("learning-rate-negative", task({"learning_rate": -0.01}), {"config.learning_rate": "must be greater than 0"}),
    case("learning-rate-zero", task({"learning_rate": 0}), {"config.learning_rate": "must be greater than 0"}),
    case("learning-rate-too-high", task({"learning_rate": 11}), {"config.learning_rate": "must be at most 10"}),
    case("batch-size-zero", task({"batch_size": 0}), {"config.batch_size": "must be at least 1"}),
    case("epochs-zero", task({"epochs": 0}), {"config.epochs": "must be at least 1"}),
    case("requirement-negative", task(requirements={"min_gpu_memory": -1}),
         {"requirements.min_gpu_memory": "must be between 0 and 1000000000"}),
    case("requirement-text", task(requirements={"min_cpu_cores": "4"}), {"requirements.min_cpu_cores": "must be a whole number"}),
    case("not-distributed-with-3-clients", task({"distributed": False, "n_clients": 3}),
         {"config.n_clients": "must be 1 when distributed is false"}),
    case("min-clients-text", task({"distributed": True, "n_clients": 3, "min_clients": "2"}),
         {"config.min_clients": "must be a whole number"}),
    case("min-clients-fraction", task({"distributed": True, "n_clients": 3, "min_clients": 1.5}),
         {"config.min_clients": "must be a whole number"}),
    case("min-clients-bool", task({"distributed": True, "n_clients": 3, "min_clients": True}),
         {"config.min_clients": "must be a whole number"}),
    case("min-clients-zero", task({"distributed": True, "n_clients": 3, "min_clients": 0}),
         {"config.min_clients": "must be at least 1"}),
    case("min-clients-above-n-clients", task({"distributed": True, "n_clients": 3, "min_clients": 4}),
         {"config.min_clients": "must be at most n_clients (3)"}),
    case("min-clients-above-a-single", task({"min_clients": 2}), {"config.min_clients": "must be at most n_clients (1)"}),
    case("unknown-model", task({"model": "resnet50"}), {"config.model": "unknown model 'resnet50'; available: "}),
    case("model-not-text", task({"model": 7}), {"config.model": "must be a text"}),
    case("unknown-dataset", task({"dataset": "imagenet"}), {"config.dataset": "unknown dataset 'imagenet'; available: "}),
    case("cnn-on-vector-synthetic", task({"model": "cnn"}),
         {"config.dataset": "model 'cnn' needs image data; dataset 'synthetic' gives vector"}),
    case("char-lstm-on-mnist", task({"model": "char_lstm", "dataset": "mnist",
                                     "dataset_options": {"images": "/d/i.idx", "labels": "/d/l.idx"}}),
         {"config.dataset": "model 'char_lstm' needs tokens data"}),
    case("synthetic-kind-unknown", task({"model": "cnn", "dataset_options": {"kind": "imag"}}),
         {"config.dataset_options.kind": "must be one of vector, image, tokens"}),
    case("mnist-urls-without-sha256", task({"dataset": "mnist", "dataset_options": MNIST_URLS}),
         {"config.dataset_options.images_sha256": "is required when images is a URL",
          "config.dataset_options.labels_sha256": "is required when labels is a URL"}),
    case("mnist-ftp-url", task({"dataset": "mnist", "dataset_options": {"images": "ftp://example.org/i.gz",
                                                                        "labels": "/data/labels.idx"}}),
         {"config.dataset_options.images": "only http:// and https:// URLs are supported"}),
    case("mnist-sha256-too-short", task({"dataset": "mnist", "dataset_options": {**MNIST_URLS, "images_sha256": "abc123",
                                                                                 "labels_sha256": SHA}}),
         {"config.dataset_options.images_sha256": "must be 64 hexadecimal characters"}),
    case("mnist-sha256-not-hex", task({"dataset": "mnist", "dataset_options": {**MNIST_URLS, "images_sha256": SHA,
                                                                               "labels_sha256": "g" * 64}}),
         {"config.dataset_options.labels_sha256": "must be 64 hexadecimal characters"}),
    case("mnist-images-missing", task({"dataset": "mnist", "dataset_options": {"labels": "/data/labels.idx"}}),
         {"config.dataset_options.images": "is required"}),
    case("csv-label-column-missing", task({"dataset": "csv", "dataset_options": {"source": "/data/iris.csv"}}),
         {"config.dataset_options.label_column": "is required"}),
    case("unknown-model-option", task({"model_options": {"depth": 3}}),
         {"config.model_options.depth": "unknown option of model 'mlp'"}),
    case("model-option-wrong-type", task({"model_options": {"hidden": "big"}}),
         {"config.model_options.hidden": "must be a list of 1 to 16 whole numbers"}),
    case("dataset-option-nan", task({"dataset_options": {"noise": float("nan")}}),
         {"config.dataset_options.noise": "must be finite"}),
    case("model-options-not-object", task({"model_options": [64]}), {"config.model_options": "must be an object"}),
    case("learning-rate-nan-from-json",
         json.loads(json.dumps(task()).replace('"learning_rate": 0.01', '"learning_rate": NaN')),
         {"config.learning_rate": "must be a number"}),
    case("learning-rate-infinity", task({"learning_rate": float("inf")}), {"config.learning_rate": "must be a number"}),
    case("learning-rate-minus-infinity", task({"learning_rate": float("-inf")}), {"config.learning_rate": "must be a number"}),
    case("name-with-space", task({"name": "my model"}), {"config.name": "must be 1-64 letters, digits"}),
    case("name-path-traversal", task({"name": "../x"}), {"config.name": "must be 1-64 letters, digits"}),
    case("name-trailing-newline", task({"name": "x\n"}), {"config.name": "must be 1-64 letters, digits"}),
    case("name-empty", task({"name": ""}), {"config.name": "must be 1-64 letters, digits"}),
    case("name-65-chars", task({"name": "a" * 65}), {"config.name": "must be 1-64 letters, digits"}),
    case("name-number", task({"name": 42}), {"config.name": "must be 1-64 letters, digits"}),
    case("checkpoint-interval-fortnights", task({"checkpoint_interval": "5 fortnights"}),
         {"config.checkpoint_interval": "'200 steps', '30 s' or '5 min'"}),
    case("checkpoint-interval-negative-part", task({"checkpoint_interval": "1h-5m"}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("checkpoint-interval-over-7-days", task({"checkpoint_interval": "7d1s"}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("checkpoint-interval-under-a-second", task({"checkpoint_interval": "500ms"}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("checkpoint-interval-text-number", task({"checkpoint_interval": "30"}),
         {"config.checkpoint_interval": "'200 steps', '30 s' or '5 min'"}),
    case("checkpoint-interval-huge-steps", task({"checkpoint_interval": "99999999999999999999 steps"}),
         {"config.checkpoint_interval": "1 to 1000000000 steps"}),
    case("checkpoint-interval-huge-number", task({"checkpoint_interval": 10**30}),
         {"config.checkpoint_interval": "1 to 1000000000 steps"}),
    case("checkpoint-interval-huge-minutes", task({"checkpoint_interval": "99999999 min"}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("checkpoint-interval-huge-seconds", task({"checkpoint_interval": "604801 s"}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("checkpoint-interval-arabic-digits", task({"checkpoint_interval": "\u0665\u0660 steps"}),
         {"config.checkpoint_interval": "1 to 1000000000 steps"}),
    case("checkpoint-interval-nan", task({"checkpoint_interval": float("nan")}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("checkpoint-interval-inf-seconds", task({"checkpoint_interval": "inf s"}),
         {"config.checkpoint_interval": "1 s to 10080 min"}),
    case("optimizer-unknown", task({"optimizer": "rmsprop"}), {"config.optimizer": "must be one of adam, adamw, sgd"}),
    case("many-problems-at-once", {
        "type": "training",
        "requirements": {"min_ram": -5, "gpus": 1},
        "config": {"name": "a b", "model": "vit", "batch_size": "32", "learning_rate": 0, "epochs": 1.5,
                   "distributed": "yes", "n_clients": 65, "colour": "red"},
        "priority": True,
        "extra": 1,
    }, {
        "extra": "unknown field",
        "requirements.gpus": "unknown field",
        "requirements.min_ram": "must be between 0 and",
        "priority": "must be a whole number",
        "config.colour": "unknown field",
        "config.name": "must be 1-64 letters",
        "config.model": "unknown model 'vit'",
        "config.dataset": "is required",
        "config.batch_size": "must be a whole number",
        "config.learning_rate": "must be greater than 0",
        "config.epochs": "must be a whole number",
        "config.distributed": "must be true or false",
        "config.n_clients": "must be at most 64",
    }),
]

VALID = [
    pytest.param(task(), id="base"),
    pytest.param(task({"model": "cnn", "dataset_options": {"kind": "image"}}), id="cnn-on-image-synthetic"),
    pytest.param(task({"model": "char_lstm", "dataset_options": {"kind": "tokens", "vocab": 64}}), id="lstm-on-tokens"),
    pytest.param(task({"model": "char_lstm", "dataset": "text", "dataset_options": {"source": "/data/corpus.txt"}}),
                 id="lstm-on-text-file"),
    pytest.param(task({"model": "cnn", "dataset": "mnist",
                       "dataset_options": {**MNIST_URLS, "images_sha256": SHA, "labels_sha256": SHA.upper()}}),
                 id="cnn-on-mnist-urls-with-sha256"),
    pytest.param(task({"dataset": "mnist", "dataset_options": {"images": "/d/i.idx.gz", "labels": "/d/l.idx.gz"}}),
                 id="mlp-on-mnist-files"),
    pytest.param(task({"dataset": "csv", "dataset_options": {"source": "http://example.org/iris.csv", "sha256": SHA,
                                                             "label_column": "species"}}), id="mlp-on-csv-url"),
    pytest.param(task({"distributed": True, "n_clients": MAX_N_CLIENTS}), id="64-clients"),
    pytest.param(task({"distributed": True, "n_clients": 3, "min_clients": 2}), id="elastic-2-to-3"),
    pytest.param(task({"distributed": True, "n_clients": 3, "min_clients": 1}), id="elastic-1-to-3"),
    pytest.param(task({"distributed": True, "n_clients": 3, "min_clients": 3}), id="min-clients-is-n-clients"),
    pytest.param(task({"distributed": True, "n_clients": 2, "sync": "diloco", "inner_steps": 50, "outer_lr": 1.0,
                       "outer_momentum": 0, "compression": "int8"}), id="diloco"),
    pytest.param(task({"name": "v1.2_final-run", "learning_rate": 10, "checkpoint_interval": "30 s"}), id="edges"),
    pytest.param(task({"name": "a" * 64, "learning_rate": 1, "checkpoint_interval": 50}), id="name-64-chars"),
    pytest.param(task(requirements={"min_gpu_memory": 8192, "min_cpu_cores": 4, "min_ram": 16384}, priority=-1000),
                 id="requirements-and-priority"),
    pytest.param({"config": dict(BASE_CONFIG)}, id="config-only"),
]


def test_valid_task_is_normalised_with_every_default() -> None:
    """The minimal config gets every default (config fields and catalog options); requirements default to 0."""
    data = {"config": dict(BASE_CONFIG)}
    original = copy.deepcopy(data)
    spec = validate_task(data, CATALOG, POLICY)
    assert data == original  # the input is not modified
    assert spec == TaskSpec(
        type="training",
        requirements={"min_gpu_memory": 0, "min_cpu_cores": 0, "min_ram": 0},
        config={
            **BASE_CONFIG,
            "min_clients": 1,
            "optimizer": "adam",
            "momentum": 0.9,
            "weight_decay": 0.0,
            "lr_schedule": "constant",
            "seed": 0,
            "validation_split": 0.1,
            "checkpoint_interval": "200 steps",
            "keep_checkpoints": 3,
            "max_steps": None,
            "max_attempts": None,
            "sync": "auto",
            "inner_steps": 100,
            "outer_lr": 0.7,
            "outer_momentum": 0.9,
            "compression": "fp16",
            "precision": "auto",
            "accumulate_steps": 1,
            "grad_clip": None,
            "warmup_steps": 0,
            "model_options": {"hidden": [128, 64], "dropout": 0.0},
            "dataset_options": {"kind": "vector", "samples": 2048, "features": 32, "classes": 4, "seq_len": 32,
                                "vocab": 32, "noise": 0.5, "seed": 0},
        },
        priority=0,
    )


def test_min_clients_defaults_to_n_clients() -> None:
    """A task without min_clients is a fixed group: min_clients is stored as n_clients (also when given as null)."""
    for given in ({}, {"min_clients": None}):
        spec = validate_task(task({"distributed": True, "n_clients": 3, **given}), CATALOG, POLICY)
        assert spec.config["min_clients"] == 3
    assert validate_task(task(), CATALOG, POLICY).config["min_clients"] == 1


def test_given_values_are_kept_and_options_merged_with_defaults() -> None:
    """Explicit values win over defaults; options not given are filled from the catalog."""
    spec = validate_task(task({"optimizer": "sgd", "seed": 7, "validation_split": 0.2, "checkpoint_interval": "5 min",
                               "keep_checkpoints": 1, "max_steps": 100, "model": "char_lstm",
                               "model_options": {"layers": 2}, "dataset_options": {"kind": "tokens", "vocab": 100}},
                              requirements={"min_ram": 2048}, priority=5), CATALOG, POLICY)
    assert spec.requirements == {"min_gpu_memory": 0, "min_cpu_cores": 0, "min_ram": 2048}
    assert spec.priority == 5
    assert {k: spec.config[k] for k in ("optimizer", "seed", "validation_split", "checkpoint_interval",
                                        "keep_checkpoints", "max_steps")} == {
        "optimizer": "sgd", "seed": 7, "validation_split": 0.2, "checkpoint_interval": "5 min",
        "keep_checkpoints": 1, "max_steps": 100}
    assert spec.config["model_options"] == {"embedding": 64, "hidden": 128, "layers": 2}
    assert spec.config["dataset_options"]["vocab"] == 100
    assert spec.config["dataset_options"]["kind"] == "tokens"
    assert spec.config["dataset_options"]["samples"] == 2048


@pytest.mark.parametrize(("text", "expected"), [
    ("200 steps", (200, "steps")), (50, (50, "steps")), ("1 step", (1, "steps")), ("30 s", (30.0, "seconds")),
    ("5 min", (300.0, "seconds")), ("1h30m", (5400.0, "seconds")), ("1.5h", (5400.0, "seconds")),
    ("2 minutes", (120.0, "seconds")), ("1d", (86400.0, "seconds")), ("7d", (604800.0, "seconds")),
    ("1500ms", (1.5, "seconds")), ("1h 30m 15s", (5415.0, "seconds")),
])
def test_checkpoint_interval_uses_the_duration_grammar(text: Any, expected: tuple[float, str]) -> None:
    """Time intervals take the settings' duration grammar (1 s to 7 days); steps stay steps."""
    assert parse_interval(text) == expected
    spec = validate_task(task({"checkpoint_interval": text}), CATALOG, POLICY)
    assert spec.config["checkpoint_interval"] == text


def test_mnist_without_urls_needs_no_sha256() -> None:
    """Local files need no checksum, and no sha256 key is invented for them."""
    spec = validate_task(task({"dataset": "mnist", "dataset_options": {"images": "/d/i", "labels": "/d/l"}}), CATALOG, POLICY)
    assert spec.config["dataset_options"] == {"images": "/d/i", "labels": "/d/l"}


@pytest.mark.parametrize("data", VALID)
def test_valid_variants_are_accepted(data: dict[str, Any]) -> None:
    """Each valid variant passes and keeps what it asked for."""
    spec = validate_task(copy.deepcopy(data), CATALOG, POLICY)
    for key, value in data["config"].items():
        if key.endswith("_options"):
            assert value.items() <= spec.config[key].items()
        else:
            assert spec.config[key] == value
    assert set(spec.requirements) == {"min_gpu_memory", "min_cpu_cores", "min_ram"}


@pytest.mark.parametrize("data, expected", INVALID)
def test_invalid_submission_names_exactly_its_fields(data: Any, expected: dict[str, str]) -> None:
    """ValidationError.fields holds exactly the expected paths, each message containing the expected fragment."""
    with pytest.raises(ValidationError) as info:
        validate_task(copy.deepcopy(data), CATALOG, POLICY)
    fields = info.value.fields
    assert set(fields) == set(expected), fields
    for path, fragment in expected.items():
        assert fragment in fields[path], (path, fields[path])
    message = str(info.value)
    for path in expected:
        assert path in message, message  # the one-line message names every field too


def test_table_is_large_enough() -> None:
    """The invalid table covers at least 20 submissions, and one of them has many problems at once."""
    assert len(INVALID) >= 20
    assert max(len(p.values[1]) for p in INVALID) >= 10


def test_several_problems_are_reported_together() -> None:
    """All problems come back in one error, counted in the message."""
    data = task({"batch_size": 0, "epochs": 0, "learning_rate": "fast"}, requirements={"min_ram": -1}, colour=1)
    with pytest.raises(ValidationError) as info:
        validate_task(data, CATALOG, POLICY)
    assert set(info.value.fields) == {"colour", "requirements.min_ram", "config.batch_size", "config.epochs",
                                      "config.learning_rate"}
    assert str(info.value).startswith("invalid task (5 problems): ")


# --- behind service.submit, on SQLite and MariaDB ----------------------------------------------------------------


async def row_counts(db: Database) -> tuple[int, int]:
    """(rows in tasks, rows in task_logs)."""
    async with db.connect() as conn:
        tasks = (await conn.execute(select(func.count()).select_from(tasks_table))).scalar_one()
        logs = (await conn.execute(select(func.count()).select_from(task_logs_table))).scalar_one()
    return int(tasks), int(logs)


async def test_valid_submission_inserts_one_pending_task_and_one_log(db: Database) -> None:
    """One pending task row with the normalised spec, and one 'submitted' log row for it."""
    assert await row_counts(db) == (0, 0)
    data = task({"name": "first"}, requirements={"min_gpu_memory": 1024}, priority=3)
    row = await service.submit(db, data, CATALOG, farm_name="default", dataset_dirs=POLICY.dirs)
    spec = validate_task(data, CATALOG, POLICY)
    assert await row_counts(db) == (1, 1)
    assert row["status"] == "pending"
    assert row["type"] == "training"
    assert row["priority"] == 3
    assert row["requirements"] == spec.requirements
    assert row["config"] == spec.config
    async with db.connect() as conn:
        log = (await conn.execute(select(task_logs_table))).one()
    assert log.task_id == row["id"]
    assert log.log_type == "info"
    assert log.message.startswith("submitted: first (mlp on synthetic, 1 client(s), priority 3)")

    second = await service.submit(db, task({"name": "second"}), CATALOG, farm_name="default", dataset_dirs=POLICY.dirs)
    assert second["id"] != row["id"]
    assert await row_counts(db) == (2, 2)


@pytest.mark.parametrize("data, expected", INVALID)
async def test_invalid_submission_writes_nothing(db: Database, data: Any, expected: dict[str, str]) -> None:
    """service.submit raises the same ValidationError and leaves tasks and task_logs as they were."""
    async with db.begin() as conn:
        await dataset_host_queries.add_host(conn, "default", "example.org")
    await service.submit(db, task({"name": "already-there"}), CATALOG, farm_name="default", dataset_dirs=POLICY.dirs)
    before = await row_counts(db)
    assert before == (1, 1)
    with pytest.raises(ValidationError) as info:
        await service.submit(db, copy.deepcopy(data), CATALOG, farm_name="default", dataset_dirs=POLICY.dirs)
    assert set(info.value.fields) == set(expected)
    assert await row_counts(db) == before


# --- through the CLI ---------------------------------------------------------------------------------------------


def aifarm(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m app ARGS --data-dir ...` as a child process with a clean environment."""
    return subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(tmp_path / "data")],
                          input=stdin, capture_output=True, text=True, env=agent_env(tmp_path), cwd=tmp_path,
                          timeout=120)


def assert_one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A non-zero exit with exactly one `aifarm: error:` line on stderr (containing every needle), nothing on stdout."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aifarm: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def cli_db(tmp_path: Path, sqlite_url: str) -> str:
    """An SQLite URL upgraded with `aifarm db upgrade`."""
    result = aifarm(tmp_path, "db", "upgrade", "--database-url", sqlite_url)
    assert result.returncode == 0, result.stderr
    return sqlite_url


async def cli_row_counts(url: str) -> tuple[int, int]:
    """(tasks, task_logs) rows in the database at url."""
    db = create_database(url)
    try:
        return await row_counts(db)
    finally:
        await db.dispose()


async def test_cli_submit_prints_the_id_and_json(tmp_path: Path, cli_db: str) -> None:
    """A valid file prints the new id; --json prints the whole task as stored."""
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task({"name": "from-cli"})))
    result = aifarm(tmp_path, "submit", str(path), "--database-url", cli_db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()
    first_id = int(result.stdout.strip())
    assert await cli_row_counts(cli_db) == (1, 1)

    result = aifarm(tmp_path, "submit", str(path), "--json", "--database-url", cli_db)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["id"] == first_id + 1
    assert shown["status"] == "pending"
    assert shown["type"] == "training"
    assert shown["priority"] == 0
    assert shown["requirements"] == {"min_gpu_memory": 0, "min_cpu_cores": 0, "min_ram": 0}
    assert shown["config"] == validate_task(task({"name": "from-cli"}), CATALOG, POLICY).config
    assert "created_at" in shown
    assert await cli_row_counts(cli_db) == (2, 2)


async def test_cli_submit_reads_standard_input(tmp_path: Path, cli_db: str) -> None:
    """`-` reads the task from stdin; an invalid one there is refused the same way."""
    result = aifarm(tmp_path, "submit", "-", "--database-url", cli_db, stdin=json.dumps(task({"name": "piped"})))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()
    assert await cli_row_counts(cli_db) == (1, 1)

    bad = aifarm(tmp_path, "submit", "-", "--database-url", cli_db, stdin=json.dumps(task({"epochs": 0})))
    assert_one_error_line(bad, "config.epochs: must be at least 1")
    assert await cli_row_counts(cli_db) == (1, 1)


async def test_cli_invalid_file_is_one_error_line_naming_every_field(tmp_path: Path, cli_db: str) -> None:
    """Exit 2, one `aifarm: error:` line naming each bad field, no traceback, nothing written."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(task({"batch_size": "32", "model": "vit"}, requirements={"min_ram": -1})))
    result = aifarm(tmp_path, "submit", str(path), "--database-url", cli_db)
    line = assert_one_error_line(result, "config.batch_size", "config.model", "requirements.min_ram",
                                 "3 problems")
    assert result.returncode == ValidationError.exit_code, line
    assert await cli_row_counts(cli_db) == (0, 0)


async def test_cli_min_clients_above_n_clients_is_one_error_line(tmp_path: Path, cli_db: str) -> None:
    """min_clients larger than n_clients is refused on one line naming the field; nothing is written."""
    path = tmp_path / "elastic.json"
    path.write_text(json.dumps(task({"distributed": True, "n_clients": 2, "min_clients": 3})))
    result = aifarm(tmp_path, "submit", str(path), "--database-url", cli_db)
    assert_one_error_line(result, "config.min_clients: must be at most n_clients (2)")
    assert await cli_row_counts(cli_db) == (0, 0)


async def test_cli_broken_json_names_line_and_column(tmp_path: Path, cli_db: str) -> None:
    """A file that is not JSON is refused with the file, the line and the column of the mistake."""
    path = tmp_path / "broken.json"
    path.write_text('{\n  "config": {\n    "name": "x",,\n  }\n}\n')
    result = aifarm(tmp_path, "submit", str(path), "--database-url", cli_db)
    assert_one_error_line(result, str(path), "not valid JSON", "line 3 column 17")
    stdin = aifarm(tmp_path, "submit", "-", "--database-url", cli_db, stdin="{\n\n  nope")
    assert_one_error_line(stdin, "standard input", "not valid JSON", "line 3 column 3")
    assert await cli_row_counts(cli_db) == (0, 0)


# --- through a running agent's API -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One real `aifarm run` on an upgraded SQLite database, shared by the API tests."""
    tmp_path = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{tmp_path / 'farm.sqlite3'}"
    result = aifarm(tmp_path, "db", "upgrade", "--database-url", url)
    assert result.returncode == 0, result.stderr
    process = AgentProcess(tmp_path, "agent", "--database-url", url)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()


def post(agent: AgentProcess, path: str, body: bytes, token: str | None) -> tuple[int, Any]:
    """POST a body as application/json (with the bearer token when given); (status, parsed JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(agent.url.rstrip("/") + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def total_tasks(agent: AgentProcess) -> int:
    """GET /api/v1/tasks's total."""
    return int(agent.api("/api/v1/tasks")["total"])


# A requirement no test machine meets, so that the agent never claims (and trains) the task it accepted.
UNCLAIMABLE = {"min_gpu_memory": 10**9}


def test_api_accepts_a_valid_task(agent: AgentProcess) -> None:
    """201 with the stored task; it is listed and explains why it waits."""
    before = total_tasks(agent)
    status, body = post(agent, "/api/v1/tasks", json.dumps(task({"name": "via-api"}, requirements=UNCLAIMABLE)).encode(),
                        agent.api_token)
    assert status == 201, body
    assert body["status"] == "pending"
    assert body["config"]["name"] == "via-api"
    assert body["config"]["optimizer"] == "adam"
    assert body["requirements"] == {"min_gpu_memory": 10**9, "min_cpu_cores": 0, "min_ram": 0}
    assert total_tasks(agent) == before + 1
    shown = agent.api(f"/api/v1/tasks/{body['id']}")
    assert shown["id"] == body["id"]
    assert shown["waiting_for"].startswith("no active client meets min_gpu_memory=1000000000 (largest: ")


@pytest.mark.parametrize("data, expected", [
    pytest.param(task({"batch_size": "32", "model": "cnn"}, colour=1),
                 {"colour": "unknown field", "config.batch_size": "must be a whole number",
                  "config.dataset": "model 'cnn' needs image data"}, id="several-fields"),
    pytest.param(task({"learning_rate": 0}), {"config.learning_rate": "must be greater than 0"}, id="learning-rate-0"),
    pytest.param([1, 2, 3], {"task": "must be a JSON object"}, id="not-an-object"),
])
def test_api_refuses_an_invalid_task(agent: AgentProcess, data: Any, expected: dict[str, str]) -> None:
    """400 with code 'invalid', a message and exactly the bad fields; no task added."""
    before = total_tasks(agent)
    status, body = post(agent, "/api/v1/tasks", json.dumps(data).encode(), agent.api_token)
    assert status == 400, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}
    assert error["code"] == "invalid"
    assert set(error["fields"]) == set(expected)
    for path, fragment in expected.items():
        assert fragment in error["fields"][path]
        assert path in error["message"]
    assert total_tasks(agent) == before


@pytest.mark.parametrize("body", [b"{\"config\": ", b"", b"\xff\xfe not text"], ids=["truncated", "empty", "binary"])
def test_api_refuses_a_body_that_is_not_json(agent: AgentProcess, body: bytes) -> None:
    """400 naming the body; no task added."""
    before = total_tasks(agent)
    status, answer = post(agent, "/api/v1/tasks", body, agent.api_token)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid"
    assert answer["error"]["fields"] == {"body": "not valid JSON"}
    assert total_tasks(agent) == before


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_api_refuses_a_valid_task_without_the_token(agent: AgentProcess, token: str | None) -> None:
    """401 even for a valid body, and nothing is inserted."""
    before = total_tasks(agent)
    status, answer = post(agent, "/api/v1/tasks", json.dumps(task(requirements=UNCLAIMABLE)).encode(), token)
    assert status == 401, answer
    assert answer["error"]["code"] == "unauthorized"
    assert total_tasks(agent) == before
