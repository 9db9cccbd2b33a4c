"""The volunteer's donation preferences: which settings they are, where each value comes from, and one way to change them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from app.config import (
    CONFIG_FILE_NAME,
    ENV_PREFIX,
    SPEC_BY_NAME,
    Settings,
    load_settings,
)
from app.errors import ConfigError
from app.runtime_files import write_private
from app.settings_file import read_local, update_local

PREFS: tuple[str, ...] = ("paused", "cpu_threads", "ram_limit_mb", "gpu_memory_limit_mb", "gpus", "idle_only",
                          "idle_minutes", "schedule", "pause_on_battery", "max_gpu_temperature", "dataset_dirs",
                          "sandbox_builtin", "dataset_cache_gb")

WHOLE = ""  # the key of a problem that belongs to no single preference (the merged settings do not load)

Origin = Literal["default", "file", "environment", "command line"]


@dataclass(frozen=True)
class Pref:
    """One preference as a form shows it: its current value as text, where it comes from, and whether it may change."""

    name: str
    checkbox: bool
    text: str
    checked: bool
    default: str
    help: str
    origin: Origin
    source: str
    locked_by: str | None


def is_checkbox(name: str) -> bool:
    """True for a yes/no preference (its default is a bool)."""
    return isinstance(SPEC_BY_NAME[name].default, bool)


def as_text(value: Any) -> str:
    """A value in the syntax `aifarm prefs set` accepts ('' for none)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        joiner = os.pathsep if value and isinstance(value[0], PurePath) else ", "
        return joiner.join(str(item) for item in value)
    return str(value)


def origin(settings: Settings, name: str) -> Origin:
    """Where the effective value of a setting comes from."""
    source = settings.sources.get(name)
    if source is None:
        return "default"
    if source == "environment":
        return "environment"
    if source == "command line":
        return "command line"
    return "file"


def locked_by(settings: Settings, name: str) -> str | None:
    """What fixes a setting above any settings file (an environment variable or a flag), or None."""
    kind = origin(settings, name)
    if kind == "environment":
        return f"set by the environment variable {ENV_PREFIX}{name.upper()}"
    if kind == "command line":
        return f"set by the --{name.replace('_', '-')} flag"
    return None


def describe_prefs(settings: Settings) -> list[Pref]:
    """Every preference with its current value, help and origin."""
    out = []
    for name in PREFS:
        spec = SPEC_BY_NAME[name]
        value = getattr(settings, name)
        out.append(Pref(name=name, checkbox=is_checkbox(name), text=as_text(value), checked=value is True,
                        default=as_text(spec.default), help=spec.help, origin=origin(settings, name),
                        source=settings.sources.get(name, "default"), locked_by=locked_by(settings, name)))
    return out


def apply_prefs(data_dir: Path, changes: Mapping[str, str | None]) -> dict[str, str]:
    """Set (text) or unset (None) preferences in the data dir's config.toml; returns the problems by name (WHOLE for
    one of the merged settings), empty when written. Each value goes through its setting's parser, then the merged
    settings must load; on any problem the file is left exactly as it was."""
    problems: dict[str, str] = {}
    set_values: dict[str, Any] = {}
    unset: list[str] = []
    for name, text in changes.items():
        if name not in PREFS:
            problems[name] = f"{name!r} is not a donation preference; choose from {', '.join(PREFS)}"
            continue
        if text is None:
            unset.append(name)
            continue
        try:
            parsed = SPEC_BY_NAME[name].parse(text)
        except ValueError as exc:
            problems[name] = str(exc)
            continue
        if parsed is None:
            unset.append(name)
        else:
            set_values[name] = [str(v) if isinstance(v, PurePath) else v for v in parsed] if isinstance(parsed, tuple) else parsed
    if problems or not (set_values or unset):
        return problems
    path = data_dir / CONFIG_FILE_NAME
    try:
        read_local(data_dir)
    except ConfigError as exc:
        return {WHOLE: str(exc)}
    try:
        before: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None
    try:
        update_local(data_dir, set_values, unset=tuple(unset))
        load_settings(cli={"data_dir": str(data_dir)})
    except ConfigError as exc:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            write_private(path, before)
        return {WHOLE: str(exc)}
    return {}
