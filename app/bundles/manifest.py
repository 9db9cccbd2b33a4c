"""A bundle's manifest: what a wheel provides (name, version, recipes, sha256), read from the wheel without running it."""

from __future__ import annotations

import configparser
import json
import re
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from app.files import sha256_file
from app.training.catalog import ENTRY_POINT_GROUP

FORMAT = 1
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_!-]{0,63}$")
WHEEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,250}\.whl$")
MAX_WHEEL_BYTES = 512 << 20


class BundleError(Exception):
    """A bundle, its wheel or its signature is not acceptable; the message says why."""


@dataclass(frozen=True)
class BundleRef:
    """A bundle as a task names it: NAME, or NAME==VERSION."""

    name: str
    version: str | None

    def __str__(self) -> str:
        return f"{self.name}=={self.version}" if self.version else self.name


def parse_ref(text: object) -> BundleRef:
    """`NAME` or `NAME==VERSION`; raises ValueError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a bundle name, or NAME==VERSION")
    name, sep, version = text.strip().partition("==")
    if not NAME.match(name) or (sep and not VERSION.match(version)):
        raise ValueError(f"{text[:120]!r} is not a bundle name or NAME==VERSION")
    return BundleRef(name, version if sep else None)


@dataclass(frozen=True)
class Manifest:
    """What is signed: the bundle's identity, its recipes and requirements, the wheel's sha256, the signing key."""

    name: str
    version: str
    wheel: str
    sha256: str
    recipes: tuple[str, ...]
    requires: tuple[str, ...]
    publisher: str
    key: str  # the fingerprint of the key that signs it

    @property
    def ref(self) -> str:
        """NAME==VERSION."""
        return f"{self.name}=={self.version}"

    @property
    def dir_name(self) -> str:
        """Its folder and wheel name under DATA_DIR/bundles/."""
        return f"{self.name}-{self.version}"

    def models(self) -> tuple[str, ...]:
        """The model recipes it provides."""
        return tuple(r.partition(".")[2] for r in self.recipes if r.startswith("model."))

    def datasets(self) -> tuple[str, ...]:
        """The dataset recipes it provides."""
        return tuple(r.partition(".")[2] for r in self.recipes if r.startswith("dataset."))

    def canonical(self) -> bytes:
        """The exact bytes that are signed and stored."""
        body = {"format": FORMAT, "name": self.name, "version": self.version, "wheel": self.wheel,
                "sha256": self.sha256, "recipes": list(self.recipes), "requires": list(self.requires),
                "publisher": self.publisher, "key": self.key}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(text: str) -> Manifest:
    """A stored manifest back; raises BundleError when it is malformed."""
    try:
        data = json.loads(text)
        manifest = Manifest(str(data["name"]), str(data["version"]), str(data["wheel"]), str(data["sha256"]),
                            tuple(str(r) for r in data["recipes"]), tuple(str(r) for r in data["requires"]),
                            str(data["publisher"]), str(data["key"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"the bundle manifest is malformed: {exc}") from None
    if data.get("format") != FORMAT or not NAME.match(manifest.name) or not VERSION.match(manifest.version) \
            or not WHEEL.match(manifest.wheel):
        raise BundleError("the bundle manifest is malformed: unknown format or bad name/version")
    return manifest


@dataclass(frozen=True)
class WheelInfo:
    """What a wheel declares in its metadata."""

    name: str
    version: str
    recipes: tuple[str, ...]
    requires: tuple[str, ...]


def read_wheel(path: Path) -> WheelInfo:
    """Name, version, `aifarm.recipes` entry points and requirements of a wheel, read as data; raises BundleError."""
    if not WHEEL.match(path.name):
        raise BundleError(f"{path.name} is not a wheel (.whl); bundles are wheels only, never source packages")
    try:
        if path.stat().st_size > MAX_WHEEL_BYTES:
            raise BundleError(f"{path.name} is larger than {MAX_WHEEL_BYTES >> 20} MB")
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
            info_dir = next((n.split("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA")
                             and n.count("/") == 1), None)
            if info_dir is None:
                raise BundleError(f"{path.name} has no .dist-info/METADATA: not a wheel")
            metadata = HeaderParser().parsestr(wheel.read(f"{info_dir}/METADATA").decode("utf-8"))
            points = wheel.read(f"{info_dir}/entry_points.txt").decode("utf-8") \
                if f"{info_dir}/entry_points.txt" in names else ""
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, KeyError) as exc:
        raise BundleError(f"cannot read {path.name} as a wheel: {exc}") from None
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # entry point names are case-sensitive
    try:
        parser.read_string(points)
    except configparser.Error as exc:
        raise BundleError(f"{path.name}: entry_points.txt does not parse: {exc}") from None
    recipes = tuple(sorted(k for k in (parser[ENTRY_POINT_GROUP] if parser.has_section(ENTRY_POINT_GROUP) else {})
                           if k.partition(".")[0] in ("model", "dataset") and k.partition(".")[2]))
    if not recipes:
        raise BundleError(f"{path.name} provides no `{ENTRY_POINT_GROUP}` entry points (model.NAME or dataset.NAME)")
    name, version = metadata.get("Name", ""), metadata.get("Version", "")
    if not NAME.match(name) or not VERSION.match(version):
        raise BundleError(f"{path.name}: name {name!r} or version {version!r} is not acceptable")
    return WheelInfo(name, version, recipes, tuple(metadata.get_all("Requires-Dist") or ()))


def manifest_of(path: Path, publisher: str, key: str) -> Manifest:
    """The manifest of a wheel as its publisher signs it."""
    info = read_wheel(path)
    return Manifest(info.name, info.version, path.name, sha256_file(path), info.recipes, info.requires,
                    publisher, key)
