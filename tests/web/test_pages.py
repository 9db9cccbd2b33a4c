"""The dashboard's pages against a real agent process: content, empty states, escaping, forms, CSRF, downloads."""

from __future__ import annotations

import hashlib
import http.cookiejar
import importlib.metadata
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import insert, update

from app import __version__
from app.db.engine import create_database
from app.db.queries import clients as client_queries
from app.db.queries import logs as log_queries
from app.db.queries import metrics as metric_queries
from app.db.queries import models as model_queries
from app.db.queries import tasks as task_queries
from app.db.schema import checkpoints, task_assignments, tasks
from tests.agent.harness import AgentProcess
from tests.training.e2e import sync, upgraded

XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
LOG_XSS = "<script>alert('log')</script>"
OTHER_CLIENT = "gpu-box-0001"
NEVER = {"min_gpu_memory": 10**8, "min_cpu_cores": 1, "min_ram": 0}  # no machine meets it: nothing gets claimed
PAUSED = {"AIFARM_PAUSED": "true"}


def _own_farm() -> tuple[str, str]:
    """A farm name of its own, so that agents of other tests on this machine are not its peers."""
    return "--farm-name", f"web-{uuid.uuid4().hex[:10]}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Response:
    """What one request returned."""

    status: int
    headers: dict[str, str]
    body: str

    @property
    def location(self) -> str:
        """The redirect target."""
        return self.headers.get("Location", "")


@dataclass
class Browser:
    """A cookie-keeping HTTP client signed in to an agent's dashboard through a fresh one-time link."""

    agent: AgentProcess
    signed_in: bool = True
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        if self.signed_in:
            request = urllib.request.Request(self.agent.url.rstrip("/") + "/api/v1/login-link", data=b"", method="POST",
                                             headers={"Authorization": f"Bearer {self.agent.api_token}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                link = json.loads(response.read())["url"]
            assert self.request("GET", link).status == 303
            assert any(c.name == "aifarm_session" for c in self.jar)

    def request(self, method: str, url: str, form: dict[str, str] | None = None) -> Response:
        """One request; redirects are returned, not followed."""
        if not url.startswith("http"):
            url = self.agent.url.rstrip("/") + url
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(request, timeout=15) as response:
                answer = Response(response.status, dict(response.headers), response.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            answer = Response(exc.code, dict(exc.headers), exc.read().decode(errors="replace"))
        # Every answer, redirects and errors included, carries the CSP.
        assert "script-src 'self'" in answer.headers.get("Content-Security-Policy", ""), (method, url, answer.status)
        return answer

    def get(self, path: str) -> Response:
        """GET a page."""
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str]) -> Response:
        """POST a form."""
        return self.request("POST", path, form)

    def csrf(self, path: str = "/tasks/new") -> str:
        """The CSRF token from a page's hidden form field."""
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.get(path).body)
        assert match, f"no csrf_token field on {path}"
        return match.group(1)


@dataclass
class Farm:
    """A running agent on a seeded database, and what the seed put there."""

    agent: AgentProcess
    url: str
    ids: dict[str, int]
    browser: Browser


async def _run(url: str, fn: Any) -> Any:
    db = create_database(url)
    try:
        async with db.begin() as conn:
            return await fn(conn)
    finally:
        await db.dispose()


