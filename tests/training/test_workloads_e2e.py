"""Real workloads on real agents: a transformer language model on this project's own text, a ResNet on generated
images, models pulled as safetensors with their description, tried from the command line and the dashboard."""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.db.queries import models as model_queries
from tests.agent.harness import AgentProcess, agent_env, wait_for
from tests.training.e2e import read, submit, task, task_logs, upgraded
from tests.training.shapes import draw, write_shapes
from tests.web.test_pages import Browser

FAST = ("--heartbeat-interval", "1s")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _done(url: str, task_id: int) -> bool:
    return task(url, task_id)["status"] in ("completed", "failed", "error")


def corpus(folder: Path) -> Path:
    """README.md and docs/*.md, one UTF-8 file in a folder that will be a dataset_dir."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    path = folder / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _unigram_perplexity(source: Path) -> float:
    """exp(entropy) of the text's byte frequencies: what a model that knows only those would score."""
    data = source.read_bytes()
    counts = Counter(data)
    return math.exp(-sum(n / len(data) * math.log(n / len(data)) for n in counts.values()))


def lm_task(source: Path, name: str = "readme-lm", **model_options: int) -> dict:
    """A 2-client transformer (about 1.2 M parameters, context 128) on byte-tokenized text."""
    return {"type": "training", "requirements": {}, "priority": 0, "config": {
        "name": name, "model": "transformer", "dataset": "text", "batch_size": 16, "learning_rate": 0.002,
        "epochs": 12, "distributed": True, "n_clients": 2, "optimizer": "adamw", "lr_schedule": "cosine",
        "warmup_steps": 30, "grad_clip": 1.0, "precision": "auto", "checkpoint_interval": "100 steps",
        "model_options": {"layers": 6, "heads": 4, "embedding": 128, "context": 128, **model_options},
        "dataset_options": {"source": str(source), "tokenizer": "byte", "seq_len": 128}}}


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=agent_env(tmp_path, env), timeout=300)


def _perplexities(url: str, task_id: int) -> list[float]:
    """Validation perplexity at each evaluation (the end of each epoch), from the task log."""
    found = (re.match(r"epoch \d+ ended at step \d+: .*val_perplexity ([0-9.]+)", line) for line in task_logs(url, task_id))
    return [float(m.group(1)) for m in found if m]


