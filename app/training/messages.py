"""The small typed messages a worker sends its agent, one JSON object per line."""

from __future__ import annotations

import json
from typing import Any

KINDS = frozenset({"rendezvous", "started", "progress", "epoch", "log", "checkpoint", "finished", "stopped", "failed"})
MAX_LINE = 1 << 20


class BadMessage(ValueError):
    """A line from a worker that is not a valid message."""


def encode(message_type: str, /, **fields: Any) -> str:
    """One message as a JSON line."""
    assert message_type in KINDS, message_type
    return json.dumps({"type": message_type, **fields}, separators=(",", ":")) + "\n"


def decode(line: bytes | str) -> dict[str, Any]:
    """Parse and check one line; BadMessage when it is not a message."""
    if len(line) > MAX_LINE:
        raise BadMessage("message too long")
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or message.get("type") not in KINDS:
        raise BadMessage("not a worker message")
    return message
