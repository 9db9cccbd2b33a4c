"""Hardware inventory: nvidia-smi parsing and this machine's CPU and RAM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from app import inventory
from app.inventory import cpu_info, gpu_info, parse_nvidia_smi, ram_info, read_nvml

TWO_GPUS = """\
0, NVIDIA GeForce RTX 3090, 24576, 1024, 35, 61, 550.54.14, 8.6
1, NVIDIA GeForce RTX 4090, 24564, [N/A], [N/A], 45, 550.54.14, [N/A]
"""


def test_parse_two_gpus() -> None:
    """A realistic two-GPU answer gives two entries with numbers parsed and N/A as None."""
    gpus = parse_nvidia_smi(TWO_GPUS)
    assert gpus == [
        {
            "index": 0,
            "name": "NVIDIA GeForce RTX 3090",
            "memory_total_mb": 24576,
            "memory_used_mb": 1024,
            "utilization_pct": 35.0,
            "temperature_c": 61.0,
            "driver": "550.54.14",
            "compute_capability": "8.6",
        },
        {
            "index": 1,
            "name": "NVIDIA GeForce RTX 4090",
            "memory_total_mb": 24564,
            "memory_used_mb": 0,
            "utilization_pct": None,
            "temperature_c": 45.0,
            "driver": "550.54.14",
            "compute_capability": None,
        },
    ]


def test_parse_old_driver_without_compute_cap() -> None:
    """Seven columns (no compute_cap): the capability is None."""
    gpus = parse_nvidia_smi("0, Tesla T4, 15360, 0, 0, 40, 470.82.01\n")
    assert len(gpus) == 1 and gpus[0]["compute_capability"] is None and gpus[0]["memory_total_mb"] == 15360


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        "No devices were found",
        "0, NVIDIA GeForce RTX 3090, 24576",
        "a,b,c,d,e,f",
    ],
)
def test_parse_garbage_and_short_lines_give_nothing(text: str) -> None:
    """Error messages and lines with too few columns are skipped."""
    assert parse_nvidia_smi(text) == []


def test_parse_skips_short_lines_among_good_ones() -> None:
    """A short line between good ones does not hide the good ones."""
    text = "0, GPU A, 8192, 1, 2, 3, 535.1, 7.5\ngarbage\n1, GPU B, 16384, 1, 2, 3, 535.1, 8.0\n"
    assert [gpu["name"] for gpu in parse_nvidia_smi(text)] == ["GPU A", "GPU B"]


def test_parse_non_numeric_columns_give_none() -> None:
    """A line with enough columns but no numbers keeps its text and has None/0 for the numbers."""
    (gpu,) = parse_nvidia_smi("x, Weird GPU, unknown, ?, n/a, hot, drv, \n")
    assert gpu["index"] == 0 and gpu["memory_total_mb"] is None and gpu["memory_used_mb"] == 0
    assert gpu["utilization_pct"] is None and gpu["temperature_c"] is None
    assert gpu["name"] == "Weird GPU" and gpu["compute_capability"] is None


def test_cpu_info_is_sane() -> None:
    """This machine has at least one core and a model string."""
    info = cpu_info()
    assert isinstance(info["model"], str) and info["model"]
    assert 1 <= info["physical_cores"] <= info["logical_cores"] <= 4096
    assert info["frequency_mhz"] is None or info["frequency_mhz"] >= 0
    assert isinstance(info["architecture"], str)


def test_ram_info_is_sane() -> None:
    """Total RAM is positive and at least the available RAM."""
    info = ram_info()
    assert 64 <= info["total_mb"] < 1 << 30
    assert 0 <= info["available_mb"] <= info["total_mb"]


def test_gpu_info_without_nvidia_smi_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No nvidia-smi on PATH: no GPUs, no error."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_info() == []


def test_gpu_info_with_failing_nvidia_smi_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An nvidia-smi that exits non-zero (driver not loaded): no GPUs, no error."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n", encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_info() == []


def test_gpu_info_parses_nvidia_smi_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu_info runs nvidia-smi with the CSV query and parses its answer."""
    smi = tmp_path / "nvidia-smi"
    script = f"#!/bin/sh\ncase \"$1\" in --query-gpu=index,*) ;; *) exit 3;; esac\nprintf '%s' '{TWO_GPUS}'\n"
    smi.write_text(script, encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert [gpu["index"] for gpu in gpu_info()] == [0, 1]


class RecordedNvml:
    """NVML's calls answering from a recording of a real driver; an exception value is what the call raised."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(self, driver: object, gpus: list[dict[str, object]], init_error: int | None = None) -> None:
        self.driver, self.gpus, self.init_error = driver, gpus, init_error
        self.started = 0

    def _answer(self, index: int, name: str) -> object:
        value = self.gpus[index][name]
        if isinstance(value, pynvml.NVMLError):
            raise value
        return value

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.started += 1

    def nvmlShutdown(self) -> None:
        self.started -= 1

    def nvmlSystemGetDriverVersion(self) -> object:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> object:
        return self._answer(handle, "name")

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> object:
        return self._answer(handle, "memory")

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> object:
        return self._answer(handle, "utilization")

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> object:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._answer(handle, "temperature")

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> object:
        return self._answer(handle, "capability")


def _memory(total_mib: int, used_mib: int) -> SimpleNamespace:
    return SimpleNamespace(total=total_mib << 20, used=used_mib << 20, free=(total_mib - used_mib) << 20)


NOT_SUPPORTED = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
FUNCTION_NOT_FOUND = pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


def test_nvml_two_gpus_on_a_current_driver() -> None:
    """Every field answered: entries in the same shape nvidia-smi's parser gives."""
    nvml = RecordedNvml("550.54.14", [
        {"name": "NVIDIA GeForce RTX 3090", "memory": _memory(24576, 1024),
         "utilization": SimpleNamespace(gpu=35, memory=10), "temperature": 61, "capability": (8, 6)},
        {"name": b"NVIDIA GeForce RTX 4090", "memory": _memory(24564, 0),
         "utilization": SimpleNamespace(gpu=0, memory=0), "temperature": 45, "capability": (8, 9)},
    ])
    gpus = read_nvml(nvml)
    assert gpus == [
        {"index": 0, "name": "NVIDIA GeForce RTX 3090", "memory_total_mb": 24576, "memory_used_mb": 1024,
         "utilization_pct": 35.0, "temperature_c": 61.0, "driver": "550.54.14", "compute_capability": "8.6"},
        {"index": 1, "name": "NVIDIA GeForce RTX 4090", "memory_total_mb": 24564, "memory_used_mb": 0,
         "utilization_pct": 0.0, "temperature_c": 45.0, "driver": "550.54.14", "compute_capability": "8.9"},
    ]
    assert nvml.started == 0, "NVML is shut down after each reading"


def test_nvml_unsupported_fields_are_none_and_keep_the_gpu() -> None:
    """A 470-branch driver without the capability call and a board without sensors still register the GPU."""
    nvml = RecordedNvml(b"470.82.01", [
        {"name": "Tesla K80", "memory": _memory(11441, 0), "utilization": NOT_SUPPORTED,
         "temperature": NOT_SUPPORTED, "capability": FUNCTION_NOT_FOUND},
    ])
    (gpu,) = read_nvml(nvml) or []
    assert gpu == {"index": 0, "name": "Tesla K80", "memory_total_mb": 11441, "memory_used_mb": 0,
                   "utilization_pct": None, "temperature_c": None, "driver": "470.82.01",
                   "compute_capability": None}


def test_nvml_that_cannot_start_gives_none() -> None:
    """No driver loaded: read_nvml says so (None), so gpu_info falls back to nvidia-smi."""
    assert read_nvml(RecordedNvml("", [], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)) is None


def test_gpu_info_falls_back_to_smi_without_compute_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NVML, an nvidia-smi that refuses the compute_cap field is asked again without it."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in *compute_cap*) echo 'Field \"compute_cap\" is not a valid field to query.'"
                   " >&2; exit 2;; esac\nprintf '0, Tesla T4, 15360, 0, 0, 40, 470.82.01\\n'\n", encoding="utf-8")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(inventory, "_load_nvml", lambda: None)
    (gpu,) = gpu_info()
    assert gpu["name"] == "Tesla T4" and gpu["memory_total_mb"] == 15360 and gpu["compute_capability"] is None
