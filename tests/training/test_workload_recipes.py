"""The transformer and resnet recipes, tokenizers, precision plans, model files and the new task options."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from app.errors import ValidationError
from app.inventory import apple_gpu
from app.scheduling.validation import validate_task
from app.training.catalog import Catalog
from app.training.model_files import ModelFileError, ModelMeta, load_model, load_weights, read_meta, save_model
from app.training.precision import plan_precision
from app.training.recipes import RecipeError
from app.training.recipes.datasets import DataInfo, load_dataset
from app.training.recipes.models import build_model
from app.training.sources import SourcePolicy
from app.training.tokenizers import ByteTokenizer, TokenizerError, load_tokenizer, train_bpe
from tests.training.e2e import run_worker, worker_spec

TOKENS = DataInfo("tokens", (32,), 256, None, {"type": "byte"})


def test_transformer_is_causal_tied_and_sized_by_its_options() -> None:
    """A later token never changes an earlier position's logits; tied embeddings share one tensor."""
    torch.manual_seed(0)
    model = build_model("transformer", {"layers": 2, "heads": 2, "embedding": 32, "context": 32}, TOKENS).eval()
    tokens = torch.randint(0, 256, (1, 16))
    changed = tokens.clone()
    changed[0, 10] = (changed[0, 10] + 1) % 256
    a, b = model(tokens), model(changed)
    assert a.shape == (1, 16, 256)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-5) and not torch.allclose(a[0, 10], b[0, 10])
    assert model.head.weight is model.tokens.weight
    untied = build_model("transformer", {"layers": 2, "heads": 2, "embedding": 32, "tied_embeddings": False}, TOKENS)
    assert untied.head.weight is not untied.tokens.weight


@pytest.mark.parametrize(("options", "message"), [
    ({"embedding": 30, "heads": 4}, "option 'heads' (4) must divide 'embedding' (30)"),
    ({"context": 16}, "option 'context' (16) is shorter than the dataset's sequences (32 tokens)"),
])
def test_transformer_options_that_do_not_fit_are_refused(options: dict, message: str) -> None:
    """One RecipeError naming the option."""
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model("transformer", options, TOKENS)


@pytest.mark.parametrize("shape", [(1, 20, 20), (3, 32, 48), (3, 96, 96)])
def test_resnet_takes_any_image_size_and_channel_count(shape: tuple[int, int, int]) -> None:
    """Logits per class for any (C, H, W) the dataset declares; depth 34 has 3-4-6-3 blocks."""
    model = build_model("resnet", {"depth": 10, "width": 8}, DataInfo("image", shape, 5)).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 5)
    deep = build_model("resnet", {"depth": 34, "width": 4}, DataInfo("image", shape, 5))
    assert len(deep.stages) == 16


def test_resnet_refuses_a_depth_it_does_not_have_and_a_channel_mismatch() -> None:
    """depth must be 10, 18 or 34; channels, when given, must match the data."""
    with pytest.raises(RecipeError, match="option 'depth' must be one of 10, 18, 34"):
        build_model("resnet", {"depth": 12}, DataInfo("image", (3, 32, 32), 4))
    with pytest.raises(RecipeError, match="option 'channels' is 1 but the dataset's images have 3"):
        build_model("resnet", {"channels": 1}, DataInfo("image", (3, 32, 32), 4))


def test_tokenizers_round_trip_and_bpe_trains() -> None:
    """byte: UTF-8 both ways; a trained BPE reloads from its JSON and encodes shorter than bytes."""
    text = "héllo farm — the agents train together. " * 40
    byte = load_tokenizer(ByteTokenizer().spec())
    assert byte.decode(byte.encode("héllo")) == "héllo" and byte.vocab_size == 256
    bpe = load_tokenizer({"type": "bpe", "json": train_bpe([text], 300)})
    assert bpe.decode(bpe.encode("the agents train")) == "the agents train"
    assert len(bpe.encode(text)) < len(text.encode()) // 2
    chars = load_tokenizer({"type": "chars", "vocab": ["a", "b"]})
    assert chars.decode(chars.encode("abz")) == "ab"
    with pytest.raises(TokenizerError):
        load_tokenizer({"type": "bpe", "json": "{}"})
    with pytest.raises(TokenizerError):
        load_tokenizer({"type": "wordpiece"})


