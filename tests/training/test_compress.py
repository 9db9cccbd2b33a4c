"""fp16 and int8 payloads: the error bound per block, and exact values where they are representable."""

from __future__ import annotations

import pytest
import torch

from app.training.compress import BLOCK, block_error_bound, pack, payload_bytes, unpack


def _values(seed: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Blocks of very different magnitudes: a single scale for all would lose the small ones.
    magnitudes = 10.0 ** torch.randint(-6, 3, (n // BLOCK + 1,), generator=generator).float()
    return torch.randn(n, generator=generator) * magnitudes.repeat_interleave(BLOCK)[:n]


@pytest.mark.parametrize("kind", ["fp16", "int8"])
@pytest.mark.parametrize("n", [1, BLOCK - 1, BLOCK, 10 * BLOCK + 17])
def test_every_value_stays_within_its_block_bound(kind: str, n: int) -> None:
    flat = _values(n, n)
    back = unpack(pack(flat, kind))  # type: ignore[arg-type]
    assert back.dtype == torch.float32 and back.shape == flat.shape
    assert torch.all((back - flat).abs() <= block_error_bound(flat, kind)), kind  # type: ignore[arg-type]


def test_int8_bound_is_per_block_not_global() -> None:
    flat = torch.cat([torch.full((BLOCK,), 1000.0), torch.linspace(-1e-3, 1e-3, BLOCK)])
    back = unpack(pack(flat, "int8"))
    small = (back[BLOCK:] - flat[BLOCK:]).abs().max()
    assert small <= 1e-3 / 254 * 1.0001
    assert block_error_bound(flat, "int8")[BLOCK:].max() < 1e-5


def test_int8_is_exact_for_whole_multiples_of_a_power_of_two_scale() -> None:
    scale = 2.0 ** -7
    levels = torch.arange(-127, 128, dtype=torch.float32)
    flat = torch.cat([levels[torch.randperm(255, generator=torch.Generator().manual_seed(1))][:BLOCK - 1],
                      torch.tensor([127.0])]) * scale
    last = torch.cat([flat[:39], flat[-1:]]) * 4  # a short last block, its largest value 127 × 2^-5
    flat = torch.cat([flat, torch.zeros(BLOCK), last])  # and an all-zero block
    assert torch.equal(unpack(pack(flat, "int8")), flat)


def test_fp16_is_exact_for_representable_values_and_clamps_overflow() -> None:
    flat = torch.tensor([0.0, 1.0, -2.5, 0.099975586, 65504.0, 2.0 ** -24, -1025.0])
    assert torch.equal(flat.to(torch.float16).to(torch.float32), flat)  # the values are representable
    assert torch.equal(unpack(pack(flat, "fp16")), flat)
    assert torch.equal(unpack(pack(torch.tensor([1e6, -1e6]), "fp16")), torch.tensor([65504.0, -65504.0]))


def test_none_is_the_identity_and_payload_sizes() -> None:
    flat = _values(3, 1000)
    assert torch.equal(unpack(pack(flat, "none")), flat)
    assert pack(flat, "none").nbytes == payload_bytes(1000, "none") == 4000
    assert pack(flat, "fp16").nbytes == payload_bytes(1000, "fp16") == 2000
    blocks = -(-1000 // BLOCK)
    assert pack(flat, "int8").nbytes == payload_bytes(1000, "int8") == blocks * BLOCK + 4 * blocks
