"""`aifarm bundles` and submissions naming a bundle: each mistake is one `aifarm: error:` line and nothing is written."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tests.bundles.helpers import aifarm, build_wheel, bundle_task, keygen, publish


def _setup(tmp_path: Path) -> tuple[Path, str]:
    data_dir = tmp_path / "a"
    aifarm(tmp_path, "db", "upgrade", "--data-dir", str(data_dir))
    return data_dir, f"sqlite:///{data_dir / 'aifarm.sqlite3'}"


def _error(tmp_path: Path, *args: str) -> str:
    done = aifarm(tmp_path, *args, check=False)
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aifarm: error: "), done.stderr
    return lines[0]


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    """The key file is mode 0600, its fingerprint is printed, and an existing file is never overwritten."""
    key, fingerprint = keygen(tmp_path)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(fingerprint) == 32
    before = key.read_bytes()
    assert "exists already" in _error(tmp_path, "bundles", "keygen", str(key))
    assert key.read_bytes() == before


def test_publish_list_show_trust_untrust(tmp_path: Path) -> None:
    """A published wheel is listed with its key and recipes; trusting and untrusting change only this data dir."""
    data_dir, url = _setup(tmp_path)
    key, fingerprint = keygen(tmp_path)
    wheel = build_wheel(tmp_path / "dist")
    published = publish(tmp_path, url, data_dir, wheel, key)
    assert published["bundle"] == "probe-recipes==1.0" and published["recipes"] == ["model.probe_linear"]
    assert "published already" in _error(tmp_path, "bundles", "publish", str(wheel), "--key", str(key),
                                         "--data-dir", str(data_dir))
    listed = json.loads(aifarm(tmp_path, "bundles", "list", "--json", "--data-dir", str(data_dir)).stdout)["bundles"]
    assert [(b["bundle"], b["key"], b["trusted"], b["publisher"]) for b in listed] == \
        [("probe-recipes==1.0", fingerprint, False, "Test Lab")]
    aifarm(tmp_path, "bundles", "trust", fingerprint.upper(), "--data-dir", str(data_dir))
    assert stat.S_IMODE(os.stat(data_dir / "trusted_keys.json").st_mode) == 0o600
    shown = json.loads(aifarm(tmp_path, "bundles", "show", "probe-recipes", "--json", "--data-dir",
                              str(data_dir)).stdout)["bundles"][0]
    assert shown["trusted"] is True and shown["sha256"] == published["sha256"]
    aifarm(tmp_path, "bundles", "untrust", fingerprint, "--data-dir", str(data_dir))
    assert "is not trusted" in _error(tmp_path, "bundles", "untrust", fingerprint, "--data-dir", str(data_dir))


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    """Not a wheel, not a key, an unknown fingerprint, a bundle that is not there: one line each."""
    data_dir, _ = _setup(tmp_path)
    key, _ = keygen(tmp_path)
    source = tmp_path / "recipes.tar.gz"
    source.write_bytes(b"not a wheel")
    dd = ("--data-dir", str(data_dir))
    assert "is not a wheel" in _error(tmp_path, "bundles", "publish", str(source), "--key", str(key), *dd)
    assert "not an unencrypted PEM private key" in _error(tmp_path, "bundles", "publish",
                                                          str(build_wheel(tmp_path / "d")), "--key", str(source), *dd)
    assert "not a key fingerprint" in _error(tmp_path, "bundles", "trust", "abc", *dd)
    assert "no bundle in this farm is signed by key" in _error(tmp_path, "bundles", "trust", "0" * 32, *dd)
    assert "no bundle nothing==1 is published" in _error(tmp_path, "bundles", "show", "nothing==1", *dd)
    assert not (data_dir / "trusted_keys.json").exists()


def test_submit_resolves_and_checks_the_bundle(tmp_path: Path) -> None:
    """NAME becomes its newest live NAME==VERSION; an unknown or revoked bundle, or a recipe it lacks, is refused."""
    data_dir, url = _setup(tmp_path)
    key, _ = keygen(tmp_path)
    publish(tmp_path, url, data_dir, build_wheel(tmp_path / "d1", version="1.0"), key)
    publish(tmp_path, url, data_dir, build_wheel(tmp_path / "d2", version="2.0"), key)
    aifarm(tmp_path, "bundles", "revoke", "probe-recipes==2.0", "--key", str(key), "--data-dir", str(data_dir))

    def submit(task: dict[str, object]) -> tuple[int, str, str]:
        path = tmp_path / "task.json"
        path.write_text(json.dumps(task))
        done = aifarm(tmp_path, "submit", str(path), "--json", "--data-dir", str(data_dir), check=False)
        return done.returncode, done.stdout, done.stderr

    code, out, err = submit(bundle_task("ok", "probe-recipes"))
    assert code == 0, err
    assert json.loads(out)["config"]["bundle"] == "probe-recipes==1.0"
    for bundle, text in (("nothing", "config.bundle: no bundle nothing is published in this farm"),
                         ("probe-recipes==2.0", "config.bundle: bundle probe-recipes==2.0 is revoked"),
                         ("bad name!", "config.bundle: 'bad name!' is not a bundle name or NAME==VERSION")):
        code, _, err = submit(bundle_task("x", bundle))
        assert code != 0 and text in err, err
    lacking = bundle_task("x", "probe-recipes")
    lacking["config"]["model"] = "linear"  # type: ignore[index]
    code, _, err = submit(lacking)
    assert code != 0 and "config.model: unknown model 'linear'" in err, err
    listed = json.loads(aifarm(tmp_path, "tasks", "--json", "--data-dir", str(data_dir)).stdout)
    assert len(listed["tasks"]) == 1