@pytest.mark.parametrize(("requested", "device", "bf16", "chosen", "scaled", "noted"), [
    ("auto", "cuda", True, "bf16", False, False),
    ("auto", "cuda", False, "fp16", True, False),
    ("bf16", "cuda", False, "fp16", True, True),
    ("fp32", "cuda", True, "fp32", False, False),
    ("auto", "cpu", False, "fp32", False, False),
    ("bf16", "cpu", False, "bf16", False, False),
    ("fp16", "cpu", False, "fp32", False, True),
    ("auto", "mps", False, "fp32", False, False),
])
def test_precision_plan(requested: str, device: str, bf16: bool, chosen: str, scaled: bool, noted: bool) -> None:
    """bf16 where the GPU has it, fp16 with a scaler otherwise, fp32 on the CPU unless bf16 is asked for."""
    plan = plan_precision(requested, device, bf16)
    assert (plan.name, plan.scaled, plan.note is not None) == (chosen, scaled, noted)


def test_model_file_is_safetensors_with_its_description_and_old_pt_still_loads(tmp_path: Path) -> None:
    """Weights and description round-trip through safetensors; a .pt state dict loads with weights_only; a pickle
    of anything else is refused."""
    torch.manual_seed(1)
    options = {"layers": 1, "heads": 2, "embedding": 16, "context": 32, "dropout": 0.0, "tied_embeddings": True}
    model = build_model("transformer", options, TOKENS).eval()
    meta = ModelMeta(recipe="transformer", options=options, input_kind="tokens", input_shape=[32], n_classes=256,
                     per_position=True, metric="perplexity", dataset="text", tokenizer={"type": "byte"})
    path = tmp_path / "lm.safetensors"
    save_model(model, meta, path)
    assert read_meta(path) == meta and json.loads(path.with_suffix(".json").read_text())["recipe"] == "transformer"
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a zip archive (torch.save) or a pickle
    loaded, _ = load_model(path)
    tokens = torch.randint(0, 256, (1, 8))
    assert torch.equal(loaded(tokens), model(tokens))

    old = tmp_path / "old.pt"
    torch.save(model.state_dict(), old)
    assert set(load_weights(old)) == set(model.state_dict())
    with pytest.raises(ModelFileError, match="without its description"):
        load_model(old)
    hostile = tmp_path / "hostile.pt"
    torch.save({"x": io.BytesIO(b"not a tensor")}, hostile)
    with pytest.raises(pickle.UnpicklingError):
        load_weights(hostile)