async def _seed(conn: Any) -> dict[str, int]:
    ids: dict[str, int] = {}
    await client_queries.upsert_client(
        conn, client_id=OTHER_CLIENT, cpu_info={"model": "Threadripper", "logical_cores": 32, "physical_cores": 16},
        ram_info={"total_mb": 131072}, gpu_info=[{"index": 0, "name": "RTX 4090", "memory_total_mb": 24564}],
        session_info={"pid": 4242, "started_at": "2024-01-01T00:00:00+00:00", "peer_port": 8471,
                      "addresses": [{"ip": "10.0.0.7", "prefix": 24, "interface": "eth0"}], "donation": "donating"},
        version="0.1.0", hostname="gpu-box")
    await log_queries.add_client_logs(conn, OTHER_CLIENT, [("warning", LOG_XSS, None), ("info", "joined the farm", None)])
    await metric_queries.record_metrics(conn, OTHER_CLIENT, [("cpu_percent", 42.0), ("ram_used_mb", 2048.0)])
    await metric_queries.record_metrics(conn, OTHER_CLIENT, [("cpu_percent", 58.0), ("ram_used_mb", 2100.0)])

    ids["xss"] = await task_queries.insert_task(
        conn, type="training", requirements=NEVER, priority=5,
        config={"name": XSS, "model": "mlp", "dataset": "synthetic", "distributed": False, "n_clients": 1})
    await log_queries.add_task_log(conn, ids["xss"], OTHER_CLIENT, "info", f"line {XSS}")

    config = {"name": "digits", "model": "mlp", "dataset": "synthetic", "distributed": True, "n_clients": 2,
              "batch_size": 32, "epochs": 2, "checkpoint_interval": "50 steps"}
    ids["done"] = await task_queries.insert_task(conn, type="training", requirements=NEVER, config=config,
                                                 status="completed")
    result = {"progress": 100.0, "epoch": 2, "step": 250, "samples_per_sec": 1800.0, "bytes_per_step": 20480.0,
              "utilisation": 0.93, "sync": "diloco, H=100, fp16: slowest link 94 Mbit/s, DDP would spend 78% of each step communicating",
              "metrics": {"loss": 0.31, "accuracy": 0.91, "val_loss": 0.35, "val_accuracy": 0.89}}
    await conn.execute(update(tasks).where(tasks.c.id == ids["done"]).values(result=result))
    for step in (50, 100, 150):
        await metric_queries.record_curve(conn, ids["done"], step, {"loss": 1.0 / step, "accuracy": step / 200,
                                                                    "utilisation": 0.9})
    for rank, who in enumerate((OTHER_CLIENT, OTHER_CLIENT)):
        await conn.execute(insert(task_assignments).values(
            task_id=ids["done"], client_id=who, rank=rank, status="completed", metrics={"step": 250, "loss": 0.3},
            assigned_at=datetime(2024, 1, 1, 0, 0), updated_at=datetime(2024, 1, 1, 0, 10)))
    await conn.execute(insert(checkpoints).values(
        task_id=ids["done"], client_id=OTHER_CLIENT, path="checkpoints/task-x/final.pt", type="final",
        metrics={"sha256": "ab" * 32, "step": 250, "rank": 0}, created_at=datetime(2024, 1, 1, 0, 10)))
    for n in range(26):
        await task_queries.insert_task(conn, type="training", requirements=NEVER,
                                       config={"name": f"filler-{n}", "model": "mlp", "dataset": "synthetic"})
    return ids


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """One paused agent on a seeded SQLite farm database, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    sync(upgraded(url))
    ids = sync(_run(url, _seed))
    agent = AgentProcess(tmp, "agent", "--database-url", url, *_own_farm(), env=PAUSED)
    try:
        yield Farm(agent, url, ids, Browser(agent))
    finally:
        agent.stop()


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A signed-in browser on an agent whose farm has nothing yet."""
    tmp = tmp_path_factory.mktemp("empty")
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    sync(upgraded(url))
    agent = AgentProcess(tmp, "agent", "--database-url", url, *_own_farm(), env=PAUSED)
    try:
        yield Browser(agent)
    finally:
        agent.stop()


def _task_count(farm: Farm) -> int:
    return int(farm.agent.api("/api/v1/tasks?limit=1")["total"])


# ----- every page -----


