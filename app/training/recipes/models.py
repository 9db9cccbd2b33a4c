"""Built-in models (mlp, cnn, char_lstm) and their loss: cross-entropy over classes or over every sequence position."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from app.training.catalog import BUILTIN_MODELS
from app.training.recipes import RecipeError
from app.training.recipes.datasets import DataInfo, resolved_options

CNN_INPUT = (1, 28, 28)


class CharLSTM(nn.Module):
    """Embedding → LSTM → per-position linear head over the vocabulary."""

    def __init__(self, vocab: int, embedding: int, hidden: int, layers: int) -> None:
        """Build the layers (default initialisation, so torch.manual_seed makes it deterministic)."""
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        """(N, seq_len) int64 tokens → (N, seq_len, vocab) logits."""
        out, _ = self.lstm(self.embedding(tokens))
        logits: torch.Tensor = self.head(out)
        return logits


def build_model(name: str, options: dict[str, Any], info: DataInfo) -> nn.Module:
    """A freshly initialised built-in model for data described by info; RecipeError on a mismatch."""
    recipe = BUILTIN_MODELS.get(name) if isinstance(name, str) else None
    if recipe is None:
        raise RecipeError(f"unknown model {name!r}; built-in models: {', '.join(sorted(BUILTIN_MODELS))}")
    if not isinstance(info, DataInfo):
        raise RecipeError(f"model {name!r}: expected a DataInfo, got {type(info).__name__}")
    if info.kind not in recipe.data:
        raise RecipeError(f"model {name!r} takes {' or '.join(sorted(recipe.data))} data, but the dataset gives "
                          f"{info.kind} data")
    if not isinstance(info.n_classes, int) or info.n_classes < 1:
        raise RecipeError(f"model {name!r}: the dataset has an invalid number of classes {info.n_classes!r}")
    if not info.input_shape or any(not isinstance(d, int) or d < 1 for d in info.input_shape):
        raise RecipeError(f"model {name!r}: invalid input shape {info.input_shape!r}")
    return _BUILDERS[name](resolved_options(recipe, options), info)


def _mlp(opts: dict[str, Any], info: DataInfo) -> nn.Module:
    """Flatten → (Linear → ReLU [→ Dropout]) per hidden size → Linear to the classes."""
    dropout = float(opts["dropout"])
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(info.input_shape)
    for size in opts["hidden"]:
        layers += [nn.Linear(width, int(size)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(size)
    layers.append(nn.Linear(width, info.n_classes))
    return nn.Sequential(*layers)


def _cnn(opts: dict[str, Any], info: DataInfo) -> nn.Module:
    """Two conv3x3+ReLU+maxpool2 blocks on (1,28,28) → dense hidden layer → classes."""
    channels, hidden = opts["channels"], int(opts["hidden"])
    if tuple(info.input_shape) != CNN_INPUT:
        raise RecipeError(f"model 'cnn' needs (1, 28, 28) images, got per-sample shape {tuple(info.input_shape)}")
    if len(channels) != 2:
        raise RecipeError(f"model 'cnn': option 'channels' must list exactly 2 sizes, got {channels!r}")
    c1, c2 = int(channels[0]), int(channels[1])
    return nn.Sequential(
        nn.Conv2d(1, c1, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
        nn.Linear(hidden, info.n_classes),
    )


def _char_lstm(opts: dict[str, Any], info: DataInfo) -> nn.Module:
    """A CharLSTM over the dataset's vocabulary, for (seq_len,) token inputs."""
    if len(info.input_shape) != 1:
        raise RecipeError(f"model 'char_lstm' needs (seq_len,) token inputs, got per-sample shape {info.input_shape}")
    return CharLSTM(info.n_classes, int(opts["embedding"]), int(opts["hidden"]), int(opts["layers"]))


_BUILDERS: dict[str, Callable[[dict[str, Any], DataInfo], nn.Module]] = {
    "mlp": _mlp, "cnn": _cnn, "char_lstm": _char_lstm,
}


def loss_and_correct(model_name: str, outputs: Tensor, targets: Tensor, *,
                     per_position: bool | None = None) -> tuple[Tensor, int, int]:
    """(mean cross-entropy, correct predictions, predictions counted); over every position for a per-position model.

    per_position defaults to what the catalog declares for a built-in model (False for any other).
    """
    if per_position is None:
        recipe = BUILTIN_MODELS.get(model_name)
        per_position = recipe is not None and recipe.per_position
    if per_position and (outputs.dim() != 3 or targets.dim() != 2):
        raise RecipeError(f"{model_name}: expected (N, seq_len, vocab) outputs and (N, seq_len) targets, got "
                          f"{tuple(outputs.shape)} and {tuple(targets.shape)}")
    if outputs.dim() < 2 or tuple(outputs.shape[:-1]) != tuple(targets.shape):
        raise RecipeError(f"{model_name}: outputs of shape {tuple(outputs.shape)} do not match targets of shape "
                          f"{tuple(targets.shape)}")
    if targets.dtype != torch.int64:
        raise RecipeError(f"{model_name}: class targets must be int64, got {targets.dtype}")
    logits = outputs.reshape(-1, outputs.shape[-1])
    flat = targets.reshape(-1)
    loss = F.cross_entropy(logits, flat)
    correct = int((logits.detach().argmax(dim=-1) == flat).sum().item())
    return loss, correct, int(flat.numel())
