"""Property-based and schema-driven fuzzing of the task validator and of a real agent's dashboard API.

The validator is fed any JSON value and mutations of valid tasks; the live API gets hypothesis-made bodies,
hostile raw bodies, and schemathesis cases generated from its own OpenAPI description.
"""

from __future__ import annotations

import copy
import http.client
import json
import math
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ValidationError
from app.scheduling.validation import CONFIG_FIELDS, NAME, REQUIREMENTS, TaskSpec, validate_task
from app.training.catalog import Catalog
from app.training.sources import SourcePolicy
from tests.agent.harness import AgentProcess
from tests.training.e2e import add_dataset_host, sync, upgraded

pytestmark = pytest.mark.faults

CATALOG = Catalog.load()
POLICY = SourcePolicy(dirs=(Path("/srv"),), hosts=("files.lan",))  # the fuzz agent's dataset_dirs and farm hosts
SHA = "0123456789abcdef" * 4
DB_LEAKS = ("CHECK", "constraint", "IntegrityError", "OperationalError")
FUZZ_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

VALID_TASKS: list[dict[str, Any]] = [
    {"type": "training", "requirements": {"min_gpu_memory": 0, "min_cpu_cores": 1, "min_ram": 64}, "priority": 3,
     "config": {"name": "fuzz-mlp", "model": "mlp", "dataset": "synthetic", "batch_size": 16, "learning_rate": 0.01,
                "epochs": 1, "distributed": False, "n_clients": 1,
                "model_options": {"hidden": [8, 4], "dropout": 0.1},
                "dataset_options": {"kind": "vector", "samples": 64, "features": 4, "classes": 2}}},
    {"type": "training", "requirements": {}, "priority": 0,
     "config": {"name": "fuzz.cnn", "model": "cnn", "dataset": "mnist", "batch_size": 32, "learning_rate": 0.001,
                "epochs": 2, "distributed": True, "n_clients": 3, "optimizer": "sgd", "momentum": 0.5,
                "lr_schedule": "cosine", "checkpoint_interval": "30 s", "keep_checkpoints": 2, "max_steps": 100,
                "dataset_options": {"images": "https://files.lan/i.gz", "images_sha256": SHA,
                                    "labels": "https://files.lan/l.gz", "labels_sha256": SHA}}},
    {"config": {"name": "fuzz_lstm", "model": "char_lstm", "dataset": "text", "batch_size": 8, "learning_rate": 1,
                "epochs": 1, "distributed": False, "n_clients": 1, "validation_split": 0.2, "seed": 7,
                "model_options": {"embedding": 8, "hidden": 16, "layers": 2},
                "dataset_options": {"source": "/srv/corpus.txt", "seq_len": 16}}},
    {"type": "training", "priority": -1000,
     "config": {"name": "f", "model": "mlp", "dataset": "csv", "batch_size": 1, "learning_rate": 0.5, "epochs": 1,
                "distributed": True, "n_clients": 64, "optimizer": "adamw", "weight_decay": 0.01,
                "checkpoint_interval": 10, "max_attempts": 1,
                "dataset_options": {"source": "http://files.lan/d.csv", "sha256": SHA, "label_column": "y"}}},
]

# ----- strategies -----

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([0, 1, -1, 2**31, 2**63, -(2**63) - 1, 10**30, 65_536, 65_537, 10**9 + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 0.1, 1.0, 10.0])
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "\x00", "\ud800", "training", "mlp", "synthetic", "200 steps", "0 s", "5 min", "٣ steps",
                       "NaN", "<script>alert(1)</script>", "x" * 300, "a\n", "../../etc/passwd", "'; DROP TABLE tasks;--"])
)
KEYS = st.text(max_size=12) | st.sampled_from([*CONFIG_FIELDS, *REQUIREMENTS, "type", "config", "priority",
                                                "requirements", "hidden", "kind", "source", "sha256", "__proto__"])
JSON_VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=5)
                           | st.dictionaries(KEYS, children, max_size=6), max_leaves=25)

