"""The worker's typed messages: round trips, refused lines, and a worker process that sends garbage."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from app.training.messages import (
    KINDS,
    MAX_LINE,
    BadMessage,
    Broken,
    Checkpoint,
    Epoch,
    Failed,
    Finished,
    Log,
    Progress,
    Regrouped,
    Released,
    Rendezvous,
    Started,
    Stopped,
    WorkerMessage,
    decode,
    encode,
)
from app.training.supervisor import WorkerHandle

EXAMPLES: list[WorkerMessage] = [
    Rendezvous(port=29500),
    Started(step=0, total_steps=300, steps_per_epoch=100, samples=3200, validation_samples=400),
    Progress(step=40, total_steps=300, epoch=1, progress=13.33, samples_per_sec=812.5, rank_samples_per_sec=406.25,
             step_time=0.0123, metrics={"loss": 1.2, "accuracy": 0.5, "val_loss": None, "val_accuracy": None}),
    Epoch(epoch=1, step=100, val_loss=0.9, val_accuracy=0.61, loss=1.0, accuracy=None),
    Log(level="warning", message="dataset cache is stale; fetching again \u2713"),
    Checkpoint(kind="emergency", path="/data/checkpoints/task-1/emergency-000000042-r1.pt", sha256="ab" * 32,
               step=42, epoch=0, metrics={}),
    Finished(step=300, total_steps=300, epoch=3, metrics={"val_loss": 0.5, "val_accuracy": 0.8},
             samples_per_sec=None, params_sha256="cd" * 32, model_path="/data/models/m.pt", model_sha256="ef" * 32),
    Finished(step=300, total_steps=300, epoch=3, metrics={}, samples_per_sec=700.0, params_sha256="cd" * 32),
    Stopped(step=77),
    Started(step=0, total_steps=300, steps_per_epoch=100, samples=3200, validation_samples=400,
            sync="diloco, H=100, fp16: slowest link 94 Mbit/s, DDP would spend 78% of each step communicating"),
    Progress(step=40, total_steps=300, epoch=1, progress=13.33, samples_per_sec=812.5, rank_samples_per_sec=406.25,
             step_time=0.0123, metrics={}, bytes_per_step=20480.0, utilisation=0.93),
    Failed(error="RecipeError: unknown model 'x'", traceback="", permanent=True),
    Regrouped(generation=4, rank=1, world=2, step=812, seconds=3.4),
    Broken(generation=4),
    Released(reason="released from the group: 90 samples/s is below 1/8 of the group's median 900"),
    Progress(step=41, total_steps=300, epoch=1, progress=13.67, samples_per_sec=900.0, rank_samples_per_sec=300.0,
             step_time=0.01, metrics={}, contributed=1312.0, share=24.0, contributions={"vm-a": 3936.0, "vm-b": 1312.0}),
    Progress(step=42, total_steps=300, epoch=1, progress=14.0, samples_per_sec=900.0, rank_samples_per_sec=300.0,
             step_time=0.01, metrics={}, contributed=1312.0, share=8.0, contributions=None),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type)
def test_every_message_type_survives_a_round_trip(message: WorkerMessage) -> None:
    line = encode(message)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line)["type"] == message.type
    assert decode(line) == message
    assert decode(line.encode()) == message


def test_lines_written_before_the_sync_figures_existed_still_decode() -> None:
    progress = ('{"type":"progress","step":40,"total_steps":300,"epoch":1,"progress":13.33,"samples_per_sec":812.5,'
                '"rank_samples_per_sec":406.25,"step_time":0.0123,"metrics":{"loss":1.2}}')
    decoded = decode(progress)
    assert isinstance(decoded, Progress) and decoded.bytes_per_step is None and decoded.utilisation is None
    started = decode('{"type":"started","step":0,"total_steps":3,"steps_per_epoch":1,"samples":3,"validation_samples":1}')
    assert isinstance(started, Started) and started.sync is None
    with pytest.raises(BadMessage, match="progress: field 'utilisation' is \"high\", not a number or null"):
        decode(progress[:-1] + ',"utilisation":"high"}')


def test_the_examples_cover_every_type() -> None:
    assert {m.type for m in EXAMPLES} == set(KINDS)


def test_integers_given_for_numbers_become_floats_and_optional_fields_take_null() -> None:
    decoded = decode('{"type":"epoch","epoch":1,"step":5,"val_loss":2,"val_accuracy":0,"loss":null,"accuracy":1,'
                     '"val_perplexity":null}')
    assert isinstance(decoded, Epoch)
    assert decoded == Epoch(epoch=1, step=5, val_loss=2.0, val_accuracy=0.0, loss=None, accuracy=1.0)
    assert isinstance(decoded.val_loss, float) and isinstance(decoded.accuracy, float)
    progress = decode(encode(Progress(step=1, total_steps=2, epoch=1, progress=50, samples_per_sec=3, rank_samples_per_sec=3,
                                      step_time=1, metrics={"loss": 2, "accuracy": None})))
    assert isinstance(progress, Progress) and isinstance(progress.metrics["loss"], float)


def _line(**fields: object) -> str:
    return json.dumps(fields)


STOPPED = {"type": "stopped", "step": 3}
STARTED = {"type": "started", "step": 0, "total_steps": 9, "steps_per_epoch": 3, "samples": 96, "validation_samples": 8}
PROGRESS = {"type": "progress", "step": 1, "total_steps": 9, "epoch": 1, "progress": 11.1, "samples_per_sec": 1.0,
            "rank_samples_per_sec": 1.0, "step_time": 0.1, "metrics": {"loss": 1.0}}

MALFORMED = [
    ("bad json", '{"type": "stopped", "step": 3', "not JSON"),
    ("not utf-8", b'{"type": "log", "level": "info", "message": "\xff\xfe"}', "not JSON"),
    ("empty", "", "not JSON"),
    ("array", "[1, 2]", "not a JSON object: [1, 2]"),
    ("string", '"stopped"', 'not a JSON object: "stopped"'),
    ("no type", _line(step=3), "no message type"),
    ("unknown type", _line(type="explode", step=3), 'unknown message type "explode"'),
    ("type not a string", _line(type=["stopped"], step=3), "unknown message type [\"stopped\"]"),
    ("missing field", _line(**{k: v for k, v in STARTED.items() if k != "samples"}), "started: missing field 'samples'"),
    ("string for int", _line(**{**STOPPED, "step": "3"}), "stopped: field 'step' is \"3\", not an integer"),
    ("bool for int", _line(**{**STOPPED, "step": True}), "stopped: field 'step' is true, not an integer"),
    ("float for int", _line(**{**STOPPED, "step": 3.5}), "stopped: field 'step' is 3.5, not an integer"),
    ("null for int", _line(**{**STOPPED, "step": None}), "stopped: field 'step' is null, not an integer"),
    ("bool for float", _line(**{**PROGRESS, "progress": False}), "progress: field 'progress' is false, not a number"),
    ("string for float", _line(**{**PROGRESS, "step_time": "0.1"}), "progress: field 'step_time' is \"0.1\", not a number"),
    ("metrics not an object", _line(**{**PROGRESS, "metrics": [1.0]}), "progress: field 'metrics' is [1.0], not an object"),
    ("string metric", _line(**{**PROGRESS, "metrics": {"loss": "low"}}), "progress: metric 'loss' is \"low\""),
    ("bool metric", _line(**{**PROGRESS, "metrics": {"loss": True}}), "progress: metric 'loss' is true"),
    ("nested metric", _line(**{**PROGRESS, "metrics": {"loss": {"x": 1}}}), "progress: metric 'loss' is {\"x\": 1}"),
    ("int for bool", _line(type="failed", error="e", traceback="", permanent=1),
     "failed: field 'permanent' is 1, not true or false"),
    ("number for string", _line(type="log", level="info", message=5), "log: field 'message' is 5, not a string"),
    ("unknown level", _line(type="log", level="loud", message="m"), "log: field 'level' is \"loud\", not one of info"),
    ("unknown checkpoint kind", _line(type="checkpoint", kind="spare", path="p", sha256="s", step=1, epoch=0, metrics={}),
     "checkpoint: field 'kind' is \"spare\", not one of regular"),
    ("missing optional field", _line(type="finished", step=1, total_steps=1, epoch=1, metrics={}, samples_per_sec=None,
                                     params_sha256="x", model_path=None), "finished: missing field 'model_sha256'"),
    ("unknown field", _line(**{**STOPPED, "reason": "x"}), "stopped: unknown field 'reason'"),
    ("huge line", _line(type="log", level="info", message="x" * MAX_LINE), "longer than"),
]


@pytest.mark.parametrize(("line", "reason"), [(line, reason) for _, line, reason in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_a_malformed_line_is_refused_with_its_reason(line: str | bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as refused:
        decode(line)
    assert reason in str(refused.value)
    assert len(str(refused.value)) < 200


# A stand-in worker: good messages between garbage of every kind, flooding the agent with bad lines.
FLOODING_WORKER = f"""
import sys
from app.training.messages import Log, Started, Stopped, encode
out = sys.stdout
out.write(encode(Started(step=0, total_steps=9, steps_per_epoch=3, samples=96, validation_samples=8)))
out.write("this is not json\\n")
for i in range(500):
    out.write('{{"type": "stopped", "step": "%d"}}\\n' % i)
