"""An elastic task's group on the task page, in its live events and in `aifarm task ID`, from a real SQLite farm
database holding what running members write: assignments with shares, the result's contributions, membership log
lines."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from app.db.engine import create_database
from app.db.queries import clients as client_queries
from app.db.queries import tasks as task_queries
from app.db.schema import task_assignments, task_logs, tasks
from tests.agent.harness import AgentProcess, agent_env
from tests.training.e2e import sync, upgraded

NEVER = {"min_gpu_memory": 10**8, "min_cpu_cores": 1, "min_ram": 0}  # no machine meets it: nothing gets claimed
PAUSED = {"AIFARM_PAUSED": "true"}
MACHINES = {"vm-a": "a-host", "vm-b": "b-host", "vm-c": "c-host", "vm-d": "d-host"}
CONTRIBUTIONS = {"vm-a": 6000, "vm-b": 4000, "vm-c": 2000}
REGROUPED = "training again at step 812 as 2 member(s) (generation 5, 3.4 s after the group broke)"
# Recent (log retention deletes old lines), whole seconds, naive UTC as the database keeps them.
BASE = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(minutes=10)
JOINED_AT, LEFT_AT, REGROUPED_AT = BASE, BASE + timedelta(seconds=65), BASE + timedelta(seconds=69)
LOG_LINES = (  # (when, writer, message), oldest first
    (JOINED_AT, "vm-c", "membership: vm-c joined; 3 of 2..3 members, generation 4"),
    (LEFT_AT, "vm-b", "membership: vm-a left (donation rule (on battery)); 2 of 2..3 members, generation 5"),
    (REGROUPED_AT, "vm-b", REGROUPED),
    (REGROUPED_AT + timedelta(seconds=1), "vm-b", "sync: ddp"),
)


@dataclass
class ElasticFarm:
    """A paused agent on a farm database holding one elastic and one fixed distributed task."""

    agent: AgentProcess
    url: str
    elastic_id: int
    fixed_id: int


async def _seed_db(url: str) -> tuple[int, int]:
    db = create_database(url)
    try:
        async with db.begin() as conn:
            return await seed(conn)
    finally:
        await db.dispose()


async def seed(conn: Any) -> tuple[int, int]:
    """The machines, an elastic task of 2..3 members with vm-b and vm-c training, and a fixed task of 2."""
    for client_id, hostname in MACHINES.items():
        await client_queries.upsert_client(conn, client_id=client_id, cpu_info={"logical_cores": 4}, ram_info={},
                                           gpu_info=[], session_info={}, version="0.1.0", hostname=hostname)
    config = {"name": "elastic-mlp", "model": "mlp", "dataset": "synthetic", "distributed": True, "n_clients": 3,
              "min_clients": 2, "batch_size": 64}
    elastic_id = await task_queries.insert_task(conn, type="training", requirements=NEVER, config=config,
                                                status="running")
    result = {"progress": 40.0, "epoch": 1, "step": 812, "samples_per_sec": 190.9,
              "elastic": {"members": 2, "min": 2, "max": 3, "contributions": CONTRIBUTIONS}}
    await conn.execute(update(tasks).where(tasks.c.id == elastic_id).values(result=result))
    for rank, client_id, share, speed in ((0, "vm-b", 40, 120.5), (1, "vm-c", 24, 70.4)):
        metrics = {"step": 812, "loss": 0.4, "samples_per_sec": speed, "share": share, "contributed_samples": 900}
        await conn.execute(insert(task_assignments).values(task_id=elastic_id, client_id=client_id, rank=rank,
                                                           status="training", metrics=metrics))
    for when, writer, message in LOG_LINES:
        await conn.execute(insert(task_logs).values(task_id=elastic_id, client_id=writer, log_type="info",
                                                    message=message, created_at=when))
    fixed = {**config, "name": "fixed-mlp", "n_clients": 2, "min_clients": 2}
    fixed_id = await task_queries.insert_task(conn, type="training", requirements=NEVER, config=fixed, status="running")
    await conn.execute(update(tasks).where(tasks.c.id == fixed_id).values(result={"progress": 10.0, "step": 5}))
    for rank, client_id in enumerate(("vm-a", "vm-d")):
        await conn.execute(insert(task_assignments).values(task_id=fixed_id, client_id=client_id, rank=rank,
                                                           status="training", metrics={"step": 5}))
    return elastic_id, fixed_id


def start_farm(tmp: Path) -> ElasticFarm:
    """A seeded SQLite farm and a paused agent on it (its own farm name: no peers from other tests)."""
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    sync(upgraded(url))
    elastic_id, fixed_id = sync(_seed_db(url))
    agent = AgentProcess(tmp, "agent", "--database-url", url, "--farm-name", f"web-{uuid.uuid4().hex[:10]}", env=PAUSED)
    return ElasticFarm(agent, url, elastic_id, fixed_id)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticFarm]:
    """The seeded farm, shared by this module's tests."""
    farm = start_farm(tmp_path_factory.mktemp("elastic"))
    try:
        yield farm
    finally:
        farm.agent.stop()


