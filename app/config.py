"""One frozen, validated settings object: defaults < config file < AIFARM_* environment < CLI flags."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from app.errors import ConfigError

ENV_PREFIX = "AIFARM_"
CONFIG_FILE_NAME = "config.toml"


def default_data_dir() -> Path:
    """The per-user data directory (database, checkpoints, tokens)."""
    return Path(platformdirs.user_data_dir("aifarm", appauthor=False))


def default_config_file() -> Path:
    """The per-user settings file."""
    return Path(platformdirs.user_config_dir("aifarm", appauthor=False)) / CONFIG_FILE_NAME


_NUMBER = r"[0-9]{1,30}(?:\.[0-9]{1,30})?"
_BARE_SECONDS = re.compile(rf"{_NUMBER}", re.ASCII)
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([a-z]+)", re.ASCII)
_DURATION_UNITS = {
    **dict.fromkeys(("d", "day", "days"), 86400.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("ms", "msec", "millisecond", "milliseconds"), 0.001),
}
DURATION_FORMS = "a duration such as 5s, 2 min, 1h30m, 1.5h, 500ms, 1d or a number of seconds"
_FARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def format_seconds(seconds: float) -> str:
    """A duration bound as the shortest exact text: 100ms, 1s, 5m, 1h, 30d."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms"


def _duration_text_seconds(text: str) -> float:
    """Seconds from '1h30m', '2 min', '1.5h' or '90': units from largest to smallest, each at most once."""
    text = text.strip().lower()
    if _BARE_SECONDS.fullmatch(text):
        return float(text)
    total, position, last_size = 0.0, 0, math.inf
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        size = _DURATION_UNITS.get(match.group(2)) if match else None
        if match is None or size is None or size >= last_size:
            raise ValueError(f"expected {DURATION_FORMS}")
        total += float(match.group(1)) * size
        position, last_size = match.end(), size
    if position == 0:
        raise ValueError(f"expected {DURATION_FORMS}")
    return total


def parse_duration(value: Any, low: float = 0.001, high: float = 365 * 86400.0) -> float:
    """Seconds from a number or a text such as '90s', '2 min', '1h30m', '1.5h', '500ms', '1d', within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected {DURATION_FORMS}")
    try:
        seconds = float(value) if isinstance(value, (int, float)) else _duration_text_seconds(value)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and low <= seconds <= high):
        raise ValueError(f"must be between {format_seconds(low)} and {format_seconds(high)}")
    return seconds


@dataclass(frozen=True)
class DurationRange:
    """A duration setting's parser: seconds between `low` and `high`, both included."""

    low: float
    high: float

    def __call__(self, value: Any) -> float:
        """Seconds, or ValueError naming the range."""
        return parse_duration(value, self.low, self.high)

    def describe(self) -> str:
        """The range as text, e.g. '100ms to 5m'."""
        return f"{format_seconds(self.low)} to {format_seconds(self.high)}"


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _optional_int(low: int, high: int) -> Callable[[Any], int | None]:
    inner = _int_in(low, high)

    def parse(value: Any) -> int | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "unlimited")):
            return None
        return inner(value)

    return parse


def _optional_float(low: float, high: float) -> Callable[[Any], float | None]:
    def parse(value: Any) -> float | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "unlimited")):
            return None
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
        except ValueError:
            raise ValueError("expected a number") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return number

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _database_url(value: Any) -> str | None:
    from app.db.urls import parse_database_url
    from app.errors import DatabaseUrlError

    text = _optional_str(value)
    if text is None:
        return None
    try:
        parse_database_url(text)
    except DatabaseUrlError as exc:
        raise ValueError(str(exc)) from None
    return text


def _host(value: Any) -> str:
    text = str(value).strip()
    if not text or any(ch.isspace() for ch in text) or "/" in text:
        raise ValueError("expected an IP address or host name")
    return text


def _farm_name(value: Any) -> str:
    text = str(value).strip()
    if not _FARM_NAME.match(text):
        raise ValueError("use 1-63 letters, digits, '-' or '_', starting with a letter or digit")
    return text


