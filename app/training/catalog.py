"""The recipe catalog: names and options of the models and datasets a task may name. No torch here.

Built-in recipes are listed below; their code lives in app/training/recipes/ and is imported by workers
only. Recipes a volunteer installs are Python entry points in the group `aifarm.recipes`, named
`model.NAME` or `dataset.NAME`; the catalog lists them by name without importing them. A built-in model
declares here the input kind it is fed and how its loss is taken; an installed model declares its input kind
on its `build` callable (see app.training.recipes.plugins), read when a worker loads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "aifarm.recipes"
INPUT_KINDS = ("vector", "image", "tokens")
DEFAULT_INPUT_KIND = "vector"  # what an installed model that declares none is fed


@dataclass(frozen=True)
class Option:
    """One recipe option: its type, default, bounds and help."""

    kind: str  # "int", "float", "str", "bool", "int_list", "sha256", "source"
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    help: str = ""


@dataclass(frozen=True)
class Recipe:
    """A model or dataset recipe's description."""

    name: str
    kind: str  # "model" or "dataset"
    data: frozenset[str]  # models: input kinds accepted; datasets: kinds produced
    options: dict[str, Option] = field(default_factory=dict)
    description: str = ""
    builtin: bool = True
    input_kind: str | None = None  # models: the data kind the model is fed (None: declared by an installed recipe)
    per_position: bool = False  # models: one prediction per sequence position, loss taken over every position
    metric: str = "accuracy"  # models: the evaluation metric reported besides the loss ("perplexity" for LMs)


_SOURCE = Option("source", help="a local file path or an http(s) URL")
_SHA = Option("sha256", help="sha256 of the file (required for URLs)")

BUILTIN_MODELS: dict[str, Recipe] = {
    "mlp": Recipe("mlp", "model", frozenset({"vector", "image"}), {
        "hidden": Option("int_list", [128, 64], 1, 8192, help="sizes of the hidden layers"),
        "dropout": Option("float", 0.0, 0.0, 0.9, help="dropout after each hidden layer"),
    }, "multi-layer perceptron on feature vectors (images are flattened)", input_kind="vector"),
    "cnn": Recipe("cnn", "model", frozenset({"image"}), {
        "channels": Option("int_list", [16, 32], 1, 512, help="channels of the two convolution blocks"),
        "hidden": Option("int", 128, 8, 8192, help="size of the dense layer"),
    }, "small convolutional network for 28x28 single-channel images", input_kind="image"),
    "char_lstm": Recipe("char_lstm", "model", frozenset({"tokens"}), {
        "embedding": Option("int", 64, 4, 4096, help="embedding size"),
        "hidden": Option("int", 128, 8, 8192, help="LSTM hidden size"),
        "layers": Option("int", 1, 1, 8, help="LSTM layers"),
    }, "character-level LSTM language model (predicts the next character)", input_kind="tokens",
        per_position=True, metric="perplexity"),
    "transformer": Recipe("transformer", "model", frozenset({"tokens"}), {
        "layers": Option("int", 4, 1, 48, help="decoder blocks"),
        "heads": Option("int", 4, 1, 64, help="attention heads (must divide embedding)"),
        "embedding": Option("int", 128, 8, 8192, help="embedding size"),
        "context": Option("int", 128, 2, 8192, help="longest sequence (at least the dataset's seq_len)"),
        "dropout": Option("float", 0.0, 0.0, 0.9, help="dropout on attention and residual paths"),
        "tied_embeddings": Option("bool", True, help="the output layer shares the token embedding's weights"),
    }, "GPT-style decoder-only language model (causal self-attention, predicts the next token)",
        input_kind="tokens", per_position=True, metric="perplexity"),
    "resnet": Recipe("resnet", "model", frozenset({"image"}), {
        "depth": Option("int", 18, 10, 34, help="10, 18 or 34 layers (basic residual blocks)"),
        "width": Option("int", 64, 4, 512, help="channels of the first stage (doubled at each of the 4 stages)"),
        "channels": Option("int", None, 1, 64, help="input channels (default: what the dataset declares)"),
    }, "ResNet-style image classifier for images of any size the dataset declares", input_kind="image"),
}
RESNET_DEPTHS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

