"""Test bundles: real wheels written by the tests from a small recipe source, published through the real CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from tests.agent.harness import agent_env

RECIPE = '''
import json
import os
import socket

import torch


def _attempt(what, action):
    try:
        action()
    except Exception as exc:  # every refusal is recorded, whatever its kind
        return {"what": what, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"what": what, "ok": True, "error": ""}


def _read(path):
    with open(path, "rb") as handle:
        handle.read(1)


def _write(path):
    with open(path, "w") as handle:
        handle.write("written from inside the recipe")


def _connect(port):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=3):
        pass


def _probe(probe):
    results = [_attempt(f"read {p}", lambda p=p: _read(p)) for p in probe.get("read", [])]
    results += [_attempt(f"list {p}", lambda p=p: os.listdir(p)) for p in probe.get("list", [])]
    results += [_attempt(f"write {p}", lambda p=p: _write(p)) for p in probe.get("write", [])]
    results += [_attempt(f"connect {p}", lambda p=p: _connect(p)) for p in probe.get("connect", [])]
    with open(os.path.join(os.getcwd(), "probe.json"), "w") as handle:
        json.dump(results, handle)


def build(options, info):
    """A linear classifier; first it tries what options["probe"] lists and records each outcome."""
    if options.get("probe"):
        _probe(options["probe"])
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(info.input_shape[0], info.n_classes))
'''


def _record(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def build_wheel(folder: Path, name: str = "probe-recipes", version: str = "1.0", *, model: str = "probe_linear",
                requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel holding one model recipe as an `aifarm.recipes` entry point (written as a zip)."""
    module = name.replace("-", "_")
    dist = f"{module}-{version}"
    files = {
        f"{module}.py": RECIPE.encode(),
        f"{dist}.dist-info/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                                       + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}.dist-info/entry_points.txt": f"[aifarm.recipes]\nmodel.{model} = {module}:build\n".encode(),
    }
    record = "".join(f"{path},{_record(data)}\n" for path, data in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
    return path


def aifarm(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real `aifarm` command line."""
    done = subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=agent_env(tmp_path), timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def keygen(tmp_path: Path, name: str = "organiser") -> tuple[Path, str]:
    """A signing key file and its fingerprint."""
    path = tmp_path / f"{name}.key"
    done = aifarm(tmp_path, "bundles", "keygen", str(path), "--json")
    return path, json.loads(done.stdout)["fingerprint"]


def publish(tmp_path: Path, url: str, data_dir: Path, wheel: Path, key: Path) -> dict[str, Any]:
    """`aifarm bundles publish` from a data dir (its agent serves the wheel)."""
    done = aifarm(tmp_path, "bundles", "publish", str(wheel), "--key", str(key), "--publisher", "Test Lab",
                  "--database-url", url, "--data-dir", str(data_dir), "--json")
    published: dict[str, Any] = json.loads(done.stdout)
    return published


def bundle_task(name: str, bundle: str, *, n_clients: int = 1, probe: dict[str, Any] | None = None) -> dict[str, Any]:
    """A small task training the bundle's model on synthetic data."""
    return {
        "type": "training", "requirements": {"min_cpu_cores": 1}, "priority": 0,
        "config": {
            "name": name, "bundle": bundle, "model": "probe_linear", "dataset": "synthetic", "batch_size": 32,
            "learning_rate": 0.01, "epochs": 2, "distributed": n_clients > 1, "n_clients": n_clients,
            "checkpoint_interval": "20 steps", "model_options": {"probe": probe} if probe else {},
            "dataset_options": {"samples": 1024, "features": 8, "classes": 3, "noise": 1.0},
        },
    }
