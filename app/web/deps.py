"""What the dashboard is given by the agent: the database, this machine's identity, and narrow views and actions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.db.engine import Database
from app.operations.maintenance import Maintenance
from app.services.donation import Donation
from app.training.catalog import Catalog
from app.web.security import LoginLinks

Fetch = Callable[[str | None, str, str], Awaitable[Path | None]]


@dataclass(frozen=True)
class DashboardDeps:
    """The dashboard's view of its agent; it reads through these and acts only through `donation` and `shutdown`."""

    db: Database
    client_id: str
    api_token: str
    catalog: Catalog
    donation: Donation
    login_links: LoginLinks
    describe: Callable[[], dict[str, Any]]
    peers_view: Callable[[], dict[str, Any]]
    work: Callable[[], dict[str, Any]]
    write_backlog: Callable[[], dict[str, int]]
    maintenance: Callable[[], Maintenance | None]
    fetch_file: Fetch
    login_url: Callable[[], str]
    request_shutdown: Callable[[], None]

    @property
    def settings(self) -> Settings:
        """The settings in force (the volunteer's preferences apply at once)."""
        return self.donation.settings

    @property
    def inventory(self) -> dict[str, Any]:
        """This machine's hardware as last read."""
        return self.donation.inventory