def _path(value: Any) -> Path:
    text = str(value).strip()
    if not text:
        raise ValueError("expected a path")
    return Path(text).expanduser()


def _optional_path(value: Any) -> Path | None:
    if value is None or str(value).strip() == "":
        return None
    return _path(value)


def _dir_list(value: Any) -> tuple[Path, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = [item.strip() for item in value.split(os.pathsep) if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = [str(item).strip() for item in value]
    else:
        raise ValueError(f'expected a list of folders such as ["~/datasets"] (or folders separated by {os.pathsep!r})')
    out = []
    for item in items:
        if not item or "\x00" in item:
            raise ValueError("expected a folder path")
        path = Path(item).expanduser()
        if not path.is_absolute():
            raise ValueError(f"{item!r} is not an absolute path")
        out.append(path)
    return tuple(out)


def _peer_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = [str(item).strip() for item in value]
    else:
        raise ValueError('expected a list such as ["host:port"]')
    for item in items:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r} is not host:port")
    return tuple(items)


def _gpu_list(value: Any) -> tuple[int, ...] | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return None
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)):
        raise ValueError('expected "all" or a list of GPU indexes such as [0, 1]')
    out = []
    for item in value:
        try:
            index = int(str(item).strip())
        except ValueError:
            raise ValueError(f"{item!r} is not a GPU index") from None
        if index < 0:
            raise ValueError("GPU indexes start at 0")
        out.append(index)
    return tuple(out)


def _schedule(value: Any) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    from app.donation import parse_schedule

    parse_schedule(str(value))
    return str(value).strip()


def _log_level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return text


