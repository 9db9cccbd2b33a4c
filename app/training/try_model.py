"""Run a trained model locally: `python -m app.training.try_model FILE --prompt TEXT` prints sampled text as it is
generated; `--image FILE` prints the top classes. A separate process, so that the agent and the command line never
import torch. Problems are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.training.model_files import ModelFileError, ModelMeta, load_model
from app.training.tokenizers import TokenizerError, load_tokenizer


class TryError(Exception):
    """Input the model cannot take."""


def generate(model: Any, meta: ModelMeta, prompt: str, max_tokens: int, temperature: float,
             seed: int = 0) -> Iterator[str]:
    """Sampled continuation of the prompt, piece by piece (greedy at temperature 0)."""
    import torch

    if meta.tokenizer is None:
        raise TryError("the model was saved without its tokenizer")
    tokenizer = load_tokenizer(meta.tokenizer)
    ids = tokenizer.encode(prompt) or [tokenizer.encode("\n")[0] if tokenizer.encode("\n") else 0]
    context = int(meta.options.get("context") or meta.input_shape[0])
    generator = torch.Generator().manual_seed(seed)
    produced: list[int] = []
    shown = ""
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = model(torch.tensor([ids[-context:]], dtype=torch.int64))[0, -1].float()
            if temperature <= 0:
                token = int(logits.argmax())
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            ids.append(token)
            produced.append(token)
            text = tokenizer.decode(produced)
            # A multi-byte character is shown once all its bytes are there.
            if text.startswith(shown) and not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text


def classify(model: Any, meta: ModelMeta, image: Path, top: int) -> list[tuple[int, float]]:
    """The top classes of an image (resized to the model's input size) with their probabilities."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    channels, height, width = meta.input_shape
    try:
        with Image.open(image) as opened:
            picture = opened.convert("L" if channels == 1 else "RGB").resize((width, height))
    except (OSError, UnidentifiedImageError):
        raise TryError(f"{image} is not an image Pillow can read") from None
    array = np.asarray(picture, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if array.shape[0] != channels:
        raise TryError(f"the model takes {channels}-channel images")
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(array)[None]).float(), dim=-1)[0]
    values, indices = probs.topk(min(top, probs.numel()))
    return [(int(i), float(v)) for v, i in zip(values, indices, strict=True)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.training.try_model")
    parser.add_argument("model", type=Path)
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run(args: argparse.Namespace) -> None:
    """Load the model and answer the prompt or the image, printing as it goes."""
    import torch

    torch.set_num_threads(1)
    model, meta = load_model(args.model)
    if meta.kind == "language model":
        for piece in generate(model, meta, args.prompt or "", args.max_tokens, args.temperature, args.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    elif meta.input_kind == "image" and args.image is not None:
        for index, probability in classify(model, meta, args.image, args.top):
            print(f"class {index}: {probability:.1%}")
    else:
        raise TryError(f"the model is a {meta.kind} ({meta.recipe})")


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0, or 2 with one line on stderr."""
    args = _parser().parse_args(argv)
    try:
        run(args)
    except (TryError, ModelFileError, TokenizerError, OSError) as exc:
        print(f"aifarm: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