def test_every_page_answers_with_its_content_and_security_headers(farm: Farm) -> None:
    """Each page: 200, its key content, CSP, nav; nothing inline that the CSP would block."""
    own = farm.agent.client_id
    pages = {
        "/": ["This machine", "Load now", "Peers on the LAN", "Completion by task type", "Top contributors",
              "Recent activity", "<meter", "gpu-box", "joined the farm"],
        "/tasks": ["Submit a task", "digits", "Waiting:", "no active client meets", "Page 1 of 2", "<progress"],
        "/tasks?page=2": ["Page 2 of 2", "filler-"],
        "/tasks/new": ['name="sync"', 'name="inner_steps"', 'name="compression"', 'name="csrf_token"', 'value="mlp"',
                       'value="cnn"', 'value="synthetic"', 'name="model_options"',
                       'name="min_gpu_memory"', 'name="checkpoint_interval"'],
        f"/tasks/{farm.ids['done']}": ["digits", "status-completed", '<progress max="100" value="100.0"', "Checkpoints",
                                        "abababababab", "Ranks", 'data-chart="loss"', 'data-task-id=', "0.89",
                                        "Sync: diloco, H=100, fp16: slowest link 94 Mbit/s, DDP would spend 78%",
                                        "Bytes sent/step", "Compute utilisation", 'data-chart="utilisation"', "0.93"],
        "/clients": ["gpu-box", "RTX 4090", "<time datetime=", "this machine", "Compute h"],
        f"/clients/{OTHER_CLIENT}": ["Threadripper", "RTX 4090", "10.0.0.7/24", "cpu_percent", "ram_used_mb",
                                     "Performance, last hour", 'data-perf-chart="cpu_percent"'],
        f"/clients/{own}": ["this machine", "Hardware", "agent started"],
        "/models": ["<h1>Models", "sha256"],
        "/settings": ["Resume donating", "paused", "aifarm join", "aifarm leave",
                      "heartbeat_interval", "farm.sqlite3"],
        "/operations": ["Maintenance sweeps", "inactive_clients", "old_tasks", "orphaned_assignments", "old_logs",
                        "old_metrics", "Embedded SQLite file", "performance_metrics", "Slow queries",
                        "SQLite keeps no statement statistics", "Round trip", "Waiting to be written"],
    }
    for path, expected in pages.items():
        response = farm.browser.get(path)
        assert response.status == 200, (path, response.body[:500])
        assert "Content-Security-Policy" in response.headers, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        for text in expected:
            assert text in response.body, (path, text)
        for nav in ('href="/tasks"', 'href="/clients"', 'href="/models"', 'href="/operations"', 'href="/settings"'):
            assert nav in response.body, (path, nav)
        assert " style=" not in response.body and "<style" not in response.body, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.body), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+=", response.body), f"inline event handler on {path}"


def test_task_filters_sorting_and_unknown_values(farm: Farm) -> None:
    """Status filter, sorts, the type filter; an unknown status is a readable 400."""
    completed = farm.browser.get("/tasks?status=completed")
    assert completed.status == 200 and "digits" in completed.body and "filler-" not in completed.body
    for sort in ("priority", "newest", "oldest"):
        assert farm.browser.get(f"/tasks?sort={sort}").status == 200
    assert "No task matches these filters" in farm.browser.get("/tasks?type=nonexistent").body
    bad = farm.browser.get("/tasks?status=bogus")
    assert bad.status == 400 and "unknown status" in bad.body


def test_empty_farm_tells_a_new_user_what_to_do(empty: Browser) -> None:
    """A fresh farm: every page answers, and the empty states say what to do next."""
    expected = {
        "/": ["No tasks yet — submit one on the", "aifarm submit task.json", "Nobody has trained yet", "No peers seen yet"],
        "/tasks": ["No tasks yet.", "aifarm submit task.json"],
        "/models": ["No models yet."],
        "/clients": ["this machine"],
        "/settings": ["donating", "aifarm join"],
    }
    for path, texts in expected.items():
        response = empty.get(path)
        assert response.status == 200, path
        for text in texts:
            assert text in response.body, (path, text)


def test_user_data_is_escaped_everywhere(farm: Farm) -> None:
    """A task name and log lines containing <script> render inert on every page that shows them."""
    for path in ("/tasks", f"/tasks/{farm.ids['xss']}", "/", f"/clients/{OTHER_CLIENT}"):
        body = farm.browser.get(path).body
        assert "<script>alert(" not in body, path
    assert XSS_ESCAPED in farm.browser.get("/tasks").body
    detail = farm.browser.get(f"/tasks/{farm.ids['xss']}").body
    assert XSS_ESCAPED in detail and f"line {XSS_ESCAPED}" in detail
    assert "Why it waits:" in detail
    assert "&lt;script&gt;alert(&#39;log&#39;)&lt;/script&gt;" in farm.browser.get(f"/clients/{OTHER_CLIENT}").body


