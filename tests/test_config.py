"""Settings: defaults, the layering of files, environment and flags, every parser, and the errors bad values give."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from app.config import (
    SPECS,
    Settings,
    default_data_dir,
    load_settings,
    parse_duration,
    settings_as_dict,
)
from app.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    """Write a TOML file (creating its directory) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, env: dict[str, str] | None = None, **cli: Any) -> Settings:
    """Settings from CLI values only, isolated from the user's files and environment."""
    cli.setdefault("data_dir", str(tmp_path / "data"))
    return load_settings(cli=cli, env=env or {}, config_file=tmp_path / "absent.toml")


def _error(tmp_path: Path, env: dict[str, str] | None = None, **cli: Any) -> str:
    """The message of the ConfigError these CLI values raise."""
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, env, **cli)
    return str(info.value)


# --- defaults and layering -------------------------------------------------------------------------------------


def test_defaults_when_nothing_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no file, env or flag every setting has its documented default and no source."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    settings = load_settings(cli={}, env={}, config_file=tmp_path / "absent.toml")
    assert settings.data_dir == default_data_dir()
    assert str(settings.data_dir).startswith(str(tmp_path))
    for spec in SPECS:
        if spec.name != "data_dir":
            assert getattr(settings, spec.name) == spec.default, spec.name
    assert settings.database_url is None
    assert settings.dashboard_host == "127.0.0.1"
    assert settings.dashboard_port == 8470
    assert settings.peer_port == 8471
    assert settings.farm_name == "default"
    assert settings.peers == ()
    assert settings.gpus is None
    assert settings.heartbeat_interval == 2.0
    assert settings.log_level == "INFO"
    assert settings.expose is False
    assert settings.effective_database_url == f"sqlite:///{settings.data_dir / 'aifarm.sqlite3'}"
    assert set(settings.sources) <= {"data_dir"}


def test_precedence_file_datadir_env_cli(tmp_path: Path) -> None:
    """One setting set at every layer: CLI beats env beats the data dir's file beats the config file."""
    data_dir = tmp_path / "data"
    config_file = _write(
        tmp_path / "user.toml",
        f'data_dir = "{data_dir}"\nfarm_name = "from-file"\ndashboard_port = 1001\npeer_port = 1002\n'
        'heartbeat_interval = "5s"\n',
    )
    local_file = _write(
        data_dir / "config.toml", 'farm_name = "from-datadir"\ndashboard_port = 2001\npeer_port = 2002\n'
    )
    env = {"AIFARM_FARM_NAME": "from-env", "AIFARM_DASHBOARD_PORT": "3001"}

    settings = load_settings(cli={"farm_name": "from-cli"}, env=env, config_file=config_file)
    assert settings.farm_name == "from-cli"
    assert settings.dashboard_port == 3001
    assert settings.peer_port == 2002
    assert settings.heartbeat_interval == 5.0
    assert settings.data_dir == data_dir
    assert settings.log_level == "INFO"
    assert settings.sources["farm_name"] == "command line"
    assert settings.sources["dashboard_port"] == "environment"
    assert settings.sources["peer_port"] == str(local_file)
    assert settings.sources["heartbeat_interval"] == str(config_file)
    assert settings.sources["data_dir"] == str(config_file)
    assert "log_level" not in settings.sources

    # Peel the layers off one at a time.
    settings = load_settings(cli={"farm_name": None}, env=env, config_file=config_file)
    assert (settings.farm_name, settings.sources["farm_name"]) == ("from-env", "environment")
    settings = load_settings(cli={}, env={}, config_file=config_file)
    assert (settings.farm_name, settings.sources["farm_name"]) == ("from-datadir", str(local_file))
    assert settings.dashboard_port == 2001
    local_file.unlink()
    settings = load_settings(cli={}, env={}, config_file=config_file)
    assert (settings.farm_name, settings.sources["farm_name"]) == ("from-file", str(config_file))
    assert settings.dashboard_port == 1001


