"""What this machine has: CPU, RAM and GPUs (NVML in-process, else `nvidia-smi`), read without importing torch."""

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
    """One entry per NVIDIA GPU (NVML in-process, else `nvidia-smi`), else Apple Silicon's GPU; [] when there is none."""
    nvml = _load_nvml()
    if nvml is not None:
        gpus = read_nvml(nvml)
        if gpus is not None:
            return gpus
    return _gpu_info_from_smi(timeout) or apple_gpu(platform.system(), platform.machine())


def apple_gpu(system: str, machine: str) -> list[dict[str, Any]]:
    """Apple Silicon's GPU, which torch drives as `mps`; its memory is the machine's RAM, so none is counted apart."""
    if system != "Darwin" or machine != "arm64":
        return []
    return [{"index": 0, "name": "Apple Silicon GPU", "backend": "mps", "memory_total_mb": None,
             "memory_used_mb": None, "utilization_pct": None, "temperature_c": None, "driver": None,
             "compute_capability": None}]


def _load_nvml() -> Any:
    """The NVML binding (`nvidia-ml-py`), or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def read_nvml(nvml: Any) -> list[dict[str, Any]] | None:
    """GPU entries read field by field through an NVML binding; None when NVML itself cannot start.

    A field the driver does not support (the 470 branch has no compute capability query, some boards no
    utilisation or temperature) is None for that field alone, never the whole GPU or machine.
    """
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.debug("NVML is not available: %s", exc)
        return None
    try:
        driver = _text(_field(nvml, nvml.nvmlSystemGetDriverVersion))
        count = _field(nvml, nvml.nvmlDeviceGetCount) or 0
        return [gpu for index in range(int(count)) if (gpu := _nvml_gpu(nvml, index, driver)) is not None]
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def _nvml_gpu(nvml: Any, index: int, driver: str | None) -> dict[str, Any] | None:
    handle = _field(nvml, nvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return None
    memory = _field(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    utilization = _field(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = _field(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
    capability = _field(nvml, nvml.nvmlDeviceGetCudaComputeCapability, handle)
    return {
        "index": index,
        "name": _text(_field(nvml, nvml.nvmlDeviceGetName, handle)) or "unknown",
        "memory_total_mb": int(memory.total) // (1 << 20) if memory is not None else None,
        "memory_used_mb": int(memory.used) // (1 << 20) if memory is not None else 0,
        "utilization_pct": float(utilization.gpu) if utilization is not None else None,
        "temperature_c": float(temperature) if temperature is not None else None,
        "driver": driver or "",
        "compute_capability": f"{capability[0]}.{capability[1]}" if capability is not None else None,
    }


def _field(nvml: Any, call: Any, *args: Any) -> Any:
    """One NVML call's answer, or None when the driver refuses it."""
    try:
        return call(*args)
    except nvml.NVMLError as exc:
        log.debug("NVML %s: %s", getattr(call, "__name__", call), exc)
        return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _gpu_info_from_smi(timeout: float) -> list[dict[str, Any]]:
    """GPU entries from `nvidia-smi`; drivers that refuse compute_cap are asked again without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    for query in (NVIDIA_SMI_QUERY, NVIDIA_SMI_QUERY.removesuffix(",compute_cap")):
        try:
            done = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("nvidia-smi failed: %s", exc)
            return []
        if done.returncode == 0:
            return parse_nvidia_smi(done.stdout)
    log.warning("nvidia-smi exited with %s: %s", done.returncode, done.stderr.strip()[:200])
    return []


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
