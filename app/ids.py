"""Row ids and whole numbers typed by people or put in URLs: ASCII digits only, within a database integer."""

from __future__ import annotations

import re

MAX_ID = 2**63 - 1  # the largest BIGINT; SQLite cannot bind anything larger
_ASCII_INT = re.compile(r"^-?[0-9]{1,19}$", re.ASCII)


def parse_int(text: str, low: int, high: int) -> int | None:
    """The number written in ASCII digits (optional leading '-') if it lies in [low, high]; else None."""
    if not _ASCII_INT.match(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_id(text: str) -> int | None:
    """A row id (1 to the largest BIGINT) written in ASCII digits, or None."""
    return parse_int(text, 1, MAX_ID)