def test_pages_need_a_session(farm: Farm) -> None:
    """Without the session cookie a page is the 401 sign-in page (with CSP), and a form post changes nothing."""
    stranger = Browser(farm.agent, signed_in=False)
    for path in ("/", "/tasks", "/tasks/new", "/settings", f"/tasks/{farm.ids['done']}"):
        response = stranger.get(path)
        assert response.status == 401, path
        assert "Sign in" in response.body and "Content-Security-Policy" in response.headers
        assert 'href="/tasks"' not in response.body  # no navigation for strangers
    before = _task_count(farm)
    assert stranger.post("/tasks/new", {"name": "x"}).status == 401
    assert _task_count(farm) == before


# ----- the submit form -----


def _valid_form(name: str) -> dict[str, str]:
    return {"name": name, "model": "mlp", "dataset": "synthetic", "batch_size": "16", "learning_rate": "0.01",
            "epochs": "2", "n_clients": "1", "priority": "3", "min_gpu_memory": str(10**8), "min_cpu_cores": "1",
            "min_ram": "512", "model_options": '{"hidden": [8]}', "dataset_options": '{"samples": 600}',
            "checkpoint_interval": "50 steps"}


def test_form_post_without_csrf_token_is_refused(farm: Farm) -> None:
    """403 without (or with a wrong) csrf_token, and no task is added."""
    before = _task_count(farm)
    response = farm.browser.post("/tasks/new", _valid_form("nocsrf"))
    assert response.status == 403 and "CSRF" in response.body
    assert farm.browser.post("/tasks/new", {**_valid_form("badcsrf"), "csrf_token": "0" * 64}).status == 403
    assert _task_count(farm) == before


def test_malformed_form_is_shown_again_with_errors_and_everything_typed(farm: Farm) -> None:
    """400: each error next to its field, every typed value kept, nothing written."""
    before = _task_count(farm)
    form = {**_valid_form("bad name!"), "csrf_token": farm.browser.csrf(), "batch_size": "zero",
            "learning_rate": "-1", "priority": "5000", "model_options": "{not json", "min_ram": "lots",
            "dataset_options": '{"samples": 1, "colour": "red"}', "max_steps": "7", "distributed": "on", "optimizer": "rmsprop",
            "n_clients": "3"}
    response = farm.browser.post("/tasks/new", form)
    assert response.status == 400
    body = response.body
    assert "The task was not submitted" in body
    for name in ("name", "batch_size", "learning_rate", "priority", "model_options", "min_ram", "dataset_options",
                 "optimizer"):
        assert f'id="err-{name}"' in body, name
        assert re.search(rf'id="f-{name}"[^>]*aria-invalid="true"', body, re.S), name
    assert "must be a whole number" in body and "is not valid JSON" in body and "unknown option" in body
    for value in ("bad name!", "zero", "-1", "5000", "lots", "50 steps", "7"):
        assert f'value="{value}"' in body, value
    assert '<option value="rmsprop" selected>' in body
    assert "{not json</textarea>" in body
    assert "{&#34;samples&#34;: 1, &#34;colour&#34;: &#34;red&#34;}</textarea>" in body
    assert re.search(r'name="distributed" checked', body)
    assert re.search(r'<option value="synthetic" data-description="[^"]*" selected>', body)
    assert "<details class=\"card advanced\" open>" in body
    assert _task_count(farm) == before
    for hostile in ("[" * 100000 + "]" * 100000, '{"samples": ' + "9" * 5000 + "}"):
        again = farm.browser.post("/tasks/new", {**_valid_form("hostile"), "csrf_token": form["csrf_token"],
                                                 "dataset_options": hostile})
        assert again.status == 400 and 'id="err-dataset_options"' in again.body
    assert _task_count(farm) == before