def test_npy_images_load_any_size_and_refuse_pickled_arrays(tmp_path: Path) -> None:
    """(N, C, H, W) uint8 images come back in [0, 1] with their shape; an object array is refused."""
    np.save(tmp_path / "images.npy", np.full((10, 3, 20, 24), 255, dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(10) % 3)
    options = {"images": str(tmp_path / "images.npy"), "labels": str(tmp_path / "labels.npy")}
    policy = SourcePolicy(dirs=(tmp_path,))
    train, _, info = load_dataset("npy", options, cache_dir=tmp_path / "c", validation_split=0.2, seed=0, policy=policy)
    assert info == DataInfo("image", (3, 20, 24), 3) and float(train.tensors[0].max()) == 1.0
    np.save(tmp_path / "labels.npy", np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True)
    with pytest.raises(RecipeError, match="object arrays are refused"):
        load_dataset("npy", options, cache_dir=tmp_path / "c", validation_split=0.2, seed=0, policy=policy)


def test_text_with_the_byte_tokenizer_carries_it(tmp_path: Path) -> None:
    """Byte tokens: a vocabulary of 256 and the tokenizer in the dataset's description."""
    (tmp_path / "t.txt").write_text("é" * 300, encoding="utf-8")
    options = {"source": str(tmp_path / "t.txt"), "tokenizer": "byte", "seq_len": 16}
    train, _, info = load_dataset("text", options, cache_dir=tmp_path / "c", validation_split=0.1, seed=0,
                                  policy=SourcePolicy(dirs=(tmp_path,)))
    assert info.n_classes == 256 and info.tokenizer == {"type": "byte"}
    assert set(train.tensors[0].unique().tolist()) <= {0xC3, 0xA9}


def _config(**extra: object) -> dict:
    return {"name": "m", "model": "transformer", "dataset": "synthetic", "batch_size": 8, "learning_rate": 0.001,
            "epochs": 1, "distributed": False, "n_clients": 1, "dataset_options": {"kind": "tokens", "seq_len": 64},
            **extra}


def test_new_task_options_are_validated_with_the_field_named() -> None:
    """precision, accumulate_steps, grad_clip, warmup_steps and the transformer's fit to the data."""
    with pytest.raises(ValidationError) as refused:
        validate_task({"config": _config(precision="fp8", accumulate_steps=0, grad_clip=-1, warmup_steps=1.5,
                                         model_options={"context": 32})}, Catalog.load())
    assert refused.value.fields == {
        "config.precision": "must be one of auto, fp32, bf16, fp16",
        "config.accumulate_steps": "must be at least 1",
        "config.grad_clip": "must be greater than 0",
        "config.warmup_steps": "must be a whole number",
        "config.model_options.context": "is 32, shorter than the dataset's sequences (dataset_options.seq_len 64)",
    }
    ok = validate_task({"config": _config(precision="bf16", accumulate_steps=4, grad_clip=1.0, warmup_steps=10)},
                       Catalog.load())
    assert (ok.config["precision"], ok.config["accumulate_steps"], ok.config["grad_clip"]) == ("bf16", 4, 1.0)
    assert validate_task({"config": _config()}, Catalog.load()).config["precision"] == "auto"


def test_apple_silicon_reports_an_mps_gpu() -> None:
    """On macOS arm64 the GPU is listed with backend mps (no memory counted apart from RAM); elsewhere nothing."""
    (gpu,) = apple_gpu("Darwin", "arm64")
    assert gpu["backend"] == "mps" and gpu["memory_total_mb"] is None
    assert apple_gpu("Linux", "x86_64") == [] and apple_gpu("Darwin", "x86_64") == []


def _lm_config(**extra: object) -> dict:
    return {"name": "acc", "model": "transformer", "dataset": "synthetic", "batch_size": 16, "learning_rate": 0.003,
            "epochs": 2, "distributed": False, "n_clients": 1, "seed": 3,
            "model_options": {"layers": 1, "heads": 2, "embedding": 16, "context": 16},
            "dataset_options": {"kind": "tokens", "samples": 512, "seq_len": 16, "vocab": 16}, **extra}


def test_accumulated_micro_batches_train_like_one_large_batch(tmp_path: Path) -> None:
    """batch 8 x accumulate 2 takes the steps and reaches the loss of batch 16; perplexity is reported for LMs."""
    one = run_worker(worker_spec(tmp_path / "one", _lm_config(grad_clip=1.0, warmup_steps=5, lr_schedule="cosine")))
    two = run_worker(worker_spec(tmp_path / "two", _lm_config(batch_size=8, accumulate_steps=2, grad_clip=1.0,
                                                               warmup_steps=5, lr_schedule="cosine")))
    finished = [next(m for m in run if m.type == "finished") for run in (one, two)]
    assert finished[0].step == finished[1].step == 2 * (460 // 16)
    a, b = (f.metrics for f in finished)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    assert a["val_perplexity"] == pytest.approx(np.exp(a["val_loss"]), rel=1e-6) and a["val_perplexity"] < 16
    epochs = [m for m in one if m.type == "epoch"]
    assert len(epochs) == 2 and all(e.val_perplexity is not None for e in epochs)
    assert Path(finished[0].model_path or "").suffix == ".safetensors"