WRONG_TYPES: list[Any] = [None, True, False, 0, -1, 1.5, math.nan, math.inf, -math.inf, 10**30, "", "x", "1", [], [1],
                          {}, {"a": 1}]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (tuple of keys/indexes) to a node of a JSON value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def mutated_tasks(draw: st.DrawFn) -> Any:
    """A valid task with 1-4 mutations: a key dropped, a value replaced, or a key added, anywhere in it."""
    task: Any = copy.deepcopy(draw(st.sampled_from(VALID_TASKS)))
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(task)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["drop", "replace", "add", "wrong_type"]))
        if not path:
            if action in ("replace", "wrong_type"):
                task = draw(JSON_VALUES)
            continue
        parent = _parent(task, path)
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "wrong_type":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(WRONG_TYPES)))  # later mutations must not change the pool
        else:
            node = parent[path[-1]]
            if isinstance(node, dict):
                node[draw(KEYS)] = draw(JSON_VALUES)
            elif isinstance(node, list):
                node.append(draw(JSON_VALUES))
    return task


ANY_BODY = JSON_VALUES | mutated_tasks() | st.sampled_from(VALID_TASKS)


# ----- the validator alone -----


def _check_outcome(data: Any) -> TaskSpec | ValidationError:
    """validate_task's result or its ValidationError; any other exception fails the test."""
    try:
        spec = validate_task(data, CATALOG, POLICY)
    except ValidationError as exc:
        assert str(exc), "a ValidationError without a message"
        assert isinstance(exc.fields, dict) and exc.fields, f"no fields named for {data!r}: {exc}"
        assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in exc.fields.items())
        return exc
    assert isinstance(spec, TaskSpec)
    json.dumps(spec.config, allow_nan=False)  # storable as strict JSON: no NaN or infinity slipped through
    json.dumps(spec.requirements, allow_nan=False)
    assert NAME.match(spec.config["name"])
    assert spec.type == "training" and -1000 <= spec.priority <= 1000
    assert 1 <= spec.config["n_clients"] <= 64 and spec.config["model"] in CATALOG.models
    assert all(isinstance(v, int) and 0 <= v <= 10**9 for v in spec.requirements.values())
    return spec


def test_valid_base_tasks_pass() -> None:
    """The fuzzers' starting points are valid (so their mutations test more than the first check)."""
    for task in VALID_TASKS:
        assert isinstance(_check_outcome(task), TaskSpec), task


@FUZZ_SETTINGS
@given(JSON_VALUES)
def test_validator_any_json_value(data: Any) -> None:
    """Any JSON value: a TaskSpec or a ValidationError with a message and fields, never another exception."""
    _check_outcome(data)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutated_tasks())
def test_validator_mutated_valid_tasks(data: Any) -> None:
    """Valid tasks with keys dropped, replaced, added or given wrong types: same contract."""
    _check_outcome(data)


def test_validator_every_field_with_every_wrong_type() -> None:
    """Each top-level, requirement, config and recipe-option field replaced by each odd value."""
    for base in VALID_TASKS:
        for path in _paths(base)[1:]:
            for value in WRONG_TYPES:
                data = copy.deepcopy(base)
                _parent(data, path)[path[-1]] = value
                _check_outcome(data)


# ----- the live API -----


class Api:
    """Raw HTTP to one agent's dashboard API (bodies and headers exactly as given)."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        parsed = urllib.parse.urlsplit(agent.url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.token = agent.api_token

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             auth: bool = True) -> tuple[int, dict[str, str], str]:
        """One request; returns (status, headers, body text)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = {"Content-Type": "application/json"} if body is not None else {}
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
        finally:
            conn.close()


def never_window() -> str:
    """A donation schedule window that does not include today or the next two days (no claiming during the tests)."""
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(datetime.now() + timedelta(days=3)).weekday()]
    return f"{day} 00:00-00:01"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One paused agent (outside its schedule too, so fuzzed tasks are never trained) on an upgraded SQLite file."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    sync(upgraded(url))
    sync(add_dataset_host(url, "files.lan"))
    agent = AgentProcess(tmp, "agent", "--database-url", url,
                         env={"AIFARM_PAUSED": "true", "AIFARM_MDNS": "false", "AIFARM_SCHEDULE": never_window(),
                              "AIFARM_PEER_HOST": "127.0.0.1", "AIFARM_DATASET_DIRS": "/srv"})
    try:
        yield Api(agent)
    finally:
        agent.stop()


def _assert_client_error(status: int, text: str, what: Any) -> dict[str, Any]:
    """A 4xx with the error envelope, and no database error text in it."""
    assert 400 <= status < 500, f"HTTP {status} for {what!r}: {text[:500]}"
    body = json.loads(text)
    assert set(body) == {"error"} and {"code", "message", "fields"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["fields"], dict)
    for leak in DB_LEAKS:
        assert leak not in text, f"the database refused {what!r}: {text[:500]}"
    return body


