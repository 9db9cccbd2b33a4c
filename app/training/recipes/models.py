"""Built-in models (mlp, cnn, char_lstm, transformer, resnet) and their loss: cross-entropy over classes or over every sequence position."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from app.training.catalog import BUILTIN_MODELS, RESNET_DEPTHS
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


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through scaled_dot_product_attention."""

    def __init__(self, embedding: int, heads: int, dropout: float) -> None:
        """Joint q/k/v projection and output projection."""
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(embedding, 3 * embedding)
        self.proj = nn.Linear(embedding, embedding)

    def forward(self, x: Tensor) -> Tensor:
        """(N, T, C) → (N, T, C), each position attending to itself and earlier ones."""
        n, t, c = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        projected: Tensor = self.proj(out.transpose(1, 2).reshape(n, t, c))
        return projected


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, embedding: int, heads: int, dropout: float) -> None:
        """Two layer norms, attention and a 4x GELU MLP."""
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(embedding), nn.LayerNorm(embedding)
        self.attention = CausalSelfAttention(embedding, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(embedding, 4 * embedding), nn.GELU(), nn.Linear(4 * embedding, embedding),
                                 nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """One residual block."""
        x = x + self.drop(self.attention(self.ln1(x)))
        out: Tensor = x + self.mlp(self.ln2(x))
        return out


class Transformer(nn.Module):
    """GPT-style decoder-only language model: token and learned position embeddings, blocks, a vocabulary head."""

    def __init__(self, vocab: int, layers: int, heads: int, embedding: int, context: int, dropout: float,
                 tied: bool) -> None:
        """Build the layers (GPT-2 style initialisation, deterministic under torch.manual_seed)."""
        super().__init__()
        self.context = context
        self.tokens = nn.Embedding(vocab, embedding)
        self.positions = nn.Embedding(context, embedding)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecoderBlock(embedding, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(embedding)
        self.head = nn.Linear(embedding, vocab, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if tied:
            self.head.weight = self.tokens.weight

    def forward(self, tokens: Tensor) -> Tensor:
        """(N, T) int64 tokens, T ≤ context → (N, T, vocab) logits."""
        t = tokens.shape[1]
        if t > self.context:
            raise RecipeError(f"transformer: a sequence of {t} tokens is longer than its context {self.context}")
        x = self.drop(self.tokens(tokens) + self.positions(torch.arange(t, device=tokens.device)))
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.head(self.ln(x))
        return logits


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch norm layers with a residual connection (projected when the shape changes)."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        """The block's layers."""
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(outputs))

    def forward(self, x: Tensor) -> Tensor:
        """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-10/18/34 with basic blocks; a 3x3 stem for small images, 7x7/2 and max-pool from 64 pixels up."""

    def __init__(self, blocks: tuple[int, ...], width: int, channels: int, classes: int, small: bool) -> None:
        """Stem, four stages (width, 2x, 4x, 8x channels), global average pool, linear classifier."""
        super().__init__()
        if small:
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        layers: list[nn.Module] = []
        inputs = width
        for stage, count in enumerate(blocks):
            outputs = width * 2 ** stage
            for i in range(count):
                layers.append(BasicBlock(inputs, outputs, 2 if stage > 0 and i == 0 else 1))
                inputs = outputs
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(inputs, classes)

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, H, W) → (N, classes) logits."""
        features = self.stages(self.stem(images))
        logits: Tensor = self.head(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))
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


def _transformer(opts: dict[str, Any], info: DataInfo) -> nn.Module:
    """A Transformer over the dataset's vocabulary; its context must hold the dataset's sequences."""
    if len(info.input_shape) != 1:
        raise RecipeError(f"model 'transformer' needs (seq_len,) token inputs, got per-sample shape {info.input_shape}")
    embedding, heads, context = int(opts["embedding"]), int(opts["heads"]), int(opts["context"])
    if embedding % heads:
        raise RecipeError(f"model 'transformer': option 'heads' ({heads}) must divide 'embedding' ({embedding})")
    if info.input_shape[0] > context:
        raise RecipeError(f"model 'transformer': option 'context' ({context}) is shorter than the dataset's "
                          f"sequences ({info.input_shape[0]} tokens)")
    return Transformer(info.n_classes, int(opts["layers"]), heads, embedding, context, float(opts["dropout"]),
                       bool(opts["tied_embeddings"]))


def _resnet(opts: dict[str, Any], info: DataInfo) -> nn.Module:
    """A ResNet for (C, H, W) images of the dataset's size."""
    depth = int(opts["depth"])
    if depth not in RESNET_DEPTHS:
        raise RecipeError(f"model 'resnet': option 'depth' must be one of {', '.join(map(str, RESNET_DEPTHS))}, "
                          f"got {depth}")
    if len(info.input_shape) != 3:
        raise RecipeError(f"model 'resnet' needs (channels, height, width) images, got per-sample shape "
                          f"{info.input_shape}")
    channels, height, width = info.input_shape
    if opts.get("channels") is not None and int(opts["channels"]) != channels:
        raise RecipeError(f"model 'resnet': option 'channels' is {opts['channels']} but the dataset's images have "
                          f"{channels}")
    return ResNet(RESNET_DEPTHS[depth], int(opts["width"]), channels, info.n_classes, min(height, width) < 64)


_BUILDERS: dict[str, Callable[[dict[str, Any], DataInfo], nn.Module]] = {
    "mlp": _mlp, "cnn": _cnn, "char_lstm": _char_lstm, "transformer": _transformer, "resnet": _resnet,
}


def loss_and_correct(model_name: str, outputs: Tensor, targets: Tensor, *,
                     per_position: bool | None = None) -> tuple[Tensor, int, int]:
    """(mean cross-entropy, correct predictions, predictions counted); over every position for a per-position model.

    per_position defaults to what the catalog declares for a built-in model (False for any other).
    """
    if per_position is None:
        recipe = BUILTIN_MODELS.get(model_name)
        per_position = recipe is not None and recipe.per_position
    check_outputs(model_name, outputs, targets, per_position)
    loss, correct, counted = loss_and_counts(outputs, targets)
    return loss, int(correct.item()), counted


def check_outputs(model_name: str, outputs: Tensor, targets: Tensor, per_position: bool) -> None:
    """RecipeError when a model's outputs do not fit the targets (shapes known on the host: no device sync)."""
    if per_position and (outputs.dim() != 3 or targets.dim() != 2):
        raise RecipeError(f"{model_name}: expected (N, seq_len, vocab) outputs and (N, seq_len) targets, got "
                          f"{tuple(outputs.shape)} and {tuple(targets.shape)}")
    if outputs.dim() < 2 or tuple(outputs.shape[:-1]) != tuple(targets.shape):
        raise RecipeError(f"{model_name}: outputs of shape {tuple(outputs.shape)} do not match targets of shape "
                          f"{tuple(targets.shape)}")
    if targets.dtype != torch.int64:
        raise RecipeError(f"{model_name}: class targets must be int64, got {targets.dtype}")


def loss_and_counts(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, int]:
    """(mean cross-entropy, correct predictions as a device tensor, predictions counted): nothing read back."""
    logits = outputs.reshape(-1, outputs.shape[-1]).float()
    flat = targets.reshape(-1)
    loss = F.cross_entropy(logits, flat)
    correct = (logits.detach().argmax(dim=-1) == flat).sum()
    return loss, correct, int(flat.numel())
