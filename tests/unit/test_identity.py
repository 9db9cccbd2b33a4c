"""The agent's stable client id in its data dir."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.identity import CLIENT_ID_FILE, load_or_create_client_id

VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def test_id_is_created_once_and_stable(tmp_path: Path) -> None:
    """The first call creates '<host>-<12 hex>' in the data dir; later calls return it."""
    data_dir = tmp_path / "data"
    client_id = load_or_create_client_id(data_dir)
    assert VALID.fullmatch(client_id)
    assert re.search(r"-[0-9a-f]{12}$", client_id)
    assert (data_dir / CLIENT_ID_FILE).read_text(encoding="utf-8").strip() == client_id
    assert load_or_create_client_id(data_dir) == client_id
    assert not (data_dir / (CLIENT_ID_FILE + ".tmp")).exists()


def test_two_data_dirs_are_two_clients(tmp_path: Path) -> None:
    """Each data dir gets its own id."""
    assert load_or_create_client_id(tmp_path / "a") != load_or_create_client_id(tmp_path / "b")


def test_existing_id_is_kept(tmp_path: Path) -> None:
    """An id already in the file (with a trailing newline) is used as is."""
    (tmp_path / CLIENT_ID_FILE).write_text("my-box-abcdef012345\n", encoding="utf-8")
    assert load_or_create_client_id(tmp_path) == "my-box-abcdef012345"


@pytest.mark.parametrize("garbage", ["../../etc", "a b", "-dash", "x" * 129, "ok\nsecond-line"])
def test_garbage_id_file_raises_naming_the_file(tmp_path: Path, garbage: str) -> None:
    """An invalid id in the file is an error that names the file (never silently replaced)."""
    path = tmp_path / CLIENT_ID_FILE
    path.write_text(garbage, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_or_create_client_id(tmp_path)
    assert path.read_text(encoding="utf-8") == garbage