@FUZZ_SETTINGS
@given(ANY_BODY)
def test_api_post_tasks_never_5xx(api: Api, data: Any) -> None:
    """POST /api/v1/tasks with any JSON body: 201 whose row reads back, or a 4xx error envelope; never 5xx."""
    status, _, text = api.call("POST", "/api/v1/tasks", json.dumps(data).encode())
    if status == 201:
        row = json.loads(text)
        spec = validate_task(data, CATALOG, POLICY)
        back_status, _, back = api.call("GET", f"/api/v1/tasks/{row['id']}")
        assert back_status == 200, back
        stored = json.loads(back)
        assert stored["id"] == row["id"] and stored["status"] == "pending"
        assert stored["config"] == spec.config and stored["requirements"] == spec.requirements
        assert stored["priority"] == spec.priority and stored["type"] == spec.type
        return
    body = _assert_client_error(status, text, data)
    assert status == 400 and body["error"]["code"] == "invalid" and body["error"]["fields"], body


RAW_BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("empty", b"", {}),
    ("not json", b"{not json", {}),
    ("bare NaN", b"NaN", {}),
    ("NaN learning rate", json.dumps({**VALID_TASKS[2], "config": {**VALID_TASKS[2]["config"],
                                                                   "learning_rate": math.nan}}).encode(), {}),
    ("invalid utf-8", b'{"config": "\xff\xfe"}', {}),
    ("lone surrogate", b'{"config": {"name": "\\ud800"}}', {}),
    ("5000-digit integer", b'{"priority": ' + b"1" * 5000 + b"}", {}),
    ("100000-deep nesting", b"[" * 100_000 + b"]" * 100_000, {}),
    ("unknown charset", b"{}", {"Content-Type": "application/json; charset=no-such-codec"}),
    ("utf-16 charset", json.dumps(VALID_TASKS[0]).encode("utf-16"), {"Content-Type": "application/json; charset=utf-16"}),
    ("form content type", b"config=1", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("2 MiB body", b'{"config": "' + b"a" * (2 << 20) + b'"}', {}),
]


@pytest.mark.parametrize("name,body,headers", RAW_BODIES, ids=[r[0] for r in RAW_BODIES])
def test_api_hostile_raw_bodies_are_client_errors(api: Api, name: str, body: bytes, headers: dict[str, str]) -> None:
    """Bodies no JSON encoder would make (deep nesting, huge numbers, bad encodings, oversize): a 4xx, never 5xx."""
    status, _, text = api.call("POST", "/api/v1/tasks", body, headers)
    if name == "utf-16 charset" and status == 201:
        return  # a valid task in a declared charset may be accepted
    _assert_client_error(status, text, name)
    for path in ("/api/v1/pause", "/api/v1/tasks/1/priority"):
        status, _, text = api.call("POST", path, body, headers)
        assert status < 500, (name, path, status, text[:500])
        if status >= 400:
            _assert_client_error(status, text, f"{name} to {path}")


def test_openapi_description_is_valid(api: Api) -> None:
    """The served description validates as OpenAPI 3.1 and names every API route (events included)."""
    from openapi_spec_validator import validate

    status, _, text = api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    spec = json.loads(text)
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert {"/api/v1/tasks", "/api/v1/tasks/{task_id}", "/api/v1/events", "/api/v1/pause", "/api/v1/prefs/reload",
            "/api/v1/shutdown", "/api/v1/login-link"} <= set(spec["paths"])


def test_schemathesis_finds_no_server_error(api: Api) -> None:
    """Schemathesis, 20 positive and 20 negative cases per operation but the event stream and shutdown: no 5xx; for
    valid requests no undocumented status and an answer that fits its documented model."""
    import schemathesis
    from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
    from schemathesis.generation import GenerationMode

    headers = {"Authorization": f"Bearer {api.token}"}
    base = api.agent.url.rstrip("/")
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", headers=headers, timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path not in ("/api/v1/events", "/api/v1/shutdown")]  # shutdown stops it
    assert len(operations) >= 19  # schemathesis leaves out the document's own URL
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                      database=None)
            @given(strategy)
            def run(case: Any) -> None:
                response = case.call(base_url=base, headers=headers, timeout=30)
                positive = mode is GenerationMode.POSITIVE  # noqa: B023  (run() is called within this iteration)
                checks = [not_a_server_error] + ([status_code_conformance, response_schema_conformance] if positive else [])
                case.validate_response(response, checks=checks)

            try:
                run()
            except Exception as exc:  # collect every operation's failure, then report them together
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
