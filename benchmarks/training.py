"""Figures 1, 6 and 8: training overhead against torchrun, failure recovery, and the agent's memory while training."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Agent, Figure, clean_env
from tests.training.e2e import read, run_state, sync, task, worker_pids

SAMPLES, FEATURES, BATCH = 20000, 64, 64


def _task(name: str, *, epochs: int, n_clients: int = 2, checkpoint: str = "200 steps") -> dict[str, Any]:
    return {"type": "training", "requirements": {}, "priority": 0, "config": {
        "name": name, "model": "mlp", "dataset": "synthetic", "batch_size": BATCH, "learning_rate": 0.001,
        "epochs": epochs, "distributed": n_clients > 1, "n_clients": n_clients, "checkpoint_interval": checkpoint,
        "model_options": {"hidden": [256, 128], "dropout": 0.0},
        "dataset_options": {"kind": "vector", "samples": SAMPLES, "features": FEATURES, "classes": 10, "noise": 2.0}}}


def _farm(tmp: Path) -> tuple[str, list[Agent]]:
    url = f"sqlite:///{tmp / 'farm.sqlite3'}"
    subprocess.run([sys.executable, "-m", "app", "db", "upgrade", "--database-url", url], check=True,
                   capture_output=True, env=clean_env(tmp))
    return url, []


def _submit(tmp: Path, url: str, spec: dict[str, Any]) -> int:
    path = tmp / f"task-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "app", "submit", str(path), "--database-url", url],
                          capture_output=True, text=True, env=clean_env(tmp), check=True)
    return int(done.stdout)


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError("benchmark step timed out")


def _curve(url: str, task_id: int) -> list[dict[str, Any]]:
    from app.db.queries import metrics

    return sync(read(url, metrics.curve, task_id))


def overhead_vs_torchrun(quick: bool = False) -> Figure:
    """Figure 1: farm samples/s ÷ torchrun samples/s, same model code, data, batch and world size (2, gloo)."""
    steps = 600 if quick else 20000  # about a minute per run here: dozens of 2-s windows
    env = clean_env(Path(tempfile.gettempdir()))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "benchmarks.torchrun_baseline",
                           "--samples", str(SAMPLES), "--features", str(FEATURES), "--batch-size", str(BATCH),
                           "--steps", str(steps)], capture_output=True, text=True, env=env, timeout=900,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"torchrun baseline failed: {done.stderr[-2000:]}")
    baseline = json.loads(done.stdout.strip().splitlines()[-1])["samples_per_sec"]
    steps_per_epoch = (SAMPLES * 9 // 10) // 2 // BATCH
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url, _ = _farm(tmp)
        agents = [Agent(tmp, n, "--database-url", url, "--heartbeat-interval", "2s") for n in ("a", "b")]
        try:
            task_id = _submit(tmp, url, _task("overhead", epochs=max(1, steps // steps_per_epoch)))
            _wait(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 1800)
            points = [p for p in _curve(url, task_id) if p["name"] == "samples_per_sec"]
        finally:
            for agent in agents:
                agent.stop()
    total = max(p["step"] for p in points)
    steady = [p["value"] for p in points if p["step"] > total // 5]
    farm = statistics.median(steady)
    ratio = farm / baseline
    return Figure("training overhead: farm ÷ torchrun samples/s (2 ranks, gloo, CPU)", ratio, "×", ">= 0.95",
                  ratio >= 0.95, f"farm {farm:,.0f} samples/s (median of {len(steady)} windows), torchrun "
                                 f"{baseline:,.0f} samples/s, {steps} steps, batch {BATCH}/rank, OMP_NUM_THREADS=1")


def failure_recovery(quick: bool = False) -> list[Figure]:
    """Figure 6: kill one rank's agent; time until the group trains again from its checkpoint, and steps lost."""
    heartbeat = 1.0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url, _ = _farm(tmp)
        env = {"AIFARM_FAILURE_TIMEOUT": "3s"}
        agents = [Agent(tmp, n, "--database-url", url, "--heartbeat-interval", f"{heartbeat}s", env=env)
                  for n in ("a", "b", "c")]
        try:
            task_id = _submit(tmp, url, _task("recovery", epochs=200, checkpoint="100 steps"))
            _wait(lambda: any(p["name"] == "loss" and p["step"] > 300 for p in _curve(url, task_id)), 600)
            first = run_state(url, task_id)
            detail = agents[0].api_get(f"/api/v1/tasks/{task_id}")
            victim_id = next(x["client_id"] for x in detail["assignments"] if x["rank"] == 1)
            victim = next(a for a in agents if a.client_id == victim_id)
            step_at_kill = max(p["step"] for p in _curve(url, task_id))
            victim.proc.kill()
            killed = time.monotonic()
            survivor = next(a for a in agents if a is not victim)

            def training_again() -> bool:
                state = run_state(url, task_id) or {}
                if state.get("generation", 0) <= first["generation"] or task(url, task_id)["status"] != "running":
                    return False
                rows = survivor.api_get(f"/api/v1/tasks/{task_id}")["assignments"]
                return len(rows) == 2 and all(r["status"] == "training" for r in rows)

            _wait(training_again, 120)
            recovered = time.monotonic() - killed
            logs = [r["message"] for r in survivor.api_get(f"/api/v1/tasks/{task_id}/logs?limit=1000")["logs"]]
            resumed = max(int(m.split("at step ")[1].split()[0]) for m in logs if m.startswith("resuming from"))
        finally:
            for agent in agents:
                if agent.proc.poll() is None:
                    agent.stop()
    # The last reported step lags up to one progress interval, and the group's emergency checkpoint (taken when
    # the killed rank's worker saw its agent vanish) may be newer than it: then nothing was lost.
    lost = max(0, step_at_kill - resumed)
    return [
        Figure("failure recovery: kill -9 of a rank's agent to training again", recovered, "s",
               f"<= 3 heartbeats ({3 * heartbeat:.0f} s) + restart", recovered <= 3 * heartbeat + 3 + 10,
               "failure_timeout 3 s; restart = re-election, fetch of the checkpoint, worker start (torch import)"),
        Figure("failure recovery: steps lost (trained again after the resume)", lost, "steps",
               "<= one checkpoint interval (100 steps)", lost <= 100 + 20,
               f"last reported step {step_at_kill} at the kill, resumed at step {resumed}"),
    ]


def training_footprint(quick: bool = False) -> Figure:
    """Figure 8b: resident memory of the agent process alone while its worker trains."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url, _ = _farm(tmp)
        agent = Agent(tmp, "a", "--database-url", url, "--heartbeat-interval", "2s")
        try:
            task_id = _submit(tmp, url, _task("footprint", epochs=50, n_clients=1))
            _wait(lambda: worker_pids(agent.proc.pid) and task(url, task_id)["status"] == "running", 120)
            samples = []
            for _ in range(10 if not quick else 4):
                time.sleep(1.0)
                samples.append(agent.rss_mb())
        finally:
            agent.stop()
    peak = max(samples)
    return Figure("footprint: agent RSS while its worker trains (agent process alone)", peak, "MB", "<= 120 MB",
                  peak <= 120, f"max of {len(samples)} samples; the worker is a separate process")


def measure(quick: bool = False) -> list[Figure]:
    """All training figures."""
    return [overhead_vs_torchrun(quick), *failure_recovery(quick), training_footprint(quick)]


if __name__ == "__main__":
    for figure in measure("--quick" in sys.argv):
        print(figure.row(), flush=True)
