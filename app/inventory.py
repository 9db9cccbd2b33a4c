"""What this machine has: CPU, RAM and GPUs, read without importing torch."""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess
from typing import Any

import psutil

log = logging.getLogger(__name__)

NVIDIA_SMI_QUERY = "index,name,memory.total,memory.used,utilization.gpu,temperature.gpu,driver_version,compute_cap"


def cpu_info() -> dict[str, Any]:
    """Model, physical and logical cores, frequency in MHz."""
    freq = psutil.cpu_freq()
    return {
        "model": _cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False) or psutil.cpu_count() or 1,
        "logical_cores": psutil.cpu_count() or 1,
        "frequency_mhz": round(freq.max or freq.current) if freq else None,
        "architecture": platform.machine(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def ram_info() -> dict[str, Any]:
    """Total and available RAM in MB."""
    memory = psutil.virtual_memory()
    return {"total_mb": memory.total // (1 << 20), "available_mb": memory.available // (1 << 20)}


def gpu_info(timeout: float = 5.0) -> list[dict[str, Any]]:
    """One entry per NVIDIA GPU from `nvidia-smi` (no CUDA context, no torch); [] when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run(
            [smi, f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return []
    if done.returncode != 0:
        log.warning("nvidia-smi exited with %s: %s", done.returncode, done.stderr.strip()[:200])
        return []
    return parse_nvidia_smi(done.stdout)


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Parse nvidia-smi's CSV (NVIDIA_SMI_QUERY order) into GPU entries."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 7:
            continue

        def number(value: str) -> float | None:
            try:
                return float(value)
            except ValueError:
                return None

        total = number(parts[2])
        gpus.append(
            {
                "index": int(number(parts[0]) or 0),
                "name": parts[1],
                "memory_total_mb": int(total) if total is not None else None,
                "memory_used_mb": int(number(parts[3]) or 0),
                "utilization_pct": number(parts[4]),
                "temperature_c": number(parts[5]),
                "driver": parts[6],
                "compute_capability": parts[7] if len(parts) > 7 and parts[7] not in ("", "[N/A]") else None,
            }
        )
    return gpus
