"""Mixed precision: which arithmetic a worker trains in on its device (bf16 or fp16 autocast, or fp32)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class PrecisionPlan:
    """The precision chosen for a device, and a line for the task log when it differs from what was asked."""

    name: str  # "fp32", "bf16" or "fp16"
    device_type: str  # "cuda", "mps" or "cpu"
    note: str | None = None

    @property
    def scaled(self) -> bool:
        """fp16 on a CUDA GPU needs a gradient scaler (bf16 and fp32 do not)."""
        return self.name == "fp16" and self.device_type == "cuda"

    def autocast(self) -> Any:
        """The autocast context for a forward pass (a no-op context in fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=torch.bfloat16 if self.name == "bf16" else torch.float16)


def plan_precision(requested: str, device_type: str, bf16_supported: bool) -> PrecisionPlan:
    """auto: bf16 on GPUs that support it, fp16 (scaled) on other GPUs, fp32 on the CPU; bf16 on the CPU when asked."""
    if device_type == "cuda":
        if requested == "auto":
            return PrecisionPlan("bf16" if bf16_supported else "fp16", device_type)
        if requested == "bf16" and not bf16_supported:
            return PrecisionPlan("fp16", device_type, "this GPU has no bf16: training in fp16 with a gradient scaler")
        return PrecisionPlan(requested, device_type)
    if requested == "bf16":
        return PrecisionPlan("bf16", device_type)
    if requested == "fp16":
        return PrecisionPlan("fp32", device_type, f"fp16 needs a CUDA GPU: training in fp32 on {device_type}")
    return PrecisionPlan("fp32", device_type)


def plan_for(requested: str, device: Any) -> PrecisionPlan:
    """The plan for a torch device (asks CUDA whether it has bf16)."""
    import torch

    kind = str(device.type)
    bf16 = kind == "cuda" and bool(torch.cuda.is_bf16_supported())
    return plan_precision(requested, kind, bf16)


def grad_scaler(plan: PrecisionPlan) -> Any:
    """A GradScaler, enabled only for fp16 on CUDA (disabled, it passes every call straight through)."""
    import torch

    return torch.amp.GradScaler("cuda" if plan.device_type == "cuda" else "cpu", enabled=plan.scaled)