@dataclass(frozen=True)
class SettingSpec:
    """A setting's name, parser, default and help text."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("database_url", _database_url, None,
                "Farm database URL (mysql://user:pass@host/ai_farm). Empty: an embedded SQLite file in the data dir."),
    SettingSpec("data_dir", _path, None, "Directory for the embedded database, checkpoints, models and tokens."),
    SettingSpec("dashboard_host", _host, "127.0.0.1",
                "Address the dashboard listens on. Anything but loopback needs expose=true."),
    SettingSpec("dashboard_port", _int_in(0, 65535), 8470, "TCP port of the local dashboard (0: any free port)."),
    SettingSpec("expose", _bool, False,
                "Allow the dashboard on a non-loopback address (the API token is then always required)."),
    SettingSpec("peer_host", _host, "0.0.0.0", "Address the peer API listens on for other agents of the farm."),
    SettingSpec("peer_port", _int_in(0, 65535), 8471, "TCP port of the peer API (0: any free port)."),
    SettingSpec("farm_name", _farm_name, "default", "Name of the farm; agents only pair with peers of the same name."),
    SettingSpec("mdns", _bool, True, "Advertise and browse with zeroconf; turn off where multicast is blocked (use peers)."),
    SettingSpec("peers", _peer_list, (), 'Peer API addresses to contact where multicast does not reach: ["host:port"].'),
    SettingSpec("heartbeat_interval", DurationRange(0.1, 300.0), 2.0, "How often the agent refreshes clients.last_seen (100ms to 5m)."),
    SettingSpec("inactive_after", DurationRange(1.0, 30 * 86400.0), 300.0,
                "A client whose last_seen is older than this is marked inactive by the sweep (1s to 30d)."),
    SettingSpec("failure_timeout", DurationRange(1.0, 86400.0), 10.0,
                "A training rank whose agent has not heartbeated for this long is considered failed (1s to 1d)."),
    SettingSpec("max_attempts", _int_in(1, 1000), 5, "Attempts of a task before it is marked failed."),
    SettingSpec("elastic_settle", DurationRange(0.0, 600.0), 5.0,
                "An elastic task's group forms once min_clients hold ranks and no new rank was taken for this long "
                "(0s to 10m)."),
    SettingSpec("link_probe_interval", DurationRange(1.0, 86400.0), 300.0,
                "How often the agent measures its links to verified peers, when it trains nothing (1s to 1d)."),
    SettingSpec("paused", _bool, False, "Start with donation paused: no new tasks are claimed."),
    SettingSpec("cpu_threads", _optional_int(1, 4096), None, "CPU threads training may use (empty: all but one core)."),
    SettingSpec("ram_limit_mb", _optional_int(64, 1 << 30), None, "RAM training may use, in MB (empty: no cap)."),
    SettingSpec("gpu_memory_limit_mb", _optional_int(0, 1 << 30), None, "GPU memory training may use per GPU, in MB."),
    SettingSpec("gpus", _gpu_list, None, 'GPUs training may use: "all" or a list of indexes.'),
    SettingSpec("idle_only", _bool, False, "Only compute while nobody uses the computer (keyboard and mouse idle)."),
    SettingSpec("idle_minutes", _int_in(1, 1440), 5, "Minutes without input before the computer counts as idle."),
    SettingSpec("schedule", _schedule, None,
                "Weekly donation window, e.g. 'mon-fri 18:00-08:00; sat,sun 00:00-24:00' (empty: always)."),
    SettingSpec("pause_on_battery", _bool, True, "Pause while the computer runs on battery."),
    SettingSpec("max_gpu_temperature", _optional_int(30, 110), None, "Pause while a GPU is hotter than this (°C)."),
    SettingSpec("retention_days", _int_in(1, 36500), 30, "Completed and failed tasks older than this are deleted."),
    SettingSpec("dataset_dirs", _dir_list, (),
                "Folders whose files tasks may read as dataset sources (symlinks resolved first); empty: none."),
    SettingSpec("sandbox_builtin", _bool, True,
                "Run built-in recipes in the worker sandbox too, where bubblewrap works (bundle code always is)."),
    SettingSpec("allow_unsandboxed_bundles", _bool, False,
                "Run trusted bundles' code unconfined where no sandbox works (macOS, Windows, no bubblewrap)."),
    SettingSpec("dataset_cache_gb", _optional_float(0.0, 1 << 20), None,
                "Disk for fetched dataset shards, in GB; least recently used datasets no task needs are evicted "
                "beyond it (empty: no limit)."),
    SettingSpec("log_level", _log_level, "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR."),
    SettingSpec("orphan_after", DurationRange(60.0, 365 * 86400.0), 3600.0,
                "Assignments still 'assigned' and not updated for this long are deleted by maintenance (1m to 365d)."),
    SettingSpec("log_retention_days", _int_in(1, 36500), 30, "task_logs and client_logs older than this are deleted."),
    SettingSpec("metrics_retention_days", _int_in(1, 36500), 7,
                "performance_metrics and task_metrics older than this are deleted."),
    SettingSpec("admin_database_url", _database_url, None,
                "An account allowed to change the schema and delete in bulk; used by db upgrade/maintenance when set."),
)

SPEC_BY_NAME: dict[str, SettingSpec] = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Settings:
    """Validated settings of one agent or command; build with `load_settings`."""

    database_url: str | None
    data_dir: Path
    dashboard_host: str
    dashboard_port: int
    expose: bool
    peer_host: str
    peer_port: int
    farm_name: str
    mdns: bool
    peers: tuple[str, ...]
    heartbeat_interval: float
    inactive_after: float
    failure_timeout: float
    max_attempts: int
    link_probe_interval: float
    paused: bool
    cpu_threads: int | None
    ram_limit_mb: int | None
    gpu_memory_limit_mb: int | None
    gpus: tuple[int, ...] | None
    idle_only: bool
    idle_minutes: int
    schedule: str | None
    pause_on_battery: bool
    max_gpu_temperature: int | None
    retention_days: int
    dataset_dirs: tuple[Path, ...]
    dataset_cache_gb: float | None
    log_level: str
    orphan_after: float
    log_retention_days: int
    metrics_retention_days: int
    admin_database_url: str | None
    sandbox_builtin: bool = True
    allow_unsandboxed_bundles: bool = False
    elastic_settle: float = 5.0
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sqlite_path(self) -> Path:
        """The embedded database file used when no database URL is set."""
        return self.data_dir / "aifarm.sqlite3"

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file's URL."""
        return self.database_url or f"sqlite:///{self.sqlite_path}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    unknown = sorted(set(data) - set(SPEC_BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting {unknown[0]!r}")
    return data


