"""Compressed payloads for averaging pseudo-gradients: fp16, or int8 with one fp32 scale per block.

int8: each block of BLOCK values is sent as round(x / s) with s = max|x| / 127 (s kept in fp32), so the
error of every value is at most s / 2 = max|x of its block| / 254; a block whose values are whole multiples
of its s (with s a power of two) comes back exactly. fp16: values are cast (clamped to fp16's finite
range), exact for fp16-representable values. Decompression and every sum are in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import Tensor

Compression = Literal["none", "fp16", "int8"]
COMPRESSIONS: tuple[Compression, ...] = ("none", "fp16", "int8")
BLOCK = 256
INT8_LEVELS = 127
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Packed:
    """One flat tensor as sent: the values (fp32, fp16 or int8) and, for int8, one fp32 scale per block."""

    kind: Compression
    values: Tensor
    scales: Tensor | None
    numel: int

    @property
    def nbytes(self) -> int:
        """Bytes on the wire for this payload."""
        size = self.values.numel() * self.values.element_size()
        if self.scales is not None:
            size += self.scales.numel() * self.scales.element_size()
        return size


def payload_bytes(numel: int, kind: Compression, block: int = BLOCK) -> int:
    """Bytes one payload of `numel` values takes when packed as `kind`."""
    if kind == "none":
        return numel * 4
    if kind == "fp16":
        return numel * 2
    blocks = -(-numel // block)
    return blocks * block + blocks * 4


def pack(flat: Tensor, kind: Compression, block: int = BLOCK) -> Packed:
    """A flat fp32 tensor packed as `kind`."""
    import torch

    flat = flat.detach().to(torch.float32).reshape(-1)
    numel = flat.numel()
    if kind == "none":
        return Packed(kind, flat.clone(), None, numel)
    if kind == "fp16":
        return Packed(kind, flat.clamp(-FP16_MAX, FP16_MAX).to(torch.float16), None, numel)
    blocks = _blocks(flat, block)
    scales = blocks.abs().amax(dim=1) / INT8_LEVELS
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    quantised = torch.round(blocks / safe.unsqueeze(1)).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8)
    return Packed(kind, quantised.reshape(-1), scales, numel)


def unpack(packed: Packed, block: int = BLOCK) -> Tensor:
    """The fp32 values a payload stands for."""
    import torch

    if packed.kind in ("none", "fp16"):
        return packed.values.to(torch.float32)[: packed.numel]
    assert packed.scales is not None
    blocks = packed.values.to(torch.float32).reshape(-1, block) * packed.scales.unsqueeze(1)
    return blocks.reshape(-1)[: packed.numel]


def block_error_bound(flat: Tensor, kind: Compression, block: int = BLOCK) -> Tensor:
    """The largest error `pack` then `unpack` may make on each value of `flat` (same shape)."""
    import torch

    flat = flat.detach().to(torch.float32).reshape(-1)
    if kind == "none":
        return torch.zeros_like(flat)
    if kind == "fp16":
        # Half a unit in the last place of fp16: 2^-11 relative for normal values, 2^-25 absolute below them.
        return torch.maximum(flat.abs() * 2.0 ** -11, torch.full_like(flat, 2.0 ** -25))
    bound = _blocks(flat, block).abs().amax(dim=1) / (2 * INT8_LEVELS)
    # The scale itself is rounded to fp32: allow its relative error on the largest value of the block.
    bound = bound * (1 + 2.0 ** -20)
    return bound.repeat_interleave(block)[: flat.numel()]


def _blocks(flat: Tensor, block: int) -> Tensor:
    """`flat` zero-padded to whole blocks, one block per row."""
    import torch

    pad = (-flat.numel()) % block
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.reshape(-1, block)
