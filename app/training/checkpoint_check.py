"""Whether a checkpoint can be resumed from: loaded (sha256 checked, weights_only) by a short-lived child
process, since only worker processes import torch."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

CheckpointKind = Literal["full", "rank"]
RESUME_KEYS = ("model", "optimizer", "epoch", "step_in_epoch", "step")
CHECK_TIMEOUT_SECONDS = 120.0
MAX_PROBLEM_CHARS = 300


def state_problem(state: Any, kind: CheckpointKind) -> str | None:
    """Why a loaded object is not a resumable checkpoint of this kind, or None when it is."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a checkpoint"
    if kind == "rank":
        return None if isinstance(state.get("rng", {}), dict) else "holds no valid RNG state"
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict):
        return "holds no model or optimizer state"
    if not all(isinstance(state[key], int) and not isinstance(state[key], bool)
               for key in ("epoch", "step_in_epoch", "step")):
        return "holds a non-integer position"
    return None


def file_problem(path: Path, sha256: str, kind: CheckpointKind) -> str | None:
    """Why a checkpoint file cannot be resumed from (sha256, loading, content), or None (imports torch)."""
    from app.training.worker import load_checkpoint

    try:
        state = load_checkpoint(path, sha256)
    except ValueError as exc:
        return str(exc)
    except Exception as exc:  # torch reports a broken file with many exception types
        return f"cannot be loaded ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
    return state_problem(state, kind)


async def checkpoint_problem(path: Path, sha256: str, kind: CheckpointKind) -> str | None:
    """Why a local checkpoint cannot be resumed from, asked of a child process; None when it can, or when the
    check itself could not run (the worker then reports what it finds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.training.checkpoint_check", str(path), sha256, kind,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CHECK_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        log.warning("checking checkpoint %s took over %.0f s; not checked", path.name, CHECK_TIMEOUT_SECONDS)
        return None
    try:
        answer = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
        problem = answer["problem"]
    except (ValueError, IndexError, KeyError, TypeError):
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        log.warning("could not check checkpoint %s (exit %s: %s)", path.name, process.returncode, last[0][:200])
        return None
    return str(problem)[:MAX_PROBLEM_CHARS] if problem is not None else None


def main(argv: list[str]) -> int:
    """Child entry point: PATH SHA256 KIND in, one JSON line {"problem": str | null} out."""
    if len(argv) != 3 or argv[2] not in ("full", "rank"):
        print("usage: python -m app.training.checkpoint_check PATH SHA256 full|rank", file=sys.stderr)
        return 2
    kind: CheckpointKind = "full" if argv[2] == "full" else "rank"
    print(json.dumps({"problem": file_problem(Path(argv[0]), argv[1], kind)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