def test_data_dir_file_follows_the_effective_data_dir(tmp_path: Path) -> None:
    """The data dir's config.toml is read from the data dir the env or CLI chose, not the file's."""
    _write(tmp_path / "one" / "config.toml", 'farm_name = "one"\n')
    _write(tmp_path / "two" / "config.toml", 'farm_name = "two"\n')
    config_file = _write(tmp_path / "user.toml", f'data_dir = "{tmp_path / "one"}"\n')
    assert load_settings(cli={}, env={}, config_file=config_file).farm_name == "one"
    env = {"AIFARM_DATA_DIR": str(tmp_path / "two")}
    settings = load_settings(cli={}, env=env, config_file=config_file)
    assert settings.farm_name == "two"
    assert settings.sources["data_dir"] == "environment"
    settings = load_settings(cli={"data_dir": str(tmp_path / "one")}, env=env, config_file=config_file)
    assert (settings.farm_name, settings.sources["data_dir"]) == ("one", "command line")


def test_aifarm_config_env_names_the_config_file(tmp_path: Path) -> None:
    """Without an explicit config_file, AIFARM_CONFIG says which file to read."""
    config_file = _write(tmp_path / "elsewhere.toml", 'farm_name = "via-env-file"\n')
    settings = load_settings(env={"AIFARM_CONFIG": str(config_file), "AIFARM_DATA_DIR": str(tmp_path / "d")})
    assert settings.farm_name == "via-env-file"
    assert settings.sources["farm_name"] == str(config_file)


def test_config_file_as_the_data_dir_file_is_read_once(tmp_path: Path) -> None:
    """A config file that is the data dir's own config.toml is a single layer."""
    data_dir = tmp_path / "data"
    config_file = _write(data_dir / "config.toml", 'farm_name = "same"\n')
    settings = load_settings(cli={"data_dir": str(data_dir)}, env={}, config_file=config_file)
    assert (settings.farm_name, settings.sources["farm_name"]) == ("same", str(config_file))


def test_toml_types_are_accepted(tmp_path: Path) -> None:
    """Native TOML values (ints, bools, lists) parse like their string spellings."""
    config_file = _write(
        tmp_path / "user.toml",
        f'data_dir = "{tmp_path / "d"}"\nexpose = true\ndashboard_host = "0.0.0.0"\n'
        'peers = ["a.lan:8471", "10.0.0.2:9000"]\n'
        "gpus = [0, 1]\ncpu_threads = 4\nheartbeat_interval = 1.5\nmax_attempts = 3\npaused = true\n",
    )
    settings = load_settings(cli={}, env={}, config_file=config_file)
    assert settings.expose is True
    assert settings.dashboard_host == "0.0.0.0"
    assert settings.peers == ("a.lan:8471", "10.0.0.2:9000")
    assert settings.gpus == (0, 1)
    assert settings.cpu_threads == 4
    assert settings.heartbeat_interval == 1.5
    assert settings.max_attempts == 3
    assert settings.paused is True


# --- parsers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("5m", 300.0), ("1h", 3600.0), ("1.5h", 5400.0), ("30d", 2_592_000.0),
     (" 5 m ", 300.0), ("7", 7.0), (2, 2.0), (0.25, 0.25)],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    """Durations accept ms/s/m/h/d suffixes and bare numbers of seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "soon", "0", 0, -3, "", "5 fortnights", "1e3s", True])
def test_parse_duration_rejects(text: Any) -> None:
    """Negative, zero, unit-less words and booleans are not durations."""
    with pytest.raises(ValueError):
        parse_duration(text)


DURATION_TABLE: list[tuple[Any, float]] = [
    ("1h30m", 5400.0), ("90s", 90.0), ("2 min", 120.0), ("500ms", 0.5), ("1d", 86400.0), ("1.5h", 5400.0),
    ("90", 90.0), ("0.5", 0.5), (45, 45.0), (2.5, 2.5), ("1h 30m", 5400.0), ("1d2h3m4s", 93784.0),
    ("2 hours", 7200.0), ("3 days", 259200.0), ("10 seconds", 10.0), ("5 minutes", 300.0), ("1s500ms", 1.5),
    ("1 sec", 1.0), ("2 hrs", 7200.0), ("  1H30M  ", 5400.0), ("100 milliseconds", 0.1),
]
BAD_DURATIONS: list[Any] = [
    "nan", "inf", "-inf", "1e-9", "1e3", "99999999999999999999d", "٥s", "١٠", "５m", "1h-5m", "",
    "   ", "h", "1x", "30m1h", "1h1h", "1.s", ".5s", "1,5h", "-5m", "+5m", "1h30", "5 fortnights", "1 h 30", None,
    True, [5], float("nan"), float("inf"), 1e-9, 0, -1,
]


@pytest.mark.parametrize(("text", "seconds"), DURATION_TABLE)
def test_duration_grammar_accepts(text: Any, seconds: float) -> None:
    """Compound, spaced, spelled-out and fractional durations and bare seconds parse to seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_duration_grammar_rejects(text: Any) -> None:
    """Not-a-number, infinite, tiny, huge, non-ASCII-digit, negative-part and empty durations are ValueError, never more."""
    with pytest.raises(ValueError, match="expected a duration such as 5s, 2 min, 1h30m|must be between"):
        parse_duration(text)


