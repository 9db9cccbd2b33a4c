"""Tokenizers that travel with datasets and models: bytes, a dataset's own characters, or a Hugging Face BPE JSON.

A tokenizer is described by a TokenizerSpec (plain JSON data, saved beside a model); no torch here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NotRequired, Protocol, TypedDict

BYTE_VOCAB = 256
TokenizerKind = Literal["byte", "chars", "bpe"]
TOKENIZER_KINDS: tuple[str, ...] = ("byte", "chars", "bpe")


class TokenizerSpec(TypedDict):
    """A tokenizer as data: its kind, and the characters (chars) or the Hugging Face JSON (bpe) it needs."""

    type: TokenizerKind
    vocab: NotRequired[list[str]]
    json: NotRequired[str]


class Tokenizer(Protocol):
    """Text to token ids and back."""

    @property
    def vocab_size(self) -> int:
        """How many token ids."""

    def encode(self, text: str) -> list[int]:
        """Token ids of a text."""

    def decode(self, ids: list[int]) -> str:
        """The text of token ids."""

    def spec(self) -> TokenizerSpec:
        """This tokenizer as data."""


class TokenizerError(ValueError):
    """A tokenizer description or file that cannot be used."""


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 ids, no file; undecodable byte runs come back as U+FFFD."""

    vocab_size: int = BYTE_VOCAB

    def encode(self, text: str) -> list[int]:
        """The text's UTF-8 bytes."""
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Bytes back to text (invalid sequences replaced)."""
        return bytes(i for i in ids if 0 <= i < BYTE_VOCAB).decode("utf-8", errors="replace")

    def spec(self) -> TokenizerSpec:
        """{"type": "byte"}."""
        return {"type": "byte"}


@dataclass(frozen=True)
class CharTokenizer:
    """A dataset's own characters, sorted: id i is vocab[i]; characters it has never seen are dropped."""

    vocab: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        """How many characters."""
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of the known characters of the text."""
        index = {c: i for i, c in enumerate(self.vocab)}
        return [index[c] for c in text if c in index]

    def decode(self, ids: list[int]) -> str:
        """The characters of the ids."""
        return "".join(self.vocab[i] for i in ids if 0 <= i < len(self.vocab))

    def spec(self) -> TokenizerSpec:
        """{"type": "chars", "vocab": [...]}."""
        return {"type": "chars", "vocab": list(self.vocab)}


class BpeTokenizer:
    """A byte-pair-encoding tokenizer in the Hugging Face `tokenizers` JSON format."""

    def __init__(self, text: str) -> None:
        """Parse the JSON (TokenizerError when it is not a tokenizer)."""
        try:
            from tokenizers import Tokenizer as HfTokenizer
        except ImportError as exc:  # the train extra brings it
            raise TokenizerError("BPE tokenizers need the 'tokenizers' package (pip install 'aifarm[train]')") from exc
        try:
            self._tokenizer = HfTokenizer.from_str(text)
        except Exception as exc:  # the library raises its own exception types for malformed files
            raise TokenizerError(f"not a Hugging Face tokenizer JSON: {str(exc).splitlines()[0][:200]}") from None
        self._json = text
        self.vocab_size = int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of the text."""
        return list(self._tokenizer.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        """The text of the ids."""
        return str(self._tokenizer.decode([i for i in ids if 0 <= i < self.vocab_size]))

    def spec(self) -> TokenizerSpec:
        """{"type": "bpe", "json": "..."}."""
        return {"type": "bpe", "json": self._json}


def train_bpe(texts: Iterable[str], vocab_size: int) -> str:
    """A byte-level BPE tokenizer trained on texts, as Hugging Face tokenizer JSON."""
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if not 257 <= vocab_size <= 1 << 20:
        raise TokenizerError(f"vocab_size must be between 257 and {1 << 20}, got {vocab_size}")
    tokenizer = HfTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return str(tokenizer.to_str())


def load_tokenizer(spec: object) -> Tokenizer:
    """The tokenizer a spec describes; TokenizerError naming what is wrong."""
    if not isinstance(spec, dict) or spec.get("type") not in TOKENIZER_KINDS:
        raise TokenizerError(f"unknown tokenizer; expected a type of {', '.join(TOKENIZER_KINDS)}")
    if spec["type"] == "byte":
        return ByteTokenizer()
    if spec["type"] == "chars":
        vocab = spec.get("vocab")
        if not isinstance(vocab, list) or not vocab or not all(isinstance(c, str) and len(c) == 1 for c in vocab):
            raise TokenizerError("a chars tokenizer needs its vocab: a list of single characters")
        return CharTokenizer(tuple(vocab))
    text = spec.get("json")
    if not isinstance(text, str):
        raise TokenizerError("a bpe tokenizer needs its Hugging Face JSON")
    return BpeTokenizer(text)


def spec_json(spec: TokenizerSpec) -> str:
    """A spec as compact JSON."""
    return json.dumps(spec, separators=(",", ":"))
