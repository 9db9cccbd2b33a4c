"""Verify a bundle (signature with a trusted key, then the wheel's sha256) and install it into its own environment.

The environment is DATA_DIR/bundles/NAME-VERSION/: a virtual environment whose `aifarm-agent.pth` adds the agent's
own packages (torch among them, shared, never copied), with the wheel installed by pip with `--no-deps
--no-index`. A wheel is unpacked, never built: no code of the bundle runs while it is installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

import app
from app.bundles import keys
from app.bundles.manifest import BundleError, Manifest, read_wheel
from app.files import sha256_file

MARKER = "aifarm-bundle.json"


@dataclass(frozen=True)
class BundleEnv:
    """An installed bundle: its folder and the interpreter its workers run."""

    path: Path
    manifest: Manifest

    @property
    def python(self) -> Path:
        """The environment's interpreter."""
        return self.path / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def bundles_root(data_dir: Path) -> Path:
    """Where bundles live: environments, and their wheels under wheels/."""
    return data_dir / "bundles"


def wheel_path(data_dir: Path, manifest: Manifest) -> Path:
    """Where this machine keeps (and serves) a bundle's wheel."""
    return bundles_root(data_dir) / "wheels" / manifest.dir_name / manifest.wheel


def verify_signature(manifest_text: str, signature: str, trusted_public_key: str) -> None:
    """Raise BundleError unless the manifest is signed by the trusted key."""
    if not keys.verify(keys.decode_public(trusted_public_key), manifest_text.encode(), signature):
        raise BundleError("its manifest's signature does not verify with the trusted key "
                          "(signed by another key, or altered)")


def verify_wheel(path: Path, manifest: Manifest) -> None:
    """Raise BundleError unless the wheel is the one the manifest signs (sha256, name, version, recipes)."""
    if sha256_file(path) != manifest.sha256:
        raise BundleError("its wheel does not match the signed sha256 (changed after signing)")
    info = read_wheel(path)
    if (info.name, info.version, info.recipes) != (manifest.name, manifest.version, manifest.recipes):
        raise BundleError("its wheel's name, version or recipes differ from the signed manifest")


def missing_requirements(requires: tuple[str, ...]) -> list[str]:
    """The wheel's requirements that the agent's environment does not already satisfy."""
    missing = []
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            missing.append(f"{text} (unreadable)")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            found = version(requirement.name)
        except PackageNotFoundError:
            missing.append(str(requirement))
            continue
        if requirement.specifier and not requirement.specifier.contains(found, prereleases=True):
            missing.append(f"{requirement} (found {found})")
    return missing


def agent_paths() -> list[str]:
    """What a bundle environment adds after its own packages: this agent's code and packages."""
    paths = [str(Path(app.__file__).resolve().parent.parent), sysconfig.get_path("purelib"),
             sysconfig.get_path("platlib")]
    return list(dict.fromkeys(paths))


def installed(data_dir: Path, manifest: Manifest) -> BundleEnv | None:
    """The bundle's environment when it is installed here with this very wheel."""
    env = BundleEnv(bundles_root(data_dir) / manifest.dir_name, manifest)
    try:
        marker = json.loads((env.path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return env if marker.get("sha256") == manifest.sha256 and env.python.exists() else None


async def install(data_dir: Path, manifest: Manifest, wheel: Path) -> BundleEnv:
    """Create the bundle's environment from a verified wheel; raises BundleError (nothing is left behind)."""
    missing = missing_requirements(manifest.requires)
    if missing:
        raise BundleError(f"it needs {', '.join(missing)}, not installed in the agent's environment "
                          "(bundles get no packages of their own)")
    root = bundles_root(data_dir)
    final = root / manifest.dir_name
    staging = root / f".{manifest.dir_name}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        await _run(sys.executable, "-m", "venv", "--without-pip", str(staging))
        purelib = _purelib(staging)
        (purelib / "aifarm-agent.pth").write_text("\n".join(agent_paths()) + "\n")
        python = staging / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
        await _run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
                   "--disable-pip-version-check", "--no-warn-script-location", str(wheel))
        (staging / MARKER).write_text(json.dumps({"ref": manifest.ref, "sha256": manifest.sha256,
                                                  "key": manifest.key}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BundleEnv(final, manifest)


def remove(data_dir: Path, name: str, version_: str) -> bool:
    """Delete a bundle's environment and wheel; True when there was something to delete."""
    root = bundles_root(data_dir)
    env = root / f"{name}-{version_}"
    wheels = root / "wheels" / f"{name}-{version_}"
    found = env.exists() or wheels.exists()
    shutil.rmtree(env, ignore_errors=True)
    shutil.rmtree(wheels, ignore_errors=True)
    return found


def _purelib(env: Path) -> Path:
    if sys.platform == "win32":
        return env / "Lib" / "site-packages"
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
    output, _ = await process.communicate()
    if process.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise BundleError(f"installing failed ({' '.join(command[1:3])}): {tail[0][:300]}")

