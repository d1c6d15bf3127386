"""Compute and cost of a run: FLOPs, model FLOPs utilisation (MFU), energy, CO2 and money.

MFU follows PaLM (Chowdhery et al. 2022, appendix B): the FLOPs the model needs per token (6N plus attention,
`LanguageModel.flops_per_token`) times the tokens trained per second, over the devices' peak. GPU peaks are the
vendors' dense tensor-core numbers; a CPU's peak is measured once per machine (a large matmul) and cached.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_llm.errors import ConfigError
from lightning_llm.log import get_logger

log = get_logger(__name__)

#: Dense (no sparsity) peak FLOP/s from the vendors' data sheets, matched on a lowercase substring of
#: torch.cuda.get_device_name(); the first match wins, so specific names come before general ones.
#: fp32 is the plain (non-tensor-core) rate; tf32 applies to fp32 matmuls when torch allows TF32.
GPU_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    ("h100 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    ("h200 nvl", {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12}),
    ("h100", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),  # SXM
    ("h200", {"bf16": 989e12, "fp16": 989e12, "tf32": 495e12, "fp32": 67e12}),  # SXM
    ("a100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("l40s", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("l40", {"bf16": 181e12, "fp16": 181e12, "tf32": 90.5e12, "fp32": 90.5e12}),
    ("l4", {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12}),
    ("a10", {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12}),  # A10 data sheet; AWS A10G too
    ("t4", {"fp16": 65e12, "fp32": 8.1e12}),  # no bf16 units: bf16 runs at the fp32 rate
    ("v100", {"fp16": 125e12, "fp32": 15.7e12}),  # SXM2; no bf16 units
)
#: Matrix size and time budget of the one-off CPU measurement (best of MEASURE_ROUNDS rounds).
MEASURE_SIZE, MEASURE_SECONDS, MEASURE_ROUNDS = 1024, 1.0, 5
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
    device: torch.device | str, dtype: str, cache_dir: str | Path | None = None
) -> tuple[float | None, str]:
    """Peak FLOP/s of one device for `dtype` (bf16, fp16, fp32) and where the number comes from.

    CUDA: the data-sheet table (None for a GPU not in it). CPU: measured with torch.matmul, cached in
    `cache_dir` per CPU model, torch version, thread count and dtype, so a machine is measured once.
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if dtype == "fp32" and torch.backends.cuda.matmul.allow_tf32:
            dtype = "tf32"
        for key, peaks in GPU_PEAKS:
            if key in name.lower():
                chosen = dtype if dtype in peaks else "fp32"
                return peaks[chosen], f"data sheet: {name} {chosen} dense"
        return None, f"no peak known for {name}"
    if device.type != "cpu":
        return None, f"no peak known for {device.type} devices"
    threads = torch.get_num_threads()
    key = f"{cpu_name()} | torch {torch.__version__} | {threads} threads | {dtype}"
    path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    cached = _read_json(path)
    if key in cached:
        return float(cached[key]), f"measured (cached): {key}"
    flops = measure_matmul_flops(dtype)
    if path is not None:
        _write_json(path, {**_read_json(path), key: flops})
    return flops, f"measured: {key}"


def _read_json(path: Path | None) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged cache is measured again


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


DEFINITIONS = {
    "flops_per_token": "model.flops_per_token(data.block_size): 6 x non-embedding parameters + 12 x layers x width"
    " x sequence (PaLM appendix B; frozen weights counted too)",
    "tokens": "tokens trained in this fit, all devices (the module's tokens_seen difference)",
    "flops_total": "flops_per_token x tokens",
    "fit_seconds": "wall time from the start to the end of training (validation and checkpoints included)",
    "train_seconds": "fit_seconds minus the time spent in validation during fit",
    "achieved_flops_per_s": "flops_total / train_seconds (all devices together)",
    "peak_flops_per_s": "one device's peak for the run's precision: data-sheet dense peak (GPU) or a measured "
    "torch.matmul peak (CPU); see peak_source",
    "mfu": "achieved_flops_per_s / (peak_flops_per_s x devices)",
    "energy_kwh": "CodeCarbon OfflineEmissionsTracker, machine mode, on rank 0's machine x nodes: CPU from RAPL or "
    "TDP x load (a default TDP for unknown CPUs), GPU from NVML, RAM estimated from its size",
    "co2_kg": "energy_kwh x the country's average carbon intensity (CodeCarbon's tables, country_iso_code)",
    "cost_usd": "devices x fit_seconds / 3600 x price_per_device_hour",
}


