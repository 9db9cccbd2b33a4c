"""The data dir's config.toml as written by join/leave/prefs: valid TOML, private, read back by load_settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app.config import CONFIG_FILE_NAME, Settings, load_settings
from app.errors import ConfigError
from app.settings_file import read_local, update_local

TRICKY_URL = 'mysql://farm:p"a\'ss\\w\\"o\\\\rd#x@db.lan:3306/ai_farm'


def _load(data_dir: Path, tmp_path: Path) -> Settings:
    """Settings for this data dir only (no user config file, no environment)."""
    return load_settings(cli={"data_dir": str(data_dir)}, env={}, config_file=tmp_path / "absent.toml")


def test_read_local_without_file_is_empty(tmp_path: Path) -> None:
    """No config.toml yet: no settings."""
    assert read_local(tmp_path) == {}


def test_written_settings_load_back(tmp_path: Path) -> None:
    """Strings with quotes and backslashes, lists, bools and ints survive the round trip through load_settings."""
    data_dir = tmp_path / "data"
    values = {
        "database_url": TRICKY_URL,
        "farm_name": "lab-2",
        "peers": ["10.0.0.2:8471", "[fd00::1]:8471"],
        "paused": True,
        "max_attempts": 7,
    }
    path = update_local(data_dir, values)
    assert path == data_dir / CONFIG_FILE_NAME
    assert read_local(data_dir) == values
    settings = _load(data_dir, tmp_path)
    assert settings.database_url == TRICKY_URL
    assert settings.farm_name == "lab-2"
    assert settings.peers == ("10.0.0.2:8471", "[fd00::1]:8471")
    assert settings.paused is True
    assert settings.max_attempts == 7
    assert settings.sources["farm_name"] == str(path)


def test_non_ascii_and_astral_characters_round_trip(tmp_path: Path) -> None:
    """Passwords with accents, emoji and control characters are stored as valid TOML."""
    url = "mysql://farm:pässwörd-😀-\t-\x01-\x7f@db.lan/ai_farm"
    update_local(tmp_path, {"database_url": url})
    assert read_local(tmp_path) == {"database_url": url}
    assert _load(tmp_path, tmp_path).database_url == url


def test_file_is_private(tmp_path: Path) -> None:
    """config.toml (it may hold a database password) has mode 0600."""
    path = update_local(tmp_path, {"farm_name": "lab"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    update_local(tmp_path, {"paused": False})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_name(path.name + ".tmp").exists()


def test_updates_merge_and_unset_removes(tmp_path: Path) -> None:
    """Later updates keep other keys; unset removes keys (missing ones are ignored)."""
    update_local(tmp_path, {"farm_name": "lab", "database_url": TRICKY_URL, "paused": True})
    update_local(tmp_path, {"max_attempts": 3}, unset=("database_url", "retention_days"))
    assert read_local(tmp_path) == {"farm_name": "lab", "paused": True, "max_attempts": 3}
    update_local(tmp_path, unset=("farm_name", "paused", "max_attempts"))
    assert read_local(tmp_path) == {}
    settings = _load(tmp_path, tmp_path)
    assert settings.database_url is None and settings.farm_name == "default"


def test_unknown_setting_raises_and_leaves_file_unchanged(tmp_path: Path) -> None:
    """A misspelled name is refused before anything is written."""
    path = update_local(tmp_path, {"farm_name": "lab"})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="farm_nmae"):
        update_local(tmp_path, {"paused": True, "farm_nmae": "x"})
    assert path.read_bytes() == before


def test_unknown_setting_on_first_write_creates_no_file(tmp_path: Path) -> None:
    """With no file yet, a refused update creates none."""
    with pytest.raises(ConfigError):
        update_local(tmp_path, {"no_such_setting": 1})
    assert not (tmp_path / CONFIG_FILE_NAME).exists()


def test_unstorable_value_raises(tmp_path: Path) -> None:
    """A value TOML cannot hold here (a dict) is a ConfigError."""
    with pytest.raises(ConfigError):
        update_local(tmp_path, {"farm_name": {"nested": 1}})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A hand-broken config.toml is reported with its path."""
    (tmp_path / CONFIG_FILE_NAME).write_text("farm_name = 'unterminated\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=CONFIG_FILE_NAME):
        read_local(tmp_path)


def test_comments_and_layout_survive_set_and_unset(tmp_path: Path) -> None:
    """A volunteer's comments, blank lines and key order in config.toml are kept when a setting is set or removed."""
    path = tmp_path / CONFIG_FILE_NAME
    original = ('# my farm at home\nfarm_name = "lab"  # the LAN one\n\n# be gentle at night\ncpu_threads = 2\n'
                'paused = false\n')
    path.write_text(original, encoding="utf-8")
    update_local(tmp_path, {"cpu_threads": 4, "max_attempts": 5})
    text = path.read_text(encoding="utf-8")
    assert text.startswith('# my farm at home\nfarm_name = "lab"  # the LAN one\n\n# be gentle at night\ncpu_threads = 4\n')
    assert read_local(tmp_path) == {"farm_name": "lab", "cpu_threads": 4, "paused": False, "max_attempts": 5}
    update_local(tmp_path, unset=("max_attempts", "paused"))
    assert path.read_text(encoding="utf-8") == original.replace("cpu_threads = 2", "cpu_threads = 4").replace("paused = false\n", "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