@pytest.mark.timeout(900)
async def test_two_agent_transformer_learns_the_readme_and_is_tried(tmp_path: Path, sqlite_url: str) -> None:
    """2 agents train a transformer on the README and docs (byte tokens): it completes, validation perplexity
    falls at least 2x from the first evaluation to well below the text's byte-unigram perplexity, the model is
    safetensors + JSON, and `models try` prints text."""
    source = corpus(tmp_path / "datasets")
    dirs = {"AIFARM_DATASET_DIRS": str(source.parent)}
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST, env=dirs)
    b = AgentProcess(tmp_path, "b", "--database-url", sqlite_url, *FAST, env=dirs)
    try:
        task_id = submit(tmp_path, sqlite_url, lm_task(source), env=dirs)
        wait_for(lambda: _done(sqlite_url, task_id), 600, "the transformer task to end")
        row = task(sqlite_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        ppl = _perplexities(sqlite_url, task_id)
        # Learned beyond the text's byte frequencies (a model of those alone scores the unigram perplexity), by a
        # margin that does not depend on how long the README has grown.
        assert len(ppl) == 12 and ppl[0] / ppl[-1] >= 2.0 and ppl[-1] <= 0.6 * _unigram_perplexity(source), ppl
        assert row["result"]["metrics"]["val_perplexity"] == pytest.approx(ppl[-1], rel=1e-3)

        version = await read(sqlite_url, model_queries.get_version, "readme-lm", None)
        assert version["url"].endswith(".safetensors")
        owner = a if version["url"].split("/")[2] == a.client_id else b
        weights = owner.data_dir / version["url"].split("/", 3)[3]
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == version["hash"]
        assert json.loads(weights.with_suffix(".json").read_text())["tokenizer"] == {"type": "byte"}

        out = tmp_path / "pulled"
        pulled = _cli(tmp_path, "models", "pull", "readme-lm", "-o", str(out), "--database-url", sqlite_url,
                      "--data-dir", str(b.data_dir), "--quiet")
        assert pulled.returncode == 0, pulled.stderr
        files = sorted(p.name for p in out.iterdir())
        assert files == ["readme-lm-v1.json", "readme-lm-v1.safetensors"]
        assert hashlib.sha256((out / files[1]).read_bytes()).hexdigest() == version["hash"]
        meta = json.loads((out / files[0]).read_text())
        assert meta["recipe"] == "transformer" and meta["options"]["context"] == 128 and meta["n_classes"] == 256

        tried = _cli(tmp_path, "models", "try", "readme-lm", "--prompt", "The agent", "--max-tokens", "80",
                     "--database-url", sqlite_url, "--data-dir", str(a.data_dir))
        assert tried.returncode == 0, tried.stderr
        assert len(tried.stdout.strip()) >= 20

        wrong = _cli(tmp_path, "models", "try", "readme-lm", "--image", str(out / files[0]),
                     "--database-url", sqlite_url, "--data-dir", str(a.data_dir))
        assert wrong.returncode != 0 and wrong.stderr.strip().count("\n") == 0
        assert "is a language model (transformer): give --prompt" in wrong.stderr

        browser = Browser(a)
        page = browser.get("/models")
        assert 'data-model-try' in page.body
        answer = browser.post(f"/models/{version['id']}/try", {"prompt": "AI Farm", "max_tokens": "40",
                                                               "temperature": "0.5", "csrf_token": browser.csrf("/models")})
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
        assert len(answer.body.strip()) >= 10
    finally:
        a.stop()
        b.stop()


@pytest.mark.timeout(600)
async def test_resnet_on_generated_shapes_reaches_ninety_percent(tmp_path: Path, sqlite_url: str) -> None:
    """A resnet on Pillow-drawn shapes (4 classes, .npy in dataset_dirs) reaches >= 90% validation accuracy; the
    model classifies an image file, and `models try` with a prompt says in one line that it is an image model."""
    images, labels = write_shapes(tmp_path / "datasets")
    dirs = {"AIFARM_DATASET_DIRS": str(images.parent)}
    await upgraded(sqlite_url)
    a = AgentProcess(tmp_path, "a", "--database-url", sqlite_url, *FAST, env=dirs)
    try:
        spec = {"type": "training", "requirements": {}, "priority": 0, "config": {
            "name": "shapes", "model": "resnet", "dataset": "npy", "batch_size": 32, "learning_rate": 0.003,
            "epochs": 5, "distributed": False, "n_clients": 1, "lr_schedule": "cosine", "validation_split": 0.2,
            "model_options": {"depth": 10, "width": 16},
            "dataset_options": {"images": str(images), "labels": str(labels)}}}
        task_id = submit(tmp_path, sqlite_url, spec, env=dirs)
        wait_for(lambda: _done(sqlite_url, task_id), 300, "the resnet task to end")
        row = task(sqlite_url, task_id)
        assert row["status"] == "completed", row["error_log"]
        assert row["result"]["metrics"]["val_accuracy"] >= 0.9

        square = tmp_path / "square.png"
        Image.fromarray(draw(1, np.random.default_rng(99))).save(square)
        tried = _cli(tmp_path, "models", "try", "shapes", "--image", str(square), "--database-url", sqlite_url,
                     "--data-dir", str(a.data_dir))
        assert tried.returncode == 0, tried.stderr
        assert tried.stdout.splitlines()[0].startswith("class 1: ")

        wrong = _cli(tmp_path, "models", "try", "shapes", "--prompt", "hello", "--database-url", sqlite_url,
                     "--data-dir", str(a.data_dir))
        assert wrong.returncode == 1 and wrong.stdout == ""
        assert wrong.stderr.strip() == ("aifarm: error: model shapes v1 is an image classifier (resnet): give "
                                        "--image FILE, not a prompt")
    finally:
        a.stop()


async def test_options_that_do_not_fit_are_refused_at_submit_with_the_field_named(tmp_path: Path,
                                                                                  sqlite_url: str) -> None:
    """A context shorter than the dataset's sequences, heads that do not divide the embedding, a bad precision:
    one line naming each field, and nothing is written."""
    source = corpus(tmp_path / "datasets")
    dirs = {"AIFARM_DATASET_DIRS": str(source.parent)}
    await upgraded(sqlite_url)
    bad = lm_task(source, context=64, heads=5)
    bad["config"]["precision"] = "fp8"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    done = _cli(tmp_path, "submit", str(path), "--database-url", sqlite_url, env=dirs)
    assert done.returncode != 0 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("aifarm: error: invalid task (3 problems)")
    assert "config.precision: must be one of auto, fp32, bf16, fp16" in line
    assert "config.model_options.heads: must divide embedding (128); got 5" in line
    assert "config.model_options.context: is 64, shorter than the dataset's sequences" in line
    listed = _cli(tmp_path, "tasks", "--json", "--database-url", sqlite_url)
    assert json.loads(listed.stdout)["total"] == 0
