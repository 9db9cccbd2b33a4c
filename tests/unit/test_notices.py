"""The About page's facts, from a checkout and from an installed wheel's dist-info."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from app import __version__
from app.notices import about, requirement_name

ROOT = Path(__file__).resolve().parents[2]
PRINT_ABOUT = ("import dataclasses, json; from app.notices import about; "
               "print(json.dumps(dataclasses.asdict(about())))")


def test_requirement_names() -> None:
    """Extras and version specifiers are not part of the name; an extra's requirement is no runtime dependency."""
    assert requirement_name("sqlalchemy[asyncio]>=2.0.25") == "sqlalchemy"
    assert requirement_name("nvidia-ml-py>=12") == "nvidia-ml-py"
    assert requirement_name("pywin32>=306; sys_platform == 'win32'") == "pywin32"
    assert requirement_name("pytest>=8; extra == 'test'") is None
    assert requirement_name("pytest>=8 ; extra=='test'") is None


def test_from_the_checkout() -> None:
    """Here the code runs from the checkout: pyproject.toml's licence and dependencies, docs/LICENSE's text."""
    info = about()
    assert info.version == __version__ and info.license == "MIT"
    assert info.license_text == (ROOT / "docs" / "LICENSE").read_text(encoding="utf-8")
    names = {notice.name.lower(): notice for notice in info.notices}
    assert {"aiohttp", "aiohttp-sse", "sqlalchemy", "jinja2", "zeroconf"} <= set(names)
    assert "torch" not in names  # the train extra is not a runtime dependency of the base install
    assert "pytest" not in names and "playwright" not in names
    assert names["sqlalchemy"].version == importlib.metadata.version("sqlalchemy")
    assert names["sqlalchemy"].license == "MIT"  # its License-Expression
    assert names["jinja2"].license == "BSD License"  # no expression, no License field: its classifier


def test_from_an_installed_wheel(tmp_path: Path) -> None:
    """Installed as a wheel lays it out (the package beside its dist-info): the metadata is read, not a checkout."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "app", site / "app", ignore=shutil.ignore_patterns("__pycache__"))
    dist_info = site / f"ai_farm-{__version__}.dist-info"
    (dist_info / "licenses" / "docs").mkdir(parents=True)
    (dist_info / "licenses" / "docs" / "LICENSE").write_text("MIT License\n\nthe wheel's copy\n", encoding="utf-8")
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.4\nName: ai-farm\nVersion: {__version__}\nLicense-Expression: MIT\n"
        "License-File: docs/LICENSE\nRequires-Dist: aiohttp>=3.9\nRequires-Dist: zeroconf>=0.131\n"
        "Requires-Dist: no-such-package-here>=1\nProvides-Extra: test\nRequires-Dist: pytest>=8; extra == 'test'\n",
        encoding="utf-8")
    record = [path.relative_to(site).as_posix() for path in site.rglob("*") if path.is_file()]
    (dist_info / "RECORD").write_text("".join(f"{line},,\n" for line in record + [f"{dist_info.name}/RECORD"]),
                                      encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", PRINT_ABOUT], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    info = json.loads(result.stdout)
    assert info["license"] == "MIT" and info["license_text"] == "MIT License\n\nthe wheel's copy\n"
    assert [(n["name"], n["version"]) for n in info["notices"]] == [
        ("aiohttp", importlib.metadata.version("aiohttp")), ("no-such-package-here", None),
        ("zeroconf", importlib.metadata.version("zeroconf"))]
    assert info["notices"][1]["license"] == "not installed"