out.write("x" * {MAX_LINE + 200_000} + "\\n")
out.write(encode(Log(level="info", message="still here")))
out.write('\\n{{"type": "explode"}}\\n[]\\n')
out.write(encode(Stopped(step=9)))
out.flush()
"""


def _supervisor_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app.training.supervisor" and r.levelno >= logging.WARNING]


async def test_malformed_lines_are_ignored_and_logged_once_while_good_messages_arrive(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.training.supervisor")
    worker = WorkerHandle(tmp_path / "worker.log", command=[sys.executable, "-c", FLOODING_WORKER])
    await worker.start({}, threads=1)
    received = [message async for message in worker.messages()]
    assert await worker.wait() == 0, (tmp_path / "worker.log").read_text()
    assert received == [Started(step=0, total_steps=9, steps_per_epoch=3, samples=96, validation_samples=8),
                        Log(level="info", message="still here"), Stopped(step=9)]
    warnings = _supervisor_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "malformed line" in warnings[0] and "not JSON" in warnings[0]
    counted = re.search(r"sent (\d+) more malformed lines \((\d+) in all\)", warnings[1])
    assert counted is not None, warnings[1]
    # 1 + 500 + the overlong line (one or two reads, as the stream splits it) + 3 at the end
    assert 504 <= int(counted.group(1)) <= 505 and int(counted.group(2)) == int(counted.group(1)) + 1
    assert "not a JSON object" in warnings[1]


async def test_malformed_lines_still_arriving_are_counted_each_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.training.supervisor")
    script = "import sys\nfor i in range(4):\n    sys.stdout.write('garbage %d\\n' % i)\n"
    worker = WorkerHandle(tmp_path / "worker.log", command=[sys.executable, "-c", script], malformed_report_seconds=0.0)
    await worker.start({}, threads=1)
    assert [message async for message in worker.messages()] == []
    await worker.wait()
    warnings = _supervisor_warnings(caplog)
    assert len(warnings) == 4, warnings
    assert [re.search(r"\((\d+) in all\)", w).group(1) for w in warnings[1:]] == ["2", "3", "4"]  # type: ignore[union-attr]


async def test_the_real_worker_reports_a_spec_it_cannot_use_as_a_typed_failure(tmp_path: Path) -> None:
    worker = WorkerHandle(tmp_path / "worker.log")
    await worker.start({"task_id": 1}, threads=1)
    received = [message async for message in worker.messages()]
    assert await worker.wait() == 1
    assert len(received) == 1 and isinstance(received[0], Failed), received
    assert received[0].permanent is False and "KeyError" in received[0].error and received[0].traceback
