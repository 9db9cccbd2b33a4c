"""What the About page tells: this product's version and licence, and each runtime dependency's version and licence.

Read from the installed distribution's metadata when it is the one that holds this code (a wheel), and from the
checkout's pyproject.toml and docs/LICENSE otherwise (a checkout or an editable install, whose metadata may be older).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from app import __version__

DISTRIBUTION = "ai-farm"
_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA_MARKER = re.compile(r"\bextra\s*==")
MAX_LICENSE_FIELD = 80  # a longer License field is the whole licence text pasted in, not a name


@dataclass(frozen=True)
class Notice:
    """One runtime dependency: its name, the installed version (None when missing) and its licence."""

    name: str
    version: str | None
    license: str


@dataclass(frozen=True)
class About:
    """This product's version, licence (name and text) and its dependencies' notices."""

    version: str
    license: str
    license_text: str
    notices: list[Notice]


def _own_distribution() -> importlib.metadata.Distribution | None:
    """The installed ai-farm distribution, only when it is the one whose files this code is."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    try:
        holds_this = Path(str(dist.locate_file("app/__init__.py"))).resolve() == _PACKAGE / "__init__.py"
    except (OSError, ValueError):
        return None
    return dist if holds_this else None


def _field(dist: importlib.metadata.Distribution, name: str) -> str:
    """One metadata field's text; '' when the distribution does not state it."""
    meta = dist.metadata
    return str(meta[name] or "").strip() if name in meta else ""


def _license_of(dist: importlib.metadata.Distribution) -> str:
    """License-Expression, else a short License field, else the licence classifiers."""
    expression = _field(dist, "License-Expression")
    if expression:
        return expression
    field = _field(dist, "License")
    if field and "\n" not in field and len(field) <= MAX_LICENSE_FIELD:
        return field
    classifiers = [c.rsplit("::", 1)[-1].strip() for c in dist.metadata.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return ", ".join(classifiers) or "not stated"


def requirement_name(requirement: str) -> str | None:
    """The distribution name of a runtime requirement ('sqlalchemy[asyncio]>=2' -> 'sqlalchemy'); None for an extra's."""
    name, _, marker = requirement.partition(";")
    if _EXTRA_MARKER.search(marker):
        return None
    match = _REQUIREMENT_NAME.match(name.strip())
    return match.group(0) if match else None


def notice(name: str) -> Notice:
    """The installed version and licence of one distribution."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return Notice(name, None, "not installed")
    return Notice(_field(dist, "Name") or name, dist.version, _license_of(dist))


def _license_text(dist: importlib.metadata.Distribution) -> str:
    """The licence files a wheel carries in its dist-info (licenses/...), joined."""
    def is_license(path: str) -> bool:
        return ".dist-info/licenses/" in path or (".dist-info/" in path
                                                   and path.rsplit("/", 1)[-1].upper().startswith(("LICENSE", "LICENCE")))

    return "\n".join(file.read_text(encoding="utf-8") for file in dist.files or [] if is_license(file.as_posix()))


def about() -> About:
    """Version, licence and third-party notices of the running code."""
    dist = _own_distribution()
    if dist is not None:
        requirements = dist.requires or []
        license_name, license_text = _license_of(dist), _license_text(dist)
    else:
        pyproject = _CHECKOUT / "pyproject.toml"
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}) if pyproject.is_file() else {}
        requirements = project.get("dependencies", [])
        declared = project.get("license")
        license_name = declared if isinstance(declared, str) else "not stated"
        files = [_CHECKOUT / name for name in project.get("license-files", [])]
        license_text = "\n".join(f.read_text(encoding="utf-8") for f in files if f.is_file())
    names = sorted({name for name in map(requirement_name, requirements) if name}, key=str.lower)
    return About(__version__, license_name, license_text, [notice(name) for name in names])