def test_valid_form_submits_and_redirects_to_the_task(farm: Farm) -> None:
    """303 to /tasks/ID; the task holds what was typed."""
    form = {**_valid_form("form-task"), "csrf_token": farm.browser.csrf()}
    response = farm.browser.post("/tasks/new", form)
    assert response.status == 303, response.body[:1000]
    match = re.fullmatch(r"/tasks/(\d+)", response.location)
    assert match, response.location
    task = farm.agent.api(f"/api/v1/tasks/{match.group(1)}")
    assert task["status"] == "pending" and task["priority"] == 3
    assert task["config"]["name"] == "form-task" and task["config"]["batch_size"] == 16
    assert task["config"]["learning_rate"] == 0.01 and task["config"]["distributed"] is False
    assert task["config"]["model_options"]["hidden"] == [8] and task["config"]["dataset_options"]["samples"] == 600
    assert task["config"]["checkpoint_interval"] == "50 steps"
    assert task["requirements"] == {"min_gpu_memory": 10**8, "min_cpu_cores": 1, "min_ram": 512}
    page = farm.browser.get(response.location)
    assert page.status == 200 and "form-task" in page.body and "submitted: form-task" in page.body


def test_task_actions_priority_cancel_retry(farm: Farm) -> None:
    """Priority, cancel and retry forms redirect back; a conflict or bad value is a readable message."""
    created = farm.browser.post("/tasks/new", {**_valid_form("act-task"), "csrf_token": farm.browser.csrf()})
    path = created.location
    token = farm.browser.csrf(path)
    task_id = path.rsplit("/", 1)[1]

    assert farm.browser.post(f"{path}/priority", {"csrf_token": token, "priority": "77"}).location == path
    assert farm.agent.api(f"/api/v1/tasks/{task_id}")["priority"] == 77
    bad = farm.browser.post(f"{path}/priority", {"csrf_token": token, "priority": "high"})
    assert bad.status == 400 and "is not a whole number" in bad.body and 'role="alert"' in bad.body
    assert farm.browser.post(f"{path}/priority", {"csrf_token": token, "priority": "5000"}).status == 400

    assert farm.browser.post(f"{path}/retry", {"csrf_token": token}).status == 409
    assert farm.browser.post(f"{path}/cancel", {"csrf_token": token}).location == path
    assert farm.agent.api(f"/api/v1/tasks/{task_id}")["status"] == "failed"
    again = farm.browser.post(f"{path}/cancel", {"csrf_token": token})
    assert again.status == 409 and "only pending or running tasks can be cancelled" in again.body
    assert farm.browser.post(f"{path}/retry", {"csrf_token": token}).location == path
    assert farm.agent.api(f"/api/v1/tasks/{task_id}")["status"] == "pending"
    assert farm.browser.post(f"{path}/cancel", {}).status == 403

    missing = farm.browser.post("/tasks/999999/cancel", {"csrf_token": token})
    assert missing.status == 404 and "does not exist" in missing.body
    assert farm.browser.get("/tasks/999999").status == 404
    assert farm.browser.get("/tasks/99999999999999999999999").status == 404
    assert farm.browser.get("/tasks?page=99999999999999999999").status == 200
    assert farm.browser.get("/clients/nobody").status == 404


def test_settings_pause_and_resume(farm: Farm) -> None:
    """The donation forms change the agent's state (it is left paused, so that it claims nothing)."""
    token = farm.browser.csrf("/settings")
    assert farm.browser.post("/settings/resume", {"csrf_token": token}).location == "/settings"
    assert farm.agent.api("/api/v1/status")["donation"]["paused"] is False
    assert "Pause for 1 h" in farm.browser.get("/settings").body
    assert farm.browser.post("/settings/pause", {"csrf_token": token, "mode": "hour"}).location == "/settings"
    donation = farm.agent.api("/api/v1/status")["donation"]
    assert donation["paused"] is True and donation["until"]
    assert "paused until" in farm.browser.get("/settings").body
    assert farm.browser.post("/settings/pause", {"csrf_token": token, "mode": "sideways"}).status == 400
    assert farm.browser.post("/settings/pause", {"csrf_token": token, "mode": "now"}).status == 303
    assert farm.agent.api("/api/v1/status")["donation"] == {**donation, "until": None, "summary": "paused"}