class ComputeMonitor(pl.Callback):
    """Measures a fit's FLOPs, MFU, energy, CO2 and cost; the result is `self.compute` (plain JSON, with one
    line per number in `definitions`), and compute/mfu and compute/achieved_tflops go to the loggers.

    Energy comes from CodeCarbon when it is installed and `track_energy` is set; any CodeCarbon failure is one
    warning and the run goes on without energy numbers.
    """

    def __init__(
        self,
        price_per_device_hour: float | None = None,
        country_iso_code: str = "USA",
        track_energy: bool = True,
        measure_power_secs: float = 15.0,
        cache_dir: str | None = None,
    ) -> None:
        if price_per_device_hour is not None and not price_per_device_hour >= 0:
            raise ConfigError(f"callbacks.compute.price_per_device_hour={price_per_device_hour} must be >= 0 or null")
        if not (isinstance(country_iso_code, str) and len(country_iso_code) == 3 and country_iso_code.isalpha()):
            raise ConfigError(f"callbacks.compute.country_iso_code={country_iso_code!r} must be 3 letters, e.g. USA")
        if not measure_power_secs > 0:
            raise ConfigError(f"callbacks.compute.measure_power_secs={measure_power_secs} must be > 0")
        self.price_per_device_hour, self.country_iso_code = price_per_device_hour, country_iso_code.upper()
        self.track_energy, self.measure_power_secs, self.cache_dir = track_energy, measure_power_secs, cache_dir
        self.compute: dict[str, Any] = {}
        self._tracker: Any = None
        self._started: float | None = None
        self._validating_since: float | None = None
        self._validation_seconds = 0.0
        self._tokens_before = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compute, self._validation_seconds = {}, 0.0
        self._tokens_before = int(getattr(pl_module, "tokens_seen", 0))
        if self.track_energy and trainer.is_global_zero:
            self._tracker = self._codecarbon("start", self._start_tracker)
        self._started = time.perf_counter()

    def _start_tracker(self) -> Any:
        import logging

        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)  # its constructor logs before log_level applies
        tracker = OfflineEmissionsTracker(
            country_iso_code=self.country_iso_code,
            save_to_file=False,
            log_level="error",
            measure_power_secs=self.measure_power_secs,
        )
        tracker.start()
        return tracker

    def _codecarbon(self, what: str, call: Any) -> Any:
        """Run a CodeCarbon call; any failure (not installed, no data for a country) is one warning."""
        try:
            return call()
        except ImportError:
            log.warning("codecarbon is not installed: no energy or CO2 numbers (pip install codecarbon)")
        except Exception as err:  # noqa: BLE001 - energy accounting must never stop training
            log.warning("codecarbon failed to %s (%s): no energy or CO2 numbers for this run", what, err)
        self._tracker = None
        return None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started is not None:
            self._validating_since = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._started is not None and self._validating_since is not None:
            self._validation_seconds += time.perf_counter() - self._validating_since
            self._validating_since = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finish(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A failed or interrupted fit still reports what it used up to then (and stops CodeCarbon's thread)."""
        self.finish(trainer, pl_module)

    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fill `self.compute` (once per fit) and log its headline numbers."""
        if self._started is None:
            return
        fit_seconds, self._started = time.perf_counter() - self._started, None
        train_seconds = max(fit_seconds - self._validation_seconds, 1e-9)
        devices = trainer.world_size
        tokens = int(getattr(pl_module, "tokens_seen", 0)) - self._tokens_before
        datamodule = trainer.datamodule
        model = getattr(pl_module, "model", None)
        flops_per_token = (
            int(model.flops_per_token(datamodule.block_size))
            if hasattr(model, "flops_per_token") and hasattr(datamodule, "block_size")
            else None
        )
        precision = str(trainer.precision)
        peak, source = device_peak_flops(pl_module.device, precision_dtype(precision), self.cache_dir)
        c: dict[str, Any] = {
            "device": device_name(pl_module.device),
            "devices": devices,
            "precision": precision,
            "tokens": tokens,
            "fit_seconds": round(fit_seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "peak_flops_per_s": peak,
            "peak_source": source,
        }
        if flops_per_token is not None:
            achieved = flops_per_token * tokens / train_seconds
            c.update(flops_per_token=flops_per_token, flops_total=flops_per_token * tokens)
            c["achieved_flops_per_s"] = achieved
            c["mfu"] = round(achieved / (peak * devices), 6) if peak else None
        c.update(self._energy(trainer))
        if self.price_per_device_hour is not None:
            c["price_per_device_hour"] = self.price_per_device_hour
            c["cost_usd"] = round(devices * fit_seconds / 3600 * self.price_per_device_hour, 6)
        c["definitions"] = {k: v for k, v in DEFINITIONS.items() if c.get(k) is not None}
        self.compute = {k: v for k, v in c.items() if v is not None}
        scalars = {"compute/mfu": c.get("mfu"), "compute/energy_kwh": c.get("energy_kwh")}
        if c.get("achieved_flops_per_s") is not None:
            scalars["compute/achieved_tflops"] = c["achieved_flops_per_s"] / 1e12
        scalars = {k: float(v) for k, v in scalars.items() if v is not None}
        for logger in trainer.loggers if scalars else []:
            logger.log_metrics(scalars, step=trainer.global_step)

    def _energy(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Stop CodeCarbon; its energy (kWh, by part) and CO2 (kg), scaled to all nodes."""
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return {}
        emissions = self._codecarbon("stop", tracker.stop)
        data = getattr(tracker, "final_emissions_data", None)
        if emissions is None or data is None:
            return {}
        nodes = max(1, int(getattr(trainer, "num_nodes", 1)))
        out = {"energy_kwh": data.energy_consumed * nodes, "co2_kg": float(emissions) * nodes}
        out.update({f"energy_{part}_kwh": getattr(data, f"{part}_energy", 0.0) * nodes for part in ("cpu", "gpu", "ram")})
        out["energy_country"] = self.country_iso_code
        return out


def device_name(device: torch.device) -> str:
    """A device in words: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{cpu_name()} ({torch.get_num_threads()} threads)"
    return device.type