@pytest.mark.parametrize(("line", "needles"), [
    ('heartbeat_interval = "1h-5m"', ("heartbeat_interval", "'1h-5m'", "1h30m", "a number of seconds")),
    ('inactive_after = "99999999999999999999d"', ("inactive_after", "between 1s and 30d")),
    ('failure_timeout = "nan"', ("failure_timeout", "expected a duration")),
    ('failure_timeout = ""', ("failure_timeout", "expected a duration")),
    ('orphan_after = "1h30m"', None),
])
def test_duration_settings_errors_name_setting_and_forms(tmp_path: Path, line: str, needles: tuple[str, ...] | None) -> None:
    """A bad duration setting is one line naming the setting, the value and the accepted forms or range."""
    path = tmp_path / "c.toml"
    path.write_text(line + "\n", encoding="utf-8")
    if needles is None:
        assert load_settings(env={}, config_file=path).orphan_after == 5400.0
        return
    with pytest.raises(ConfigError) as raised:
        load_settings(env={}, config_file=path)
    message = str(raised.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_durations_through_settings(tmp_path: Path) -> None:
    """Every duration setting is stored in seconds."""
    settings = _load(tmp_path, heartbeat_interval="500ms", inactive_after="5m", failure_timeout="1h")
    assert (settings.heartbeat_interval, settings.inactive_after, settings.failure_timeout) == (0.5, 300.0, 3600.0)
    settings = _load(tmp_path, env={"AIFARM_HEARTBEAT_INTERVAL": "3"})
    assert settings.heartbeat_interval == 3.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("Yes", True), ("on", True), ("1", True),
     ("false", False), ("NO", False), ("off", False), ("0", False)],
)
def test_bools(tmp_path: Path, value: Any, expected: bool) -> None:
    """Booleans accept true/false, yes/no, on/off and 1/0 in any case."""
    assert _load(tmp_path, paused=value).paused is expected
    assert _load(tmp_path, env={"AIFARM_EXPOSE": str(value)}).expose is expected


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (65535, 65535), ("8080", 8080), (" 9000 ", 9000)])
def test_ports(tmp_path: Path, value: Any, expected: int) -> None:
    """Ports run from 0 (any free port) to 65535, as ints or digit strings."""
    assert _load(tmp_path, dashboard_port=value).dashboard_port == expected
    assert _load(tmp_path, peer_port=value).peer_port == expected


@pytest.mark.parametrize("value", [-1, 65536, 70000, "abc", "80.5", 8080.5, True])
def test_ports_rejected(tmp_path: Path, value: Any) -> None:
    """Out-of-range, fractional, non-numeric and boolean ports are refused."""
    message = _error(tmp_path, peer_port=value)
    assert "peer_port" in message and repr(value) in message


@pytest.mark.parametrize("name", ["lab", "lab-1", "Lab_2", "0farm", "a" * 63])
def test_farm_names(tmp_path: Path, name: str) -> None:
    """Farm names are 1-63 letters, digits, '-' or '_' starting with a letter or digit."""
    assert _load(tmp_path, farm_name=name).farm_name == name