def test_about_page_names_version_licence_notices_and_data_dir(farm: Farm) -> None:
    """/about (linked from the settings): the version, MIT, each runtime dependency with its installed version
    and licence, and the data dir; strangers get the sign-in page."""
    assert 'href="/about"' in farm.browser.get("/settings").body
    page = farm.browser.get("/about")
    assert page.status == 200, page.body[:500]
    assert f"<strong>{__version__}</strong>" in page.body and "<strong>MIT</strong>" in page.body
    assert "Permission is hereby granted" in page.body  # the licence text itself
    assert str(farm.agent.data_dir) in page.body
    rows = dict(re.findall(r'<tr data-notice="([^"]+)">\s*<td><code>[^<]+</code></td>\s*<td>([^<]+)</td>', page.body))
    for name in ("aiohttp", "aiohttp-jinja2", "SQLAlchemy", "Jinja2", "zeroconf", "alembic", "psutil"):
        assert rows.get(name) == importlib.metadata.version(name), (name, rows)
    assert re.search(r'<tr data-notice="SQLAlchemy">.*?<td class="small">MIT</td>', page.body, re.S)
    assert "pytest" not in rows and "playwright" not in rows  # test-only packages are no runtime dependency
    stranger = Browser(farm.agent, signed_in=False).get("/about")
    assert stranger.status == 401 and "Third-party notices" not in stranger.body


# ----- model downloads -----


def test_model_download_is_verified(farm: Farm) -> None:
    """A local file whose sha256 matches is served with X-Content-SHA256; a tampered or unreachable one is 502."""
    content = os.urandom(4096)
    sha = hashlib.sha256(content).hexdigest()
    models_dir = farm.agent.data_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "good.pt").write_bytes(content)
    (models_dir / "tampered.pt").write_bytes(content + b"x")
    owner = farm.agent.client_id

    async def register(conn: Any) -> None:
        await model_queries.register(conn, name="good", url=f"aifarm://{owner}/models/good.pt",
                                     config={"model": "mlp", "dataset": "synthetic", "final_metrics": {"val_accuracy": 0.93}},
                                     sha256=sha)
        await model_queries.register(conn, name="tampered", url=f"aifarm://{owner}/models/tampered.pt", config={}, sha256=sha)
        await model_queries.register(conn, name="faraway", url="aifarm://nobody-here/models/x.pt", config={}, sha256=sha)

    sync(_run(farm.url, register))
    page = farm.browser.get("/models")
    assert page.status == 200 and "good" in page.body and "0.93" in page.body and sha[:12] in page.body
    links = dict(re.findall(r'<h2 id="model-\d+" class="model-name">(\w+).*?href="(/models/\d+/download)"', page.body, re.S))
    assert set(links) == {"good", "tampered", "faraway"}

    good = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(farm.browser.jar))
    with good.open(farm.agent.url.rstrip("/") + links["good"], timeout=15) as response:
        assert response.status == 200 and "Content-Security-Policy" in response.headers
        assert response.headers["X-Content-SHA256"] == sha
        assert "good-v1.pt" in response.headers["Content-Disposition"]
        assert response.read() == content
    for name in ("tampered", "faraway"):
        refused = farm.browser.get(links[name])
        assert refused.status == 502 and "could deliver" in refused.body, name
    assert farm.browser.get("/models/999999/download").status == 404


def _api_status(farm: Farm, path: str) -> int:
    request = urllib.request.Request(farm.agent.url.rstrip("/") + path,
                                     headers={"Authorization": f"Bearer {farm.agent.api_token}"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_ids_in_paths_are_ascii_digits_only(farm: Farm) -> None:
    """A task id written in other scripts' digits (Arabic-Indic, fullwidth, superscript) names no task: 404."""
    done = str(farm.ids["done"])
    assert _api_status(farm, f"/api/v1/tasks/{done}") == 200
    assert farm.browser.get(f"/tasks/{done}").status == 200
    spellings = ["".join(chr(0x660 + int(d)) for d in done), "".join(chr(0xFF10 + int(d)) for d in done),
                 "\u00b9", "\u0661"]
    for spelling in spellings:
        quoted = urllib.parse.quote(spelling)
        for path in (f"/api/v1/tasks/{quoted}", f"/api/v1/tasks/{quoted}/logs", f"/api/v1/tasks/{quoted}/checkpoints"):
            assert _api_status(farm, path) == 404, (spelling, path)
        assert farm.browser.get(f"/tasks/{quoted}").status == 404, spelling
        assert farm.browser.get(f"/models/{quoted}/download").status == 404, spelling
        assert _api_status(farm, f"/api/v1/tasks?limit={quoted}") == 400, spelling
