"""Model files: weights as safetensors, with the recipe, options and tokenizer in its header and in a JSON beside it.

Reading a model's description needs no torch (the command line and the agent read it); saving and loading weights
import torch and safetensors inside the functions that need them (worker and try processes only). Nothing is ever
unpickled: safetensors holds plain tensors, and an old `.pt` state dict is read with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.files import publish_atomically, sha256_file
from app.training.tokenizers import TokenizerSpec

MODEL_FORMAT = 1
META_KEY = "aifarm"
MAX_HEADER_BYTES = 100 << 20


class ModelFileError(ValueError):
    """A model file, or its description, that cannot be used."""


@dataclass(frozen=True)
class ModelMeta:
    """What rebuilds a trained model: its recipe and options, the data it takes, and its tokenizer."""

    recipe: str
    options: dict[str, Any]
    input_kind: str
    input_shape: list[int]
    n_classes: int
    per_position: bool
    metric: str
    dataset: str
    tokenizer: TokenizerSpec | None
    format: int = MODEL_FORMAT

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        """Parse and check the fields; ModelFileError when they are not a model description."""
        try:
            data = json.loads(text)
            meta = cls(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            meta = None
        if meta is None or not isinstance(meta.recipe, str) or not isinstance(meta.options, dict) \
                or not isinstance(meta.input_shape, list) or not isinstance(meta.n_classes, int):
            raise ModelFileError("the model's description is not valid")
        return meta

    @property
    def kind(self) -> str:
        """'language model', 'image classifier' or '<input kind> classifier'."""
        if self.per_position and self.input_kind == "tokens":
            return "language model"
        return f"{self.input_kind} classifier"


def meta_path(weights: Path) -> Path:
    """The JSON file beside a weights file."""
    return weights.with_suffix(".json")


def read_meta(path: Path) -> ModelMeta:
    """The description stored in a safetensors file's header (read without torch)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ModelFileError(f"{path.name} is not a safetensors file")
            (size,) = struct.unpack("<Q", raw)
            if size > MAX_HEADER_BYTES:
                raise ModelFileError(f"{path.name} is not a safetensors file (header of {size} bytes)")
            header = json.loads(fh.read(size))
    except (OSError, ValueError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{path.name} is not a readable safetensors file") from None
    text = (header.get("__metadata__") or {}).get(META_KEY) if isinstance(header, dict) else None
    if not isinstance(text, str):
        raise ModelFileError(f"{path.name} carries no AI Farm model description")
    return ModelMeta.from_json(text)


def save_model(model: Any, meta: ModelMeta, path: Path) -> str:
    """Write the weights (safetensors, description in its header) and the JSON beside, atomically; the file's sha256."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # Clones: tied weights share storage, which safetensors refuses; each key gets its own copy.
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={META_KEY: meta.to_json()})
        publish_atomically(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_meta(meta, meta_path(path))
    return sha256_file(path)


def write_meta(meta: ModelMeta, path: Path) -> None:
    """The description as an indented JSON file, published atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(json.loads(meta.to_json()), indent=2) + "\n", encoding="utf-8")
        publish_atomically(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, Any]:
    """A state dict from safetensors, or from an old `.pt` file with weights_only=True; never unpickled."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        loaded: dict[str, Any] = load_file(str(path), device="cpu")
        return loaded
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path.name} is not a state dict of tensors")
    return state


def load_model(path: Path) -> tuple[Any, ModelMeta]:
    """The model rebuilt from its description and loaded with its weights, in eval mode."""
    from app.training.recipes.datasets import DataInfo
    from app.training.recipes.plugins import build_model

    if path.suffix == ".safetensors":
        meta = read_meta(path)
    elif meta_path(path).is_file():
        meta = ModelMeta.from_json(meta_path(path).read_text(encoding="utf-8"))
    else:
        raise ModelFileError(f"{path.name} was saved without its description (recipe, options, tokenizer)")
    info = DataInfo(meta.input_kind, tuple(meta.input_shape), meta.n_classes, None, meta.tokenizer)
    model = build_model(meta.recipe, meta.options, info)
    model.load_state_dict(load_weights(path))
    model.eval()
    return model, meta