@pytest.mark.parametrize("name", ["bad name!", "", "-lead", "_lead", "a" * 64, "dot.ted", "ünï"])
def test_farm_names_rejected(tmp_path: Path, name: str) -> None:
    """Spaces, punctuation, leading '-'/'_', empty and over-long names are refused."""
    message = _error(tmp_path, farm_name=name)
    assert "farm_name" in message and repr(name) in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(["a.lan:8471", "10.0.0.2:9000"], ("a.lan:8471", "10.0.0.2:9000")),
     ("a.lan:8471, 10.0.0.2:9000", ("a.lan:8471", "10.0.0.2:9000")),
     ("a.lan:8471,", ("a.lan:8471",)),
     ("", ()),
     ([], ()),
     (["[::1]:8471"], ("[::1]:8471",))],
)
def test_peers(tmp_path: Path, value: Any, expected: tuple[str, ...]) -> None:
    """Peers are a list of host:port or a comma-separated string of them."""
    assert _load(tmp_path, peers=value).peers == expected


@pytest.mark.parametrize("value", [["nohost"], ["host:0"], ["host:abc"], [":8471"], "a:1,b", ["h:70000"], 8471])
def test_peers_rejected(tmp_path: Path, value: Any) -> None:
    """A peer without a host or a valid port is refused."""
    assert "peers" in _error(tmp_path, peers=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ()), ([], ()), ("/srv/data", (Path("/srv/data"),)), ("/a:/b", (Path("/a"), Path("/b"))),
     (["/a", "~/d"], (Path("/a"), Path("~/d").expanduser()))],
)
def test_dataset_dirs(tmp_path: Path, value: Any, expected: tuple[Path, ...]) -> None:
    """dataset_dirs is a list of absolute folders, also as a string separated by os.pathsep; none by default."""
    assert _load(tmp_path).dataset_dirs == ()
    assert _load(tmp_path, dataset_dirs=value).dataset_dirs == expected


@pytest.mark.parametrize("value", ["relative/dir", ["/ok", "data"], 7])
def test_dataset_dirs_rejected(tmp_path: Path, value: Any) -> None:
    """A relative folder or a value that is no list is refused."""
    assert "dataset_dirs" in _error(tmp_path, dataset_dirs=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("all", None), ("ALL", None), ("", None), ([0, 1], (0, 1)), ("0, 2", (0, 2)), (["3"], (3,))],
)
def test_gpus(tmp_path: Path, value: Any, expected: tuple[int, ...] | None) -> None:
    """GPUs are "all" (None) or a list of indexes, also as a comma string."""
    assert _load(tmp_path, gpus=value).gpus == expected


@pytest.mark.parametrize("value", [[-1], ["x"], "0,gpu1", 3])
def test_gpus_rejected(tmp_path: Path, value: Any) -> None:
    """Negative or non-numeric GPU indexes are refused."""
    assert "gpus" in _error(tmp_path, gpus=value)


@pytest.mark.parametrize(("value", "expected"), [("", None), ("none", None), ("None", None), ("unlimited", None),
                                                  ("8", 8), (16, 16)])
def test_optional_ints(tmp_path: Path, value: Any, expected: int | None) -> None:
    """Optional limits accept "", "none" and "unlimited" as no limit."""
    assert _load(tmp_path, cpu_threads=value).cpu_threads == expected
    assert _load(tmp_path, env={"AIFARM_CPU_THREADS": str(value)}).cpu_threads == expected


def test_optional_int_bounds(tmp_path: Path) -> None:
    """Optional limits still have their lower bounds."""
    assert _load(tmp_path, ram_limit_mb=64).ram_limit_mb == 64
    assert _load(tmp_path, gpu_memory_limit_mb=0).gpu_memory_limit_mb == 0
    assert "ram_limit_mb" in _error(tmp_path, ram_limit_mb=63)
    assert "cpu_threads" in _error(tmp_path, cpu_threads=0)


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    """Log levels are normalised to upper case."""
    assert _load(tmp_path, log_level="debug").log_level == "DEBUG"
    assert _load(tmp_path, env={"AIFARM_LOG_LEVEL": " warning "}).log_level == "WARNING"


def test_database_url_empty_means_embedded(tmp_path: Path) -> None:
    """An empty database URL falls back to the embedded SQLite file in the data dir."""
    settings = _load(tmp_path, env={"AIFARM_DATABASE_URL": "  "})
    assert settings.database_url is None
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'aifarm.sqlite3'}"
    settings = _load(tmp_path, database_url="mysql://u:p@db.lan/ai_farm")
    assert settings.effective_database_url == "mysql://u:p@db.lan/ai_farm"


