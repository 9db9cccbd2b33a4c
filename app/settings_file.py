"""The data dir's config.toml: the settings that `aifarm join`, `leave` and `prefs` write for this agent."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from app.config import CONFIG_FILE_NAME, SPEC_BY_NAME
from app.errors import ConfigError
from app.runtime_files import write_private


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, except that TOML has no surrogate-pair escapes (keep
        # non-ASCII as UTF-8) and needs DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise ConfigError(f"cannot store a {type(value).__name__} in {CONFIG_FILE_NAME}")


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
    """Set and remove settings in the data dir's config.toml (mode 0600, written atomically)."""
    values = read_local(data_dir)
    for name, value in (set_values or {}).items():
        if name not in SPEC_BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = value
    for name in unset:
        values.pop(name, None)
    lines = ["# Written by aifarm (join, leave, prefs); settings here override the user's config file."]
    lines += [f"{name} = {_toml_value(values[name])}" for name in sorted(values)]
    path = data_dir / CONFIG_FILE_NAME
    write_private(path, "\n".join(lines) + "\n")
    return path
