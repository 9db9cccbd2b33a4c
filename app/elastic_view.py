"""What the task page and `aifarm task ID` show of an elastic group: its size against min..max, each rank's share
and speed, the samples each machine contributed, and the membership changes with their reasons."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from app.client_labels import client_labels
from app.db.queries import clients as client_queries
from app.db.queries import membership_view
from app.db.queries.membership_view import MembershipLine
from app.scheduling.decide import is_elastic, min_clients_of, n_clients_of
from app.timefmt import absolute_time

ChangeKind = Literal["joined", "left", "training again", "other"]
_JOINED = re.compile(r"(?P<who>.+?) joined; (?P<note>[^;]*)")
_LEFT = re.compile(r"(?P<who>.+?) left \((?P<reason>.*)\); (?P<note>[^;]*)")


@dataclass(frozen=True)
class RankShare:
    """One rank of the group: its machine, its samples of each global batch and its throughput."""

    rank: int
    client_id: str
    status: str
    share: int | None
    share_percent: float | None
    samples_per_sec: float | None


@dataclass(frozen=True)
class Contribution:
    """The samples one machine put into applied optimizer steps, and its part of all of them."""

    client_id: str
    samples: int
    percent: float
    member: bool


@dataclass(frozen=True)
class MembershipChange:
    """One change of the group: who joined or left and why, or the group training again."""

    id: int
    at: datetime
    kind: ChangeKind
    clients: tuple[str, ...]
    reason: str | None
    note: str
    text: str


@dataclass(frozen=True)
class ElasticView:
    """An elastic task's group as the dashboard and the command line show it."""

    size: int
    min_clients: int
    max_clients: int
    ranks: tuple[RankShare, ...]
    contributions: tuple[Contribution, ...]
    contributed_samples: int
    changes: tuple[MembershipChange, ...]
    hostnames: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        """The view as JSON-ready data (times stay datetimes for the caller's encoder)."""
        return asdict(self)

    def text_lines(self) -> list[str]:
        """The view as `aifarm task ID` prints it, indented under the task's own lines."""
        lines = [f"  elastic group: {self.size} of {self.min_clients}..{self.max_clients} machines"]
        for r in self.ranks:
            share = "share -" if r.share is None else f"share {r.share} of each batch ({r.share_percent:.1f}%)"
            speed = "- samples/s" if r.samples_per_sec is None else f"{r.samples_per_sec:,.1f} samples/s"
            lines.append(f"  rank {r.rank}: {r.client_id} ({r.status}), {share}, {speed}")
        if self.contributions:
            lines.append(f"  contributed samples ({self.contributed_samples:,} in all):")
            width = max(len(c.client_id) for c in self.contributions)
            lines += [f"    {c.client_id.ljust(width)}  {c.samples:>12,}  {c.percent:5.1f}%"
                      + ("" if c.member else "  (no longer a member)") for c in self.contributions]
        if self.changes:
            lines.append("  membership changes, newest first:")
            lines += [f"    {absolute_time(c.at)}  {c.text}" for c in self.changes]
        return lines


def _number(value: Any) -> float | None:
    """A finite, non-negative figure from JSON the members wrote; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _ranks(assignments: Sequence[Mapping[str, Any]]) -> tuple[RankShare, ...]:
    """Each rank's share of the batch (and its part of all shares) and samples/s, from its assignment's metrics."""
    metrics = [a["metrics"] if isinstance(a.get("metrics"), dict) else {} for a in assignments]
    shares = [_number(m.get("share")) for m in metrics]
    batch = sum(s for s in shares if s is not None)
    return tuple(
        RankShare(int(a["rank"]), str(a["client_id"]), str(a["status"]), None if share is None else int(share),
                  None if share is None else (100.0 * share / batch if batch else 0.0), _number(m.get("samples_per_sec")))
        for a, m, share in zip(assignments, metrics, shares, strict=True))


def _contributions(elastic: Mapping[str, Any], members: set[str]) -> tuple[Contribution, ...]:
    """The machines' contributed samples, largest first, with their percentage of the sum."""
    given = elastic.get("contributions")
    figures = {str(k): int(n) for k, v in (given.items() if isinstance(given, dict) else ())
               if (n := _number(v)) is not None}
    total = sum(figures.values())
    ordered = sorted(figures.items(), key=lambda item: (-item[1], item[0]))
    return tuple(Contribution(client_id, samples, 100.0 * samples / total if total else 0.0, client_id in members)
                 for client_id, samples in ordered)


def change_of(line: MembershipLine) -> MembershipChange:
    """One membership log line, read: joined or left (with the reason), or training again."""
    text = line.message.removeprefix(membership_view.MEMBERSHIP_PREFIX)
    if line.message.startswith(membership_view.REGROUPED_PREFIX):
        return MembershipChange(line.id, line.created_at, "training again", (), None, text, text)
    if (found := _LEFT.fullmatch(text)) is not None:
        return MembershipChange(line.id, line.created_at, "left", tuple(found["who"].split(", ")), found["reason"],
                                found["note"], text)
    if (found := _JOINED.fullmatch(text)) is not None:
        return MembershipChange(line.id, line.created_at, "joined", tuple(found["who"].split(", ")), None,
                                found["note"], text)
    return MembershipChange(line.id, line.created_at, "other", (), None, text, text)


def build(config: Any, result: Any, assignments: Sequence[Mapping[str, Any]], changes: Sequence[MembershipChange],
          hostnames: Mapping[str, str | None]) -> ElasticView:
    """The view from the task's config and result, its current assignments and its membership changes."""
    elastic = result.get("elastic") if isinstance(result, dict) else None
    members = {str(a["client_id"]) for a in assignments}
    contributions = _contributions(elastic if isinstance(elastic, dict) else {}, members)
    return ElasticView(
        size=len(members), min_clients=min_clients_of(config), max_clients=n_clients_of(config),
        ranks=_ranks(assignments), contributions=contributions,
        contributed_samples=sum(c.samples for c in contributions),
        changes=tuple(changes),
        hostnames=client_labels(hostnames),
    )


async def read(conn: AsyncConnection, task: Mapping[str, Any],
               assignments: Sequence[Mapping[str, Any]]) -> ElasticView | None:
    """The view of this task's group; None unless the task is elastic (its min_clients below its n_clients)."""
    if not is_elastic(task.get("config")):
        return None
    changes = [change_of(line) for line in await membership_view.membership_lines(conn, int(task["id"]))]
    result = task.get("result")
    elastic = result.get("elastic") if isinstance(result, dict) else None
    given = elastic.get("contributions") if isinstance(elastic, dict) else None
    ids = {str(a["client_id"]) for a in assignments} | set(given if isinstance(given, dict) else ())
    ids |= {who for change in changes for who in change.clients}
    hostnames = await client_queries.hostnames(conn, sorted(ids))
    return build(task.get("config"), result, assignments, changes, hostnames)