def test_data_dir_expands_user(tmp_path: Path) -> None:
    """A data dir starting with ~ is expanded."""
    assert _load(tmp_path, data_dir="~/aifarm-data").data_dir == Path("~/aifarm-data").expanduser()


# --- errors -----------------------------------------------------------------------------------------------------


BAD_VALUES: list[tuple[str, str, Any, str]] = [
    # (layer, setting, value, text the message must contain besides the setting name)
    ("cli", "dashboard_port", 70000, "70000"),
    ("env", "dashboard_port", "abc", "'abc'"),
    ("file", "peer_port", 70000, "70000"),
    ("env", "heartbeat_interval", "-1s", "'-1s'"),
    ("file", "heartbeat_interval", "soon", "'soon'"),
    ("datadir", "heartbeat_interval", "0s", "'0s'"),
    ("file", "farm_name", "bad name!", "'bad name!'"),
    ("env", "farm_name", "bad name!", "'bad name!'"),
    ("file", "peers", ["nohost"], "nohost"),
    ("env", "peers", "nohost", "'nohost'"),
    ("env", "log_level", "LOUD", "'LOUD'"),
    ("file", "log_level", "LOUD", "'LOUD'"),
    ("cli", "log_level", "LOUD", "'LOUD'"),
    ("env", "expose", "maybe", "'maybe'"),
    ("file", "max_attempts", 0, "0"),
    ("env", "retention_days", "forever", "'forever'"),
    ("file", "gpus", [-1], "-1"),
    ("env", "cpu_threads", "lots", "'lots'"),
    ("file", "dashboard_port", True, "True"),
    ("env", "dashboard_host", "0.0.0.0", "'0.0.0.0'"),
    ("file", "dashboard_host", "192.168.1.5", "'192.168.1.5'"),
    ("cli", "dashboard_host", "bad host", "'bad host'"),
    ("env", "data_dir", "", "''"),
]


def _toml_value(value: Any) -> str:
    """A Python value as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize(("layer", "name", "value", "shown"), BAD_VALUES, ids=lambda v: str(v))
def test_bad_values_name_setting_value_and_source(
    tmp_path: Path, layer: str, name: str, value: Any, shown: str
) -> None:
    """A bad value raises ConfigError naming the setting, the value and where it came from."""
    data_dir = tmp_path / "data"
    config_file = tmp_path / "user.toml"
    cli: dict[str, Any] = {}
    env: dict[str, str] = {}
    if layer == "cli":
        cli[name] = value
        source = "command line"
    elif layer == "env":
        env["AIFARM_" + name.upper()] = str(value)
        source = "environment"
    elif layer == "file":
        _write(config_file, f"{name} = {_toml_value(value)}\n")
        source = str(config_file)
    else:
        source = str(_write(data_dir / "config.toml", f"{name} = {_toml_value(value)}\n"))
    if name != "data_dir":
        cli["data_dir"] = str(data_dir)
    with pytest.raises(ConfigError) as info:
        load_settings(cli=cli, env=env, config_file=config_file)
    message = str(info.value)
    assert name in message
    assert shown in message
    assert f"from {source}" in message
    assert info.value.exit_code == 2


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    """An unknown key in a TOML file is refused, naming the key and the file."""
    config_file = _write(tmp_path / "user.toml", 'farm_name = "ok"\ncolour = "blue"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cli={"data_dir": str(tmp_path / "d")}, env={}, config_file=config_file)
    assert "'colour'" in str(info.value) and str(config_file) in str(info.value)


def test_unknown_key_in_data_dir_file(tmp_path: Path) -> None:
    """An unknown key in the data dir's file is refused, naming that file."""
    local_file = _write(tmp_path / "d" / "config.toml", "dashbord_port = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cli={"data_dir": str(tmp_path / "d")}, env={}, config_file=tmp_path / "absent.toml")
    assert "'dashbord_port'" in str(info.value) and str(local_file) in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML is refused, naming the file, in one line."""
    config_file = _write(tmp_path / "user.toml", "farm_name = lab\n[broken\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cli={"data_dir": str(tmp_path / "d")}, env={}, config_file=config_file)
    message = str(info.value)
    assert str(config_file) in message and "not valid TOML" in message
    assert "\n" not in message


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A config path that is a directory is refused with a one-line error."""
    config_dir = tmp_path / "user.toml"
    config_dir.mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings(cli={"data_dir": str(tmp_path / "d")}, env={}, config_file=config_dir)
    assert str(config_dir) in str(info.value)


def test_unknown_cli_setting(tmp_path: Path) -> None:
    """A CLI mapping with an unknown name is refused."""
    assert "'colour'" in _error(tmp_path, colour="blue")


def test_env_without_prefix_or_unknown_is_ignored(tmp_path: Path) -> None:
    """Only AIFARM_<SETTING> variables are read; others never fail or apply."""
    settings = _load(tmp_path, env={"FARM_NAME": "x y", "AIFARM_COLOUR": "blue", "AIFARM_farm_name": "x y"})
    assert settings.farm_name == "default"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "farm.lan", "::"])
