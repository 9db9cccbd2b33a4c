"""A heartbeat on MySQL/MariaDB is one autocommitted UPDATE on a held connection: no ping, COMMIT or ROLLBACK."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from app.config import load_settings
from app.db.engine import create_database
from app.db.migrate import upgrade
from app.services.donation import Donation
from app.services.events import EventLog
from app.services.heartbeat import Heartbeat

pytestmark = pytest.mark.mysql


async def test_heartbeats_are_one_statement_each_on_mariadb(mysql_url: str, tmp_path: Path) -> None:
    """Ten heartbeats: the held connection's own counters show ten UPDATEs and nothing else; last_seen moves."""
    db = create_database(mysql_url)
    await upgrade(db)
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "d")}, config_file=tmp_path / "none.toml")
    events = EventLog("hb-0123456789ab")
    beat = Heartbeat(db, "hb-0123456789ab", "host", Donation(settings, events), events,
                     session_info=lambda: {"addresses": []}, reach=lambda: {})
    try:
        await beat.register()
        await beat.beat()  # opens the held connection

        async def counters() -> dict[str, int]:
            async def read(conn: object) -> dict[str, int]:
                rows = await conn.execute(text("SHOW SESSION STATUS WHERE Variable_name IN "  # type: ignore[attr-defined]
                                               "('Com_update', 'Com_commit', 'Com_rollback', 'Com_begin', "
                                               "'Com_admin_commands', 'Com_select', 'Com_set_option')"))
                return {name: int(value) for name, value in rows}
            return await beat.pinned.run(read)

        before = await counters()
        for _ in range(10):
            await beat.beat()
        after = await counters()
        delta = {name: after[name] - before[name] for name in after}
        # The SHOW itself counts as nothing of these; the ten heartbeats are exactly ten UPDATEs.
        assert delta == {"Com_update": 10, "Com_commit": 0, "Com_rollback": 0, "Com_begin": 0,
                         "Com_admin_commands": 0, "Com_select": 0, "Com_set_option": 0}, delta
    finally:
        await beat.close()
        await db.dispose()
