"""Workload figure: the transformer's tokens/s per member on the farm (2 agents, gloo, CPU) ÷ a plain PyTorch loop."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Agent, Figure, clean_env
from benchmarks.training import _curve, _farm, _wait
from tests.training.e2e import task

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"layers": 6, "heads": 4, "embedding": 128, "context": 128}
BATCH, SEQ_LEN = 16, 128


def _corpus(folder: Path) -> Path:
    text = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    path = folder / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _task(source: Path, epochs: int) -> dict[str, Any]:
    return {"type": "training", "requirements": {}, "priority": 0, "config": {
        "name": "workload-lm", "model": "transformer", "dataset": "text", "batch_size": BATCH, "learning_rate": 0.001,
        "epochs": epochs, "distributed": True, "n_clients": 2, "optimizer": "adamw", "grad_clip": 1.0,
        "checkpoint_interval": "100000 steps", "model_options": OPTIONS,
        "dataset_options": {"source": str(source), "tokenizer": "byte", "seq_len": SEQ_LEN}}}


def _submit(tmp: Path, url: str, spec: dict[str, Any], env: dict[str, str]) -> int:
    path = tmp / "task.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "app", "submit", str(path), "--database-url", url],
                          capture_output=True, text=True, env=clean_env(tmp, env), check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return int(done.stdout)


def _baseline(steps: int, tmp: Path) -> float:
    # At the workers' own priority (nice 19), so that other load on the machine weighs on both alike.
    done = subprocess.run(["nice", "-n", "19", sys.executable, "-m", "benchmarks.workload_baseline", "--options",
                           json.dumps(OPTIONS),
                           "--batch-size", str(BATCH), "--seq-len", str(SEQ_LEN), "--steps", str(steps)],
                          capture_output=True, text=True, env=clean_env(tmp, {"OMP_NUM_THREADS": "1"}), timeout=900,
                          cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"baseline loop failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_sec"])


def transformer_tokens(quick: bool = False) -> Figure:
    """Per-member farm tokens/s (median of the progress windows after the first fifth) ÷ the plain loop's."""
    epochs = 3 if quick else 12
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data = tmp / "datasets"
        data.mkdir()
        source = _corpus(data)
        url, _ = _farm(tmp)
        env = {"AIFARM_DATASET_DIRS": str(data), "AIFARM_CPU_THREADS": "1"}
        agents = [Agent(tmp, n, "--database-url", url, "--heartbeat-interval", "2s", env=env) for n in ("a", "b")]
        try:
            task_id = _submit(tmp, url, _task(source, epochs), env)
            _wait(lambda: task(url, task_id)["status"] in ("completed", "failed", "error"), 1800)
            row = task(url, task_id)
            points = [p for p in _curve(url, task_id) if p["name"] == "samples_per_sec"]
        finally:
            for agent in agents:
                agent.stop()
        if row["status"] != "completed":
            raise RuntimeError(f"the workload task ended {row['status']}: {row['error_log']}")
        baseline = _baseline(40 if quick else 150, tmp)
    total = max(p["step"] for p in points)
    steady = [p["value"] for p in points if p["step"] > total // 5] or [p["value"] for p in points]
    farm = statistics.median(steady) / 2 * SEQ_LEN
    ratio = farm / baseline
    return Figure("workloads: transformer tokens/s per member, farm ÷ plain PyTorch loop (2 agents, gloo, CPU)", ratio,
                  "×", ">= 0.9", ratio >= 0.9,
                  f"farm {farm:,.0f} tokens/s per member (median of {len(steady)} windows), plain loop "
                  f"{baseline:,.0f} tokens/s; {OPTIONS}, batch {BATCH}x{SEQ_LEN}, 1 thread each, both at nice 19")


def measure(quick: bool = False) -> list[Figure]:
    """The workload figures."""
    return [transformer_tokens(quick)]


if __name__ == "__main__":
    for figure in measure("--quick" in sys.argv):
        print(figure.row(), flush=True)
