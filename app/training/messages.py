"""The typed messages a worker sends its agent, one JSON object per line tagged by "type".

Decoding is strict: every field of the message's type must be present with its type (an optional field
may be null; a field added later, marked ADDED, may be left out, so lines written before it existed still decode), and a
field the type does not have is refused. The worker and its agent are the same
version of the product (the agent spawns the worker from its own interpreter), so a difference is a bug
or garbage, never an older sender.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

MAX_LINE = 1 << 20
ADDED = {"added": True}  # field metadata: the field may be absent from a line (it takes its default)

Metrics = dict[str, float | None]
LogLevel = Literal["info", "warning", "error"]
CheckpointKind = Literal["regular", "distributed", "emergency", "final"]


class BadMessage(ValueError):
    """A line from a worker that is not a valid message."""


@dataclass(frozen=True)
class Rendezvous:
    """Rank 0's store listens on this port: the other ranks meet it there."""

    port: int
    type: Literal["rendezvous"] = field(default="rendezvous", init=False)


@dataclass(frozen=True)
class Regrouped:
    """An elastic rank trains again in a new membership, `seconds` after its previous group broke."""

    generation: int
    rank: int
    world: int
    step: int
    seconds: float
    type: Literal["regrouped"] = field(default="regrouped", init=False)


@dataclass(frozen=True)
class Broken:
    """An elastic rank's exchange with its group failed (a member went away): its agent checks the members at once."""

    generation: int
    type: Literal["broken"] = field(default="broken", init=False)


@dataclass(frozen=True)
class Released:
    """An elastic rank far slower than its group leaves it (it is never failed for being slow)."""

    reason: str
    type: Literal["released"] = field(default="released", init=False)


@dataclass(frozen=True)
class Started:
    """The data is loaded and training begins (at `step` when resuming)."""

    step: int
    total_steps: int
    steps_per_epoch: int
    samples: int
    validation_samples: int
    sync: str | None = field(default=None, metadata=ADDED)  # how the group synchronises, and why
    type: Literal["started"] = field(default="started", init=False)


@dataclass(frozen=True)
class Progress:
    """Where training stands, sent every progress interval."""

    step: int
    total_steps: int
    epoch: int
    progress: float
    samples_per_sec: float
    rank_samples_per_sec: float
    step_time: float
    metrics: Metrics
    bytes_per_step: float | None = field(default=None, metadata=ADDED)  # bytes sent per optimizer step (this rank)
    utilisation: float | None = field(default=None, metadata=ADDED)  # time computing ÷ wall time since the last report
    contributed: float | None = field(default=None, metadata=ADDED)  # samples this rank put into applied steps (elastic)
    share: float | None = field(default=None, metadata=ADDED)  # this rank's samples of each global batch (elastic)
    contributions: Metrics | None = field(default=None, metadata=ADDED)  # rank 0, elastic: samples per machine
    type: Literal["progress"] = field(default="progress", init=False)


@dataclass(frozen=True)
class Epoch:
    """An epoch ended and was validated."""

    epoch: int
    step: int
    val_loss: float
    val_accuracy: float
    loss: float | None
    accuracy: float | None
    val_perplexity: float | None = None  # language models
    type: Literal["epoch"] = field(default="epoch", init=False)


