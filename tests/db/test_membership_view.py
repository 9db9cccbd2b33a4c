"""The membership log lines of an elastic task, read on SQLite and MariaDB."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import insert

from app.db.engine import Database
from app.db.queries import membership_view
from app.db.queries import tasks as task_queries
from app.db.schema import task_logs


async def test_membership_lines_are_a_tasks_joins_departures_and_regroups_newest_first(db: Database) -> None:
    """Only lines starting with `membership: ` or `training again at step `, of this task, newest first, limited;
    a line merely containing the words does not count."""
    start = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(minutes=5)
    lines = ["membership: vm-c joined; 3 of 2..3 members, generation 4", "sync: ddp",
             "membership: vm-a left (no heartbeat for 4 s); 2 of 2..3 members, generation 5",
             "training again at step 812 as 2 member(s) (generation 5, 3.4 s after the group broke)",
             "rank 1 saw membership: nothing", "checkpoint at step 900"]
    async with db.begin() as conn:
        task_id = await task_queries.insert_task(conn, type="training", requirements={}, config={})
        other = await task_queries.insert_task(conn, type="training", requirements={}, config={})
        for n, message in enumerate(lines):
            await conn.execute(insert(task_logs).values(task_id=task_id, client_id=None, log_type="info",
                                                        message=message, created_at=start + timedelta(seconds=n)))
        await conn.execute(insert(task_logs).values(task_id=other, client_id=None, log_type="info",
                                                    message=lines[0], created_at=start))
    async with db.connect() as conn:
        read = await membership_view.membership_lines(conn, task_id)
        newest = await membership_view.membership_lines(conn, task_id, limit=1)
    assert [line.message for line in read] == [lines[3], lines[2], lines[0]]
    assert [line.created_at for line in read] == [start + timedelta(seconds=n) for n in (3, 2, 0)]
    assert [line.message for line in newest] == [lines[3]]
