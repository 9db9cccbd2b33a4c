"""Publishing builds shards whose manifest describes them exactly; bad sources and manifests are named, not guessed."""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import numpy as np
import pytest

from app.datasets.manifest import ManifestError, parse_manifest, sha256_of
from app.datasets.publish import PublishError, build, parse_size


def test_byte_tokens_keep_every_byte_in_order_across_shards(tmp_path: Path) -> None:
    """Each byte becomes one uint16 id; fixed-size shards; sizes, counts and sha256 in the manifest."""
    text = ("héllo wörld — ünïcode ✓ " * 200).encode()
    (tmp_path / "a.txt").write_bytes(text)
    built = build(tmp_path / "a.txt", tmp_path / "out", shard_bytes=1000)
    manifest = parse_manifest(built.manifest("t", 1).to_json())
    assert manifest.tokenizer is not None and manifest.tokenizer.type == "byte" and manifest.dtype == "uint16"
    ids = array("H")
    for shard in manifest.data_shards:
        data = (tmp_path / "out" / shard.name).read_bytes()
        assert len(data) == shard.bytes == 2 * shard.samples and sha256_of(tmp_path / "out" / shard.name) == shard.sha256
        ids.frombytes(data)
    assert all(s.bytes == 1000 for s in manifest.data_shards[:-1])
    assert bytes(ids.tolist()) == text + b"\n"


def test_json_tokenizer_travels_with_the_dataset(tmp_path: Path) -> None:
    """A tokenizers JSON file encodes the text and is one more file of the dataset."""
    tokenizers = pytest.importorskip("tokenizers")
    corpus = "the farm trains the model on the data the farm shares\n" * 50
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([corpus], tokenizers.trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"]))
    tokenizer.save(str(tmp_path / "tok.json"))
    (tmp_path / "corpus.txt").write_text(corpus)
    built = build(tmp_path / "corpus.txt", tmp_path / "out", tokenizer=str(tmp_path / "tok.json"), shard_bytes=4096)
    manifest = parse_manifest(built.manifest("bpe", 1).to_json())
    assert manifest.tokenizer is not None and manifest.tokenizer.type == "json"
    assert manifest.tokenizer.file == "tokenizer.json" and manifest.tokenizer.vocab_size == tokenizer.get_vocab_size()
    assert [s.role for s in manifest.shards][-1] == "tokenizer"
    ids = array("H")
    for shard in manifest.data_shards:
        ids.frombytes((tmp_path / "out" / shard.name).read_bytes())
    assert ids.tolist() == tokenizer.encode(corpus + "\n").ids
    with pytest.raises(PublishError, match="must be byte or a tokenizer JSON file"):
        build(tmp_path / "corpus.txt", tmp_path / "o2", tokenizer="gpt2")


def test_bad_sources_are_named(tmp_path: Path) -> None:
    """Images without labels, counts that differ, negative labels, an empty CSV, a size that is no size."""
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((4, 8, 8), np.uint8))
    np.savez(tmp_path / "counts.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(3, np.int64))
    np.savez(tmp_path / "negative.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, -1, 2]))
    (tmp_path / "empty.csv").write_text("")
    cases = {"nolabels.npz": "must hold the arrays `images` and `labels`", "counts.npz": "4 images but labels",
             "negative.npz": "labels must be whole numbers from 0", "empty.csv": "the file is empty",
             "missing.txt": "does not exist"}
    for name, message in cases.items():
        with pytest.raises(PublishError, match=message):
            build(tmp_path / name, tmp_path / f"out-{name}")
    with pytest.raises(PublishError, match="--shard-size"):
        parse_size("lots")
    with pytest.raises(PublishError, match="between 1024 bytes"):
        parse_size("10")
    assert parse_size("64MB") == 64 << 20 and parse_size("512k") == 512 << 10


def test_manifests_that_do_not_add_up_are_refused(tmp_path: Path) -> None:
    """Sizes that disagree with counts, duplicate names, a malformed sha256, images without their labels."""
    (tmp_path / "a.txt").write_text("some text " * 100)
    good = build(tmp_path / "a.txt", tmp_path / "out", shard_bytes=1024).manifest("t", 1).to_json()
    assert parse_manifest(json.loads(json.dumps(good))).samples == 1001

    def broken(change: str) -> dict[str, object]:
        data = json.loads(json.dumps(good))
        if change == "bytes":
            data["shards"][0]["bytes"] += 2
        elif change == "duplicate":
            data["shards"][1]["name"] = data["shards"][0]["name"]
        elif change == "sha":
            data["shards"][0]["sha256"] = "xyz"
        elif change == "path":
            data["shards"][0]["name"] = "../../etc/passwd"
        elif change == "kind":
            data["kind"] = "images"
        return data

    for change, message in (("bytes", "do not hold"), ("duplicate", "same name"), ("sha", "sha256"),
                            ("path", "name is missing or malformed"), ("kind", "no labels file")):
        with pytest.raises(ManifestError, match=message):
            parse_manifest(broken(change))