class _Tables(HTMLParser):
    """The rows (cell texts) of each tbody with a data-* attribute, and each <time>'s datetime by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.times: dict[str, list[list[str]]] = {}
        self._body: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = [name for name, _ in attrs if name.startswith("data-")]
        if tag == "tbody" and names:
            self._body = names[0]
            self.rows[self._body], self.times[self._body] = [], []
        elif tag == "tr" and self._body:
            self.rows[self._body].append([])
            self.times[self._body].append([])
        elif tag == "td" and self._body:
            self._cell = []
        elif tag == "time" and self._body:
            self.times[self._body][-1].append(dict(attrs).get("datetime") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._body = None
        elif tag == "td" and self._body and self._cell is not None:
            self.rows[self._body][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> _Tables:
    """The page's tables, read."""
    parser = _Tables()
    parser.feed(html)
    return parser


def _cli(farm: ElasticFarm, tmp_path: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "app", *args, "--database-url", farm.url,
                             "--data-dir", str(tmp_path / "cli")], env=agent_env(tmp_path), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


EXPECTED_RANKS = [["0", "b-host", "40 (62.5 %)", "120.5"], ["1", "c-host", "24 (37.5 %)", "70.4"]]
EXPECTED_CONTRIBUTIONS = [["a-host", "6,000", "50.0 %", "no longer a member"], ["b-host", "4,000", "33.3 %", ""],
                          ["c-host", "2,000", "16.7 %", ""]]
EXPECTED_CHANGES = [
    ["training again", "—", "—", REGROUPED],
    ["left", "a-host", "donation rule (on battery)", "2 of 2..3 members, generation 5"],
    ["joined", "c-host", "—", "3 of 2..3 members, generation 4"],
]
EXPECTED_TIMES = [[at.isoformat() + "Z"] for at in (REGROUPED_AT, LEFT_AT, JOINED_AT)]


def test_task_page_shows_the_elastic_group(farm: ElasticFarm) -> None:
    """Size against min..max, each rank's machine, share and samples/s, the contribution per machine with its part,
    and the membership changes newest first with their time and reason; other log lines stay out of it. A fixed
    task's page has no such section."""
    status, html = farm.agent.page(f"/tasks/{farm.elastic_id}")
    assert status == 200
    assert html.count("data-elastic>") == 1
    section = html[html.index("data-elastic>"):]
    section = section[: section.index("</section>")]
    assert "<strong data-elastic-size>2</strong> of 2..3 machines" in section
    assert "elastic, 2 to 3 clients" in html
    read = tables(section)
    assert read.rows["data-elastic-ranks"] == EXPECTED_RANKS
    assert read.rows["data-elastic-contributions"] == EXPECTED_CONTRIBUTIONS
    assert "12,000 samples in optimizer steps" in section
    assert [row[1:] for row in read.rows["data-elastic-changes"]] == EXPECTED_CHANGES
    assert read.times["data-elastic-changes"] == EXPECTED_TIMES
    assert "sync: ddp" not in section
    assert 'href="/clients/vm-a" title="vm-a">a-host</a>' in section

    # A task whose min_clients is its n_clients shows its ranks as before, and no elastic group.
    status, html = farm.agent.page(f"/tasks/{farm.fixed_id}")
    assert status == 200
    assert "data-elastic" not in html and "Elastic group" not in html
    assert "distributed over 2 clients" in html
    assert [row[:2] for row in tables(html).rows["data-ranks"]] == [["0", "a-host"], ["1", "d-host"]]


