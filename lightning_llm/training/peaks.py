"""Peak FLOP/s of a device: the vendors' dense numbers for GPUs, a one-off measurement (cached) for CPUs."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_llm.files import write_json_atomic


@dataclass(frozen=True)
class GPU:
    """A GPU's data sheet: dense (no sparsity) peak FLOP/s per dtype and memory. fp32 is the plain
    (non-tensor-core) rate; tf32 applies to fp32 matmuls when torch allows TF32."""

    key: str  # lowercase words that all appear in the GPU's name (torch.cuda.get_device_name() or a user's)
    peaks: dict[str, float]
    memory_gib: float

    @property
    def name(self) -> str:
        """How a user names it: `estimate=h100-pcie`."""
        return self.key.replace(" ", "-")


#: The vendors' data sheets; the first GPU whose key words all appear in a name wins, so specific names come first.
GPUS: tuple[GPU, ...] = (
    GPU("h100 pcie", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}, 80),
    GPU("h100 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}, 94),
    GPU("h200 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}, 141),
    GPU("h100", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}, 80),  # SXM
    GPU("h200", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}, 141),  # SXM
    GPU("a100 40gb", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}, 40),
    GPU("a100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}, 80),
    GPU("l40s", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}, 48),
    GPU("l40", {"bf16": 181e12, "fp16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12}, 48),
    GPU("l4", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}, 24),
    GPU("a10", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}, 24),  # A10; AWS A10G too
    GPU("t4", {"fp16": 65e12, "fp32": 8.1e12}, 16),  # no bf16 units: bf16 runs at the fp32 rate
    GPU("v100", {"fp16": 125e12, "fp32": 15.7e12}, 16),  # SXM2 16 GB; no bf16 units
)
#: Matrix size and time budget of the one-off CPU measurement: the best of MEASURE_ROUNDS short rounds, so a
#: moment without other processes on the cores counts (bf16 matmuls on AMX reach their peak only from ~2048).
MEASURE_SIZE, MEASURE_SECONDS, MEASURE_ROUNDS = 2048, 1.0, 10
CACHE_FILE = "device_peak_flops.json"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def precision_dtype(precision: str) -> str:
    """The compute dtype of a Lightning precision setting: bf16 (bf16-mixed/-true), fp16 (16-*), else fp32."""
    precision = str(precision)
    if precision.startswith("bf16") or precision == "transformer-engine":
        return "bf16"
    return "fp16" if precision.startswith("16") else "fp32"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure_matmul_flops(dtype: str, size: int = MEASURE_SIZE, seconds: float = MEASURE_SECONDS) -> float:
    """FLOP/s of repeated `size` x `size` torch.matmul on the CPU in `dtype`: the best of MEASURE_ROUNDS rounds
    that together take about `seconds` (2 * size^3 FLOPs per product)."""
    a = torch.randn(size, size).to(_DTYPES[dtype])
    b = torch.randn(size, size).to(_DTYPES[dtype])
    torch.matmul(a, b)  # warm-up: library initialisation and kernel selection
    best = 0.0
    for _ in range(MEASURE_ROUNDS):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / MEASURE_ROUNDS or count == 0:
            torch.matmul(a, b)
            count += 1
        best = max(best, 2 * size**3 * count / elapsed)
    return best


def device_peak_flops(
    device: torch.device | str, dtype: str, cache_dir: str | Path | None = None, remeasure: bool = False
) -> tuple[float | None, str]:
    """Peak FLOP/s of one device for `dtype` (bf16, fp16, fp32) and where the number comes from.

    CUDA: the data-sheet table (None for a GPU not in it). CPU: measured with torch.matmul, cached in
    `cache_dir` per CPU model, torch version, thread count and dtype, so a machine is measured once;
    `remeasure` measures again and keeps the higher of the two (a run beat a peak measured on busy cores).
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        gpu = find_gpu(name)
        return gpu_peak_flops(gpu, dtype, name) if gpu is not None else (None, f"no peak known for {name}")
    if device.type != "cpu":
        return None, f"no peak known for {device.type} devices"
    threads = torch.get_num_threads()
    key = f"{cpu_name()} | torch {torch.__version__} | {threads} threads | {dtype}"
    path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    cached = _read_json(path)
    if key in cached and not remeasure:
        return float(cached[key]), f"measured (cached): {key}"
    flops = max(measure_matmul_flops(dtype), float(cached.get(key, 0.0)))
    if path is not None:
        _write_json(path, {**_read_json(path), key: flops})
    return flops, f"measured: {key}"


def find_gpu(name: str) -> GPU | None:
    """The data sheet of a GPU named as torch names it ("NVIDIA A100-SXM4-40GB") or as a user does ("a100-40gb")."""
    words = name.lower().replace("-", " ").replace("_", " ")
    return next((gpu for gpu in GPUS if all(word in words for word in gpu.key.split())), None)


def gpu_peak_flops(gpu: GPU, dtype: str, name: str | None = None) -> tuple[float, str]:
    """A GPU's peak FLOP/s for `dtype` (fp32 matmuls at the TF32 rate when torch allows TF32; a dtype without
    units of its own at the fp32 rate) and where the number comes from."""
    if dtype == "fp32" and torch.backends.cuda.matmul.allow_tf32:
        dtype = "tf32"
    chosen = dtype if dtype in gpu.peaks else "fp32"
    return gpu.peaks[chosen], f"data sheet: {name or gpu.name} {chosen} dense"


def _read_json(path: Path | None) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged cache is measured again


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data, sort_keys=True)


def device_name(device: torch.device) -> str:
    """A device in words: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{cpu_name()} ({threads} thread{'s' if threads != 1 else ''})"
    return device.type