BUILTIN_DATASETS: dict[str, Recipe] = {
    "synthetic": Recipe("synthetic", "dataset", frozenset({"vector", "image", "tokens"}), {
        "kind": Option("str", "vector", choices=("vector", "image", "tokens"), help="what to generate"),
        "samples": Option("int", 2048, 16, 50_000_000, help="number of samples"),
        "features": Option("int", 32, 1, 1_000_000, help="features per vector sample"),
        "classes": Option("int", 4, 2, 10_000, help="number of classes"),
        "seq_len": Option("int", 32, 2, 4096, help="sequence length for tokens"),
        "vocab": Option("int", 32, 2, 65_536, help="vocabulary size for tokens"),
        "noise": Option("float", 0.5, 0.0, 100.0, help="noise around the class centres"),
        "seed": Option("int", 0, 0, 2**31 - 1, help="the generator's seed: same seed, same data"),
    }, "deterministic generated data of any size, for tests and benchmarks"),
    "mnist": Recipe("mnist", "dataset", frozenset({"image", "vector"}), {
        "images": Option("source", required=True, help="IDX images file (path or URL, .gz allowed)"),
        "labels": Option("source", required=True, help="IDX labels file (path or URL, .gz allowed)"),
        "images_sha256": _SHA,
        "labels_sha256": _SHA,
    }, "MNIST-format IDX files (28x28 grey images and labels), from a path or a URL with its sha256"),
    "csv": Recipe("csv", "dataset", frozenset({"vector"}), {
        "source": Option("source", required=True, help="CSV file with a header row (path or URL)"),
        "sha256": _SHA,
        "label_column": Option("str", required=True, help="the column holding the class label"),
    }, "tabular data: numeric feature columns and a label column"),
    "text": Recipe("text", "dataset", frozenset({"tokens"}), {
        "source": Option("source", required=True, help="UTF-8 text file (path or URL)"),
        "sha256": _SHA,
        "seq_len": Option("int", 64, 2, 4096, help="tokens per training sequence"),
        "tokenizer": Option("str", "chars", choices=("chars", "byte", "bpe"),
                            help="chars (the text's own characters), byte (UTF-8 bytes) or bpe (tokenizer_file)"),
        "tokenizer_file": Option("source", help="Hugging Face tokenizer JSON for bpe (path or URL)"),
        "tokenizer_file_sha256": _SHA,
    }, "plain text for language models, as characters, bytes or BPE tokens"),
    "published": Recipe("published", "dataset", frozenset({"tokens", "image", "vector"}), {
        "name": Option("str", required=True, help="a dataset published with `aifarm datasets publish`"),
        "version": Option("int", None, 1, 10**9, help="its version (default: the newest)"),
        "seq_len": Option("int", 128, 2, 65_536, help="tokens per training sequence (token datasets)"),
        "label_column": Option("str", "label", help="the column holding the class label (CSV datasets)"),
        "max_validation_samples": Option("int", 2048, 1, 10_000_000, help="at most this many validation samples"),
    }, "a dataset published to the farm: shards fetched from peers, read from disk as needed"),
    "npy": Recipe("npy", "dataset", frozenset({"image", "vector"}), {
        "images": Option("source", required=True, help=".npy array of images: (N, H, W) or (N, C, H, W)"),
        "labels": Option("source", required=True, help=".npy array of N whole-number class labels"),
        "images_sha256": _SHA,
        "labels_sha256": _SHA,
    }, "images of any size and labels as a pair of NumPy .npy files (uint8 images are scaled to [0, 1])"),
}


def installed_recipes() -> dict[str, Recipe]:
    """Recipes installed as `aifarm.recipes` entry points, by '<kind>.<name>' (not imported)."""
    out: dict[str, Recipe] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind, _, name = ep.name.partition(".")
        if kind in ("model", "dataset") and name:
            out[ep.name] = Recipe(name, kind, frozenset(INPUT_KINDS), {}, f"installed: {ep.value}",
                                  builtin=False)
    return out


@dataclass(frozen=True)
class Catalog:
    """The models and datasets this machine knows."""

    models: dict[str, Recipe]
    datasets: dict[str, Recipe]

    @classmethod
    def load(cls) -> "Catalog":
        """Built-in recipes plus those installed on this machine."""
        models, datasets = dict(BUILTIN_MODELS), dict(BUILTIN_DATASETS)
        for recipe in installed_recipes().values():
            (models if recipe.kind == "model" else datasets).setdefault(recipe.name, recipe)
        return cls(models, datasets)

    def has(self, model: str, dataset: str) -> bool:
        """True when both recipes are available here."""
        return model in self.models and dataset in self.datasets


def check_option(name: str, option: Option, value: Any) -> str | None:
    """What is wrong with an option value, or None."""
    kind = option.kind
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
            return f"must be {'a whole number' if kind == 'int' else 'a number'}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be finite"
        if option.minimum is not None and value < option.minimum:
            return f"must be at least {option.minimum:g}"
        if option.maximum is not None and value > option.maximum:
            return f"must be at most {option.maximum:g}"
    elif kind == "bool":
        if not isinstance(value, bool):
            return "must be true or false"
    elif kind == "int_list":
        if not isinstance(value, list) or not value or len(value) > 16:
            return "must be a list of 1 to 16 whole numbers"
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                return "must be a list of whole numbers"
            if (option.minimum is not None and item < option.minimum) or (option.maximum is not None and item > option.maximum):
                return f"each must be between {option.minimum:g} and {option.maximum:g}"
    elif kind == "sha256":
        if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
            return "must be 64 hexadecimal characters"
    elif kind == "source":
        if not isinstance(value, str) or not value.strip() or len(value) > 2048:
            return "must be a file path or an http(s) URL"
        if "://" in value and not value.lower().startswith(("http://", "https://")):
            return "only http:// and https:// URLs are supported"
    elif kind == "str":
        if not isinstance(value, str) or not value or len(value) > 255:
            return "must be a non-empty text of at most 255 characters"
        if option.choices and value not in option.choices:
            return f"must be one of {', '.join(option.choices)}"
    return None