@dataclass(frozen=True)
class Log:
    """A line for the task's log."""

    level: LogLevel
    message: str
    type: Literal["log"] = field(default="log", init=False)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file was written and published."""

    kind: CheckpointKind
    path: str
    sha256: str
    step: int
    epoch: int
    metrics: Metrics
    type: Literal["checkpoint"] = field(default="checkpoint", init=False)


@dataclass(frozen=True)
class Finished:
    """Training reached its last step; rank 0 also names the model file it wrote."""

    step: int
    total_steps: int
    epoch: int
    metrics: Metrics
    samples_per_sec: float | None
    params_sha256: str
    model_path: str | None = None
    model_sha256: str | None = None
    bytes_per_step: float | None = field(default=None, metadata=ADDED)  # over this attempt's steps (this rank)
    utilisation: float | None = field(default=None, metadata=ADDED)  # over this attempt
    type: Literal["finished"] = field(default="finished", init=False)


@dataclass(frozen=True)
class Stopped:
    """The worker wrote its emergency checkpoint after a stop request and exits."""

    step: int
    type: Literal["stopped"] = field(default="stopped", init=False)


@dataclass(frozen=True)
class Failed:
    """The worker failed; `permanent` when retrying cannot help (the task itself is wrong)."""

    error: str
    traceback: str
    permanent: bool
    type: Literal["failed"] = field(default="failed", init=False)


WorkerMessage = Rendezvous | Regrouped | Broken | Released | Started | Progress | Epoch | Log | Checkpoint | Finished | Stopped | Failed

KINDS: dict[str, type[WorkerMessage]] = {
    cls.type: cls for cls in (Rendezvous, Regrouped, Broken, Released, Started, Progress, Epoch, Log, Checkpoint, Finished, Stopped, Failed)
}

# What the decoder checks each field against, read from the dataclasses themselves.
_FIELDS: dict[str, dict[str, Any]] = {
    kind: {name: hint for name, hint in get_type_hints(cls).items() if name != "type"} for kind, cls in KINDS.items()
}
_OPTIONAL: dict[str, frozenset[str]] = {
    kind: frozenset(f.name for f in fields(cls) if f.metadata.get("added") and f.default is not MISSING) for kind, cls in KINDS.items()
}
_WANTED: dict[Any, str] = {
    int: "an integer", float: "a number", float | None: "a number or null", str: "a string",
    str | None: "a string or null", bool: "true or false", Metrics: "an object of numbers or nulls",
    Metrics | None: "an object of numbers or nulls, or null",
}


def encode(message: WorkerMessage) -> str:
    """One message as a JSON line."""
    return json.dumps({"type": message.type, **asdict(message)}, separators=(",", ":")) + "\n"


def decode(line: bytes | str) -> WorkerMessage:
    """Parse and check one line; BadMessage naming the problem when it is not a valid message."""
    if len(line) > MAX_LINE:
        raise BadMessage(f"line of {len(line)} bytes is longer than {MAX_LINE}")
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"not a JSON object: {_show(data)}")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        raise BadMessage(f"unknown message type {_show(kind)}" if "type" in data else "no message type")
    schema = _FIELDS[kind]
    extra = sorted(set(data) - set(schema) - {"type"})
    if extra:
        raise BadMessage(f"{kind}: unknown field {', '.join(map(repr, extra))}")
    values: dict[str, Any] = {}
    for name, expected in schema.items():
        if name not in data:
            if name in _OPTIONAL[kind]:
                continue
            raise BadMessage(f"{kind}: missing field {name!r}")
        values[name] = _check(kind, name, expected, data[name])
    return KINDS[kind](**values)


def _check(kind: str, name: str, expected: Any, value: Any) -> Any:
    """The value as the field's type (an integer given for a number becomes a float); BadMessage when it is not."""
    if get_origin(expected) is Literal:
        allowed = get_args(expected)
        if isinstance(value, str) and value in allowed:
            return value
        raise BadMessage(f"{kind}: field {name!r} is {_show(value)}, not one of {', '.join(allowed)}")
    optional = expected in (float | None, str | None, Metrics | None)
    if value is None and optional:
        return None
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (float, float | None) and _is_number(value):
        return float(value)
    if expected in (str, str | None) and isinstance(value, str):
        return value
    if expected is bool and isinstance(value, bool):
        return value
    if expected in (Metrics, Metrics | None) and isinstance(value, dict):
        for key, item in value.items():
            if item is not None and not _is_number(item):
                raise BadMessage(f"{kind}: metric {key!r} is {_show(item)}, not a number or null")
        return {key: None if item is None else float(item) for key, item in value.items()}
    raise BadMessage(f"{kind}: field {name!r} is {_show(value)}, not {_WANTED[expected]}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A value as it appeared on the line, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."

