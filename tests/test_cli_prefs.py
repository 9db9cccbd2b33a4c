"""`aifarm prefs` end to end: set, unset, the JSON view, and refusals that leave the data dir's config.toml as it was."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.test_cli import run_one


def test_prefs_set_unset_and_refusals(tmp_path: Path) -> None:
    """Values go through each setting's parser; a bad value or name is one error line and writes nothing."""
    config = tmp_path / "data" / "config.toml"
    assert run_one(tmp_path, "prefs", "set", "cpu_threads", "3").assert_ok().stdout.startswith("cpu_threads set")
    run_one(tmp_path, "prefs", "set", "gpus", "0, 1").assert_ok()
    run_one(tmp_path, "prefs", "set", "idle_only", "yes").assert_ok()
    shown = run_one(tmp_path, "prefs", "--json").assert_ok().json()
    assert (shown["cpu_threads"], shown["gpus"], shown["idle_only"]) == (3, [0, 1], True)
    written = config.read_bytes()
    assert tomllib.loads(written.decode()) == {"cpu_threads": 3, "gpus": [0, 1], "idle_only": True}

    run_one(tmp_path, "prefs", "set", "cpu_threads", "lots").assert_error(
        2, "setting cpu_threads = 'lots' is invalid: expected a whole number")
    run_one(tmp_path, "prefs", "set", "schedule", "someday 25:00").assert_error(2, "setting schedule = 'someday 25:00'")
    run_one(tmp_path, "prefs", "set", "farm_name", "x").assert_error(2, "'farm_name' is not a donation preference")
    assert config.read_bytes() == written

    assert run_one(tmp_path, "prefs", "unset", "cpu_threads").assert_ok().stdout.startswith("cpu_threads reset")
    run_one(tmp_path, "prefs", "set", "gpus", "all").assert_ok()
    assert tomllib.loads(config.read_text()) == {"idle_only": True}
    shown = run_one(tmp_path, "prefs", "--json").assert_ok().json()
    assert shown["cpu_threads"] is None and shown["gpus"] is None
