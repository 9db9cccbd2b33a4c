"""DiLoCo: H local (inner) optimizer steps, then the members average their pseudo-gradients
(global parameters − local parameters) and an outer Nesterov SGD applies the average to the global model.

Only the worker imports this module (it imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from app.training.compress import Compression, Packed, pack, payload_bytes, unpack


@dataclass(frozen=True)
class OuterSettings:
    """The DiLoCo options of a task."""

    inner_steps: int = 100
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    compression: Compression = "none"


def ring_allreduce_bytes(numel: int, world: int, bytes_per_value: int = 4) -> int:
    """Bytes one rank sends in a ring all-reduce of `numel` values (what DDP does with gradients each step)."""
    if world <= 1:
        return 0
    return 2 * (world - 1) * numel * bytes_per_value // world


def average_bytes(numel: int, world: int, kind: Compression) -> int:
    """Bytes one rank sends to average `numel` values packed as `kind` (ring all-reduce or all-gather)."""
    if world <= 1:
        return 0
    if kind == "none":
        return ring_allreduce_bytes(numel, world)
    return (world - 1) * payload_bytes(numel, kind)


def average(flat: Tensor, kind: Compression, world: int) -> Tensor:
    """The mean of `flat` over every rank; compressed payloads are all-gathered and summed in fp32 in rank order."""
    if world <= 1:
        return unpack(pack(flat, kind))
    device = _wire_device()
    if kind == "none":
        total = flat.detach().to(device, torch.float32).clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.cpu() / world
    mine = pack(flat, kind)
    values = [torch.empty_like(mine.values, device=device) for _ in range(world)]
    dist.all_gather(values, mine.values.to(device))
    scales: list[Tensor | None] = [None] * world
    if mine.scales is not None:
        gathered = [torch.empty_like(mine.scales, device=device) for _ in range(world)]
        dist.all_gather(gathered, mine.scales.to(device))
        scales = list(gathered)
    total = torch.zeros(mine.numel, dtype=torch.float32)
    # Every rank adds the same payloads in the same order, so every rank gets the same bits.
    for value, scale in zip(values, scales, strict=True):
        total += unpack(Packed(kind, value.cpu(), None if scale is None else scale.cpu(), mine.numel))
    return total / world


def _wire_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class DiLoCo:
    """The global model and outer optimizer of one rank; `sync` every `inner_steps` inner steps."""

    def __init__(self, model: nn.Module, settings: OuterSettings, world: int) -> None:
        self.model = model
        self.settings = settings
        self.world = world
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.global_params = [nn.Parameter(p.detach().clone().cpu()) for p in self.params]
        momentum = settings.outer_momentum
        self.outer = torch.optim.SGD(self.global_params, lr=settings.outer_lr, momentum=momentum,
                                     nesterov=momentum > 0)
        self.inner_done = 0
        self.numel = sum(p.numel() for p in self.params)

    def due(self) -> bool:
        """True when this rank has taken H inner steps since the last outer step."""
        return self.inner_done >= self.settings.inner_steps

    def inner_step_taken(self) -> None:
        """Count one inner optimizer step."""
        self.inner_done += 1

    def sync_bytes(self) -> int:
        """Bytes this rank sends in one outer step."""
        return average_bytes(self.numel, self.world, self.settings.compression) + self._buffer_bytes()

    def sync(self) -> int:
        """The outer step: average the pseudo-gradients, step the global model, restart from it; bytes sent."""
        with torch.no_grad():
            pseudo = torch.cat([(g - p.detach().cpu().to(torch.float32)).reshape(-1)
                                for g, p in zip(self.global_params, self.params, strict=True)])
            mean = average(pseudo, self.settings.compression, self.world)
            offset = 0
            for g in self.global_params:
                g.grad = mean[offset:offset + g.numel()].view_as(g).to(g.dtype)
                offset += g.numel()
        self.outer.step()
        self.outer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for g, p in zip(self.global_params, self.params, strict=True):
                p.copy_(g.to(p.device, p.dtype))
            self._average_buffers()
        self.inner_done = 0
        return self.sync_bytes()

    def _float_buffers(self) -> list[Tensor]:
        return [b for b in self.model.buffers() if b.is_floating_point()]

    def _buffer_bytes(self) -> int:
        return sum(ring_allreduce_bytes(b.numel(), self.world) for b in self._float_buffers())

    def _average_buffers(self) -> None:
        """Running statistics (batch norm) are averaged plainly, as DDP would broadcast them."""
        if self.world <= 1:
            return
        for buffer in self._float_buffers():
            total = buffer.detach().to(_wire_device(), torch.float32).clone()
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            buffer.copy_((total / self.world).to(buffer.device, buffer.dtype))

    def state_dict(self) -> dict[str, Any]:
        """The global model, the outer optimizer and where this rank stands in its inner steps."""
        return {"global": [g.detach().clone() for g in self.global_params], "outer": self.outer.state_dict(),
                "inner_done": self.inner_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        saved = state["global"]
        if len(saved) != len(self.global_params):
            raise ValueError(f"DiLoCo state has {len(saved)} tensors, the model {len(self.global_params)}")
        with torch.no_grad():
            for g, value in zip(self.global_params, saved, strict=True):
                g.copy_(value)
        self.outer.load_state_dict(state["outer"])
        self.inner_done = int(state["inner_done"])
