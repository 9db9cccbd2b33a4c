"""Text to token ids for publishing: the `byte` tokenizer (no file, ids 0-255), or a tokenizers JSON file.

A JSON tokenizer (Hugging Face `tokenizers` format, e.g. one trained for the farm) is used when the
`tokenizers` package is importable; the file travels with the dataset as one of its shards.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BYTE_VOCAB = 256


class TokenizerError(ValueError):
    """A tokenizer that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class TextTokenizer:
    """Encodes text as token ids; `file` is the JSON to ship with the dataset (None for `byte`)."""

    type: str  # "byte" | "json"
    vocab_size: int
    file: Path | None
    encoder: Any = None

    @property
    def dtype(self) -> str:
        """The narrowest stored dtype that holds every id."""
        return "uint16" if self.vocab_size <= 1 << 16 else "uint32"

    def encode(self, data: bytes) -> bytes:
        """The little-endian token ids of UTF-8 bytes, in this tokenizer's dtype."""
        if self.type == "byte":
            out = bytearray(2 * len(data))
            out[0::2] = data  # each byte is its own id: the low byte of a little-endian uint16
            return bytes(out)
        ids = self.encoder.encode(data.decode("utf-8", errors="replace")).ids
        packed = array("H" if self.dtype == "uint16" else "I", ids)
        if packed.itemsize != (2 if self.dtype == "uint16" else 4):
            raise TokenizerError("this platform's array sizes do not match uint16/uint32")
        import sys

        if sys.byteorder != "little":
            packed.byteswap()
        return packed.tobytes()


def load_tokenizer(spec: str) -> TextTokenizer:
    """`byte`, or the path of a tokenizers JSON file; TokenizerError naming the problem."""
    if spec == "byte":
        return TextTokenizer("byte", BYTE_VOCAB, None)
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".json":
        raise TokenizerError(f"--tokenizer must be byte or a tokenizer JSON file, not {spec!r}")
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {spec} does not exist")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerError("a JSON tokenizer needs the `tokenizers` package (pip install tokenizers)") from None
    try:
        encoder = Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises its own exception types for a malformed file
        raise TokenizerError(f"tokenizer file {spec} cannot be read: {str(exc).splitlines()[0][:200]}") from None
    return TextTokenizer("json", int(encoder.get_vocab_size()), path, encoder)
