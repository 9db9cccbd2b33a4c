"""Plain-text output for the command line: tables, JSON and progress (times as text: app/timefmt.py)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc).isoformat() if value.tzinfo is None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    """JSON text with datetimes as ISO 8601 UTC."""
    return json.dumps(value, default=_default, indent=2, sort_keys=True)


def print_json(value: Any, out: TextIO = sys.stdout) -> None:
    """Print a value as JSON."""
    out.write(to_json(value) + "\n")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned with two spaces; None shows as '-'."""
    cells = [[("-" if value is None else str(value)) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=False)]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=False)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in cells]
    return "\n".join(lines)


@dataclass(frozen=True)
class ProgressUnit:
    """How a progress display counts: its name, the size of one unit, and how its rate is shown."""

    name: str
    scale: float
    rate_per: str  # "s" or "min"


BYTES = ProgressUnit("MB", 2**20, "s")
PERCENT = ProgressUnit("%", 1.0, "min")


class ProgressDisplay:
    """Progress on stderr: a bar with rate and ETA on a terminal, a plain line every few seconds when piped or logged."""

    def __init__(self, description: str, total: float | None, unit: ProgressUnit, *, quiet: bool = False,
                 stream: TextIO | None = None, every: float = 5.0) -> None:
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.terminal = not quiet and self.stream.isatty()
        self._start = time.monotonic()
        self._first: tuple[float, float] | None = None
        self._last_line_at: float | None = None
        self._completed, self._status = 0.0, ""
        self._bar: Any = None
        self._task: Any = None
        if self.terminal:
            self._open_bar()

    def _open_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                             TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                             TextColumn("{task.fields[status]}"), console=Console(file=self.stream), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self.description, total=self.total, rate="", status="")

    def rate(self) -> float | None:
        """Units per second since the first update, or None before there is one to measure."""
        if self._first is None:
            return None
        elapsed = time.monotonic() - self._first[0]
        return (self._completed - self._first[1]) / elapsed if elapsed > 0 and self._completed > self._first[1] else None

    def _rate_text(self) -> str:
        rate = self.rate()
        if rate is None:
            return "rate ?"
        per = 60.0 if self.unit.rate_per == "min" else 1.0
        return f"{rate * per / self.unit.scale:.2f} {self.unit.name}/{self.unit.rate_per}"

    def _eta_text(self) -> str:
        rate = self.rate()
        if self.total is None or rate is None or rate <= 0:
            return "ETA ?"
        return f"ETA {format_eta((self.total - self._completed) / rate)}"

    def set_total(self, total: float | None) -> None:
        """The total, once it is known (a download's length arrives with its first response)."""
        if total is None or total == self.total:
            return
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def update(self, completed: float, status: str = "") -> None:
        """The amount done so far (and a short status text); redraws the bar or, now and then, prints a line."""
        now = time.monotonic()
        if self._first is None:
            self._first = (now, completed)
        self._completed, self._status = completed, status
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, rate=self._rate_text(), status=status)
        elif self._last_line_at is None or now - self._last_line_at >= self.every:
            self._print_line()

    def _print_line(self) -> None:
        self._last_line_at = time.monotonic()
        done = f"{self._completed / self.unit.scale:.1f}"
        amount = f"{done}/{self.total / self.unit.scale:.1f} {self.unit.name}" if self.total else f"{done} {self.unit.name}"
        if self.unit is PERCENT:
            amount = f"{self._completed:.1f}%"
        status = f" {self._status}" if self._status else ""
        self.stream.write(f"{self.description}: {amount}, {self._rate_text()}, {self._eta_text()}{status}\n")
        self.stream.flush()

    def close(self) -> None:
        """Stop the bar, or print the final line."""
        if self._bar is not None:
            self._bar.stop()
        elif not self.quiet and self._first is not None:
            self._print_line()

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_eta(seconds: float) -> str:
    """A remaining time as 45s, 3m05s or 2h10m."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
