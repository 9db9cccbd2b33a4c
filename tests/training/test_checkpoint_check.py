"""Whether a checkpoint can be resumed from, checked by a real child process on real torch files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.files import sha256_file
from app.training.checkpoint_check import checkpoint_problem, state_problem


def _good(path: Path) -> Path:
    torch.save({"model": {"w": torch.ones(3)}, "optimizer": {"state": {}}, "epoch": 1, "step_in_epoch": 2,
                "step": 9, "rng": {}}, path)
    return path


async def test_a_resumable_checkpoint_has_no_problem(tmp_path: Path) -> None:
    """A whole checkpoint with its own sha256: resumable, as a full checkpoint and as a rank state."""
    path = _good(tmp_path / "good.pt")
    assert await checkpoint_problem(path, sha256_file(path), "full") is None
    assert await checkpoint_problem(path, sha256_file(path), "rank") is None


@pytest.mark.parametrize("damage,expected", [
    ("truncated", "cannot be loaded"), ("wrong keys", "lacks model, optimizer"), ("a list", "holds a list"),
    ("code in the pickle", "cannot be loaded"), ("sha256 mismatch", "does not match its sha256"),
])
async def test_unresumable_checkpoints_are_named(tmp_path: Path, damage: str, expected: str) -> None:
    """Files that match their recorded sha256 but cannot be resumed from (and a mismatching one) get a reason."""
    path = _good(tmp_path / "ckpt.pt")
    recorded: str | None = None
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "wrong keys":
        torch.save({"weights": torch.zeros(2)}, path)
    elif damage == "a list":
        torch.save([1, 2, 3], path)
    elif damage == "code in the pickle":
        torch.save({"model": Path("/")}, path)  # a class outside the weights_only allow-list
    else:
        recorded = "0" * 64
    problem = await checkpoint_problem(path, recorded or sha256_file(path), "full")
    assert problem is not None and expected in problem, problem
    assert len(problem) < 300


def test_state_problem_checks_the_position_types() -> None:
    """A position that is not an integer is a problem; a bool is not an integer here."""
    state = {"model": {}, "optimizer": {}, "epoch": 0, "step_in_epoch": 0, "step": 3}
    assert state_problem(state, "full") is None
    assert state_problem({**state, "step": "3"}, "full") == "holds a non-integer position"
    assert state_problem({**state, "epoch": True}, "full") == "holds a non-integer position"
    assert state_problem({**state, "model": [1]}, "full") == "holds no model or optimizer state"
    assert state_problem({"rng": 5}, "rank") == "holds no valid RNG state"
