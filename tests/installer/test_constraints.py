"""installer/constraints.txt: every runtime dependency pinned to a version its requirement allows, and tested."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "installer" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = pinned
    return pins


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in project["dependencies"]]


def test_every_runtime_dependency_is_pinned_within_its_requirement() -> None:
    """Each dependency but torch (chosen by AIFARM_TORCH_SPEC) has an exact pin that its specifier accepts."""
    pins = _pins()
    for requirement in _runtime_requirements():
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{requirement.name} has no pin in installer/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_the_test_environment_runs_the_pinned_versions() -> None:
    """tests/run.sh installs through the constraints, so what the suite tests is what volunteers get."""
    for name, pinned in _pins().items():
        assert version(name) == pinned, f"{name}: installed {version(name)}, pinned {pinned}"
