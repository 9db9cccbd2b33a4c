"""The data dir's config.toml: the settings that `aifarm join`, `leave` and `prefs` write for this agent."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from app.config import CONFIG_FILE_NAME, SPEC_BY_NAME
from app.errors import ConfigError
from app.runtime_files import write_private


def read_local(data_dir: Path) -> dict[str, Any]:
    """The data dir's settings (empty when there is no file)."""
    path = data_dir / CONFIG_FILE_NAME
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None


def update_local(data_dir: Path, set_values: dict[str, Any] | None = None, unset: tuple[str, ...] = ()) -> Path:
    """Set and remove settings in the data dir's config.toml (mode 0600, written atomically), keeping its comments."""
    path = data_dir / CONFIG_FILE_NAME
    read_local(data_dir)  # one clear error for a file that cannot be used, before anything is written
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
        document.add(tomlkit.comment("Written by aifarm (join, leave, prefs); settings here override the user's config file."))
    for name, value in (set_values or {}).items():
        if name not in SPEC_BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        if not isinstance(value, (bool, int, float, str, list, tuple)):
            raise ConfigError(f"cannot store a {type(value).__name__} in {CONFIG_FILE_NAME}")
        document[name] = list(value) if isinstance(value, tuple) else value
    for name in unset:
        if name in document:
            del document[name]
    write_private(path, tomlkit.dumps(document))
    return path