def test_non_loopback_dashboard_needs_expose(tmp_path: Path, host: str) -> None:
    """A non-loopback dashboard host is refused without expose and accepted with it."""
    message = _error(tmp_path, dashboard_host=host)
    assert "dashboard_host" in message and repr(host) in message and "expose" in message
    settings = _load(tmp_path, dashboard_host=host, expose=True)
    assert (settings.dashboard_host, settings.expose) == (host, True)
    settings = _load(tmp_path, env={"AIFARM_DASHBOARD_HOST": host, "AIFARM_EXPOSE": "yes"})
    assert settings.dashboard_host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_dashboard_needs_no_expose(tmp_path: Path, host: str) -> None:
    """Loopback hosts are fine without expose."""
    assert _load(tmp_path, dashboard_host=host).dashboard_host == host


# --- the Settings object ----------------------------------------------------------------------------------------


def test_settings_is_frozen(tmp_path: Path) -> None:
    """Assigning to a setting raises."""
    settings = _load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.farm_name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.dashboard_port = 1  # type: ignore[misc]
    assert settings.farm_name == "default"


def test_settings_as_dict_redacts_password(tmp_path: Path) -> None:
    """The plain view of settings hides the database password and is JSON-friendly."""
    settings = _load(tmp_path, database_url="mysql://farm:s3cret-pw@db.lan:3306/ai_farm", peers="a:1,b:2")
    values = settings_as_dict(settings)
    assert "s3cret-pw" not in str(values)
    assert values["database_url"] == "mysql://farm:***@db.lan:3306/ai_farm"
    assert values["peers"] == ["a:1", "b:2"]
    assert values["data_dir"] == str(tmp_path / "data")
    assert set(values) == {spec.name for spec in SPECS}


@pytest.mark.parametrize(("name", "value", "bounds"), [
    ("heartbeat_interval", float("nan"), "between 100ms and 5m"),
    ("heartbeat_interval", float("inf"), "between 100ms and 5m"),
    ("heartbeat_interval", 1e-9, "between 100ms and 5m"),
    ("heartbeat_interval", "99999999999999999999d", "between 100ms and 5m"),
    ("heartbeat_interval", 10**400, "between 100ms and 5m"),
    ("inactive_after", "31d", "between 1s and 30d"),
    ("failure_timeout", "500ms", "between 1s and 1d"),
    ("orphan_after", "59s", "between 1m and 365d"),
])
def test_duration_settings_have_a_finite_range(tmp_path: Path, name: str, value: Any, bounds: str) -> None:
    """Every duration setting refuses nan, inf and values outside its range, naming the setting and the range."""
    with pytest.raises(ConfigError, match=f"setting {name} = .* is invalid: must be {bounds}"):
        _load(tmp_path, **{name: value})


def test_duration_range_edges_are_accepted(tmp_path: Path) -> None:
    """The ends of each range are valid values."""
    settings = _load(tmp_path, heartbeat_interval="100ms", inactive_after="30d", failure_timeout="1d", orphan_after="1m")
    assert (settings.heartbeat_interval, settings.inactive_after, settings.failure_timeout, settings.orphan_after) == (
        0.1, 30 * 86400.0, 86400.0, 60.0)