def _redacted(value: Any) -> str:
    from app.db.urls import redact_text

    return repr(redact_text(str(value)))


def _env_values(env: Mapping[str, str]) -> dict[str, str]:
    return {spec.name: env[ENV_PREFIX + spec.name.upper()] for spec in SPECS if ENV_PREFIX + spec.name.upper() in env}


def _validate(raw: Mapping[str, tuple[Any, str]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in SPECS:
        if spec.name in raw:
            value, source = raw[spec.name]
            try:
                values[spec.name] = spec.parse(value)
            except ValueError as exc:
                shown = _redacted(value) if spec.parse is _database_url else repr(value)
                raise ConfigError(f"setting {spec.name} = {shown} (from {source}) is invalid: {exc}") from None
        else:
            values[spec.name] = spec.default
    return values


def _layer(raw: dict[str, tuple[Any, str]], values: Mapping[str, Any], source: str) -> None:
    for name, value in values.items():
        if value is not None:
            raw[name] = (value, source)


def load_settings(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge defaults, the user config file, the data dir's config file, AIFARM_* env and CLI flags."""
    env = os.environ if env is None else env
    cli = {name: value for name, value in (cli or {}).items() if value is not None}
    unknown = sorted(set(cli) - set(SPEC_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    if config_file is None:
        config_file = Path(env["AIFARM_CONFIG"]) if env.get("AIFARM_CONFIG") else default_config_file()

    raw: dict[str, tuple[Any, str]] = {}
    _layer(raw, _read_toml(config_file), str(config_file))
    env_values = _env_values(env)
    _layer(raw, env_values, "environment")
    _layer(raw, cli, "command line")

    data_dir_value = raw.get("data_dir", (str(default_data_dir()), "default"))
    try:
        data_dir = _path(data_dir_value[0])
    except ValueError as exc:
        raise ConfigError(
            f"setting data_dir = {data_dir_value[0]!r} (from {data_dir_value[1]}) is invalid: {exc}"
        ) from None

    # The data dir's own file holds what `aifarm join`/`prefs` wrote for this agent; env and CLI still win.
    local_file = data_dir / CONFIG_FILE_NAME
    if local_file.resolve() != config_file.resolve():
        merged: dict[str, tuple[Any, str]] = {}
        _layer(merged, _read_toml(config_file), str(config_file))
        local_values = _read_toml(local_file)
        if "data_dir" in local_values:
            raise ConfigError(f"{local_file}: data_dir cannot be set inside the data dir's own config file")
        _layer(merged, local_values, str(local_file))
        _layer(merged, env_values, "environment")
        _layer(merged, cli, "command line")
        raw = merged
    raw["data_dir"] = (str(data_dir), raw.get("data_dir", ("", "default"))[1])

    values = _validate(raw)
    if not values["expose"] and not _is_loopback(values["dashboard_host"]):
        host_source = raw.get("dashboard_host", ("", "default"))[1]
        raise ConfigError(
            f"setting dashboard_host = {values['dashboard_host']!r} (from {host_source}) is not a loopback address; "
            "set expose = true (or pass --expose) to serve the dashboard beyond this machine"
        )
    sources = {name: source for name, (_, source) in raw.items()}
    return Settings(**values, sources=sources)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe_settings() -> list[tuple[str, str, str]]:
    """(name, default, help) for every setting, for `aifarm config` and the README."""
    return [(spec.name, repr(spec.default), spec.help) for spec in SPECS]


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Plain values of every setting, with the database password hidden."""
    from app.db.urls import redact_url

    out: dict[str, Any] = {}
    for item in fields(Settings):
        if item.name == "sources":
            continue
        value = getattr(settings, item.name)
        if item.name in ("database_url", "admin_database_url") and value:
            value = redact_url(value)
        if isinstance(value, tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[item.name] = str(value) if isinstance(value, Path) else value
    return out