def _first_task_event(farm: ElasticFarm, task_id: int) -> dict[str, Any]:
    request = urllib.request.Request(f"{farm.agent.url.rstrip('/')}/api/v1/events?task={task_id}",
                                     headers={"Authorization": f"Bearer {farm.agent.api_token}"})
    deadline = time.monotonic() + 30
    with urllib.request.urlopen(request, timeout=15) as stream:
        event = ""
        for raw in stream:
            assert time.monotonic() < deadline, "no task event within 30 s"
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "task":
                return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError("the stream ended without a task event")


def test_live_events_carry_the_elastic_group(farm: ElasticFarm) -> None:
    """The task page's event stream carries the same view for an elastic task, and none for a fixed one."""
    elastic = _first_task_event(farm, farm.elastic_id)["elastic"]
    assert (elastic["size"], elastic["min_clients"], elastic["max_clients"]) == (2, 2, 3)
    assert [(r["rank"], r["client_id"], r["share"], r["samples_per_sec"]) for r in elastic["ranks"]] == [
        (0, "vm-b", 40, 120.5), (1, "vm-c", 24, 70.4)]
    assert [(c["client_id"], c["samples"], c["member"]) for c in elastic["contributions"]] == [
        ("vm-a", 6000, False), ("vm-b", 4000, True), ("vm-c", 2000, True)]
    assert [(c["kind"], c["clients"], c["at"]) for c in elastic["changes"]] == [
        ("training again", [], REGROUPED_AT.isoformat() + "+00:00"), ("left", ["vm-a"], LEFT_AT.isoformat() + "+00:00"),
        ("joined", ["vm-c"], JOINED_AT.isoformat() + "+00:00")]
    assert elastic["hostnames"]["vm-a"] == "a-host"
    assert "elastic" not in _first_task_event(farm, farm.fixed_id)


def _utc(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def test_cli_task_shows_the_elastic_group(farm: ElasticFarm, tmp_path: Path) -> None:
    """`aifarm task ID` prints the group, shares and speeds, contributions and changes; --json includes them; a fixed
    task prints its ranks as before."""
    lines = _cli(farm, tmp_path, "task", str(farm.elastic_id)).splitlines()
    start = lines.index("  elastic group: 2 of 2..3 machines")
    assert [" ".join(line.split()) for line in lines[start:]] == [
        "elastic group: 2 of 2..3 machines",
        "rank 0: vm-b (training), share 40 of each batch (62.5%), 120.5 samples/s",
        "rank 1: vm-c (training), share 24 of each batch (37.5%), 70.4 samples/s",
        "contributed samples (12,000 in all):",
        "vm-a 6,000 50.0% (no longer a member)",
        "vm-b 4,000 33.3%",
        "vm-c 2,000 16.7%",
        "membership changes, newest first:",
        f"{_utc(REGROUPED_AT)} {REGROUPED}",
        f"{_utc(LEFT_AT)} vm-a left (donation rule (on battery)); 2 of 2..3 members, generation 5",
        f"{_utc(JOINED_AT)} vm-c joined; 3 of 2..3 members, generation 4",
    ]
    shown = json.loads(_cli(farm, tmp_path, "task", str(farm.elastic_id), "--json"))
    elastic = shown["elastic"]
    assert (elastic["size"], elastic["min_clients"], elastic["max_clients"]) == (2, 2, 3)
    assert {c["client_id"]: c["samples"] for c in elastic["contributions"]} == CONTRIBUTIONS
    assert elastic["contributed_samples"] == 12000
    assert [c["reason"] for c in elastic["changes"]] == [None, "donation rule (on battery)", None]
    assert [r["share_percent"] for r in elastic["ranks"]] == [62.5, 37.5]

    fixed = _cli(farm, tmp_path, "task", str(farm.fixed_id)).splitlines()
    assert fixed[-2:] == ["  rank 0: vm-a (training)", "  rank 1: vm-d (training)"]
    assert "elastic" not in json.loads(_cli(farm, tmp_path, "task", str(farm.fixed_id), "--json"))
