"""Compute and cost of a run: FLOPs, model FLOPs utilisation (MFU), energy, CO2 and money.

MFU follows PaLM (Chowdhery et al. 2022, appendix B): the FLOPs the model needs per token (6N plus attention,
`LanguageModel.flops_per_token`) times the tokens trained per second, over the devices' peak (`peaks`).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_llm.errors import ConfigError
from lightning_llm.log import get_logger
from lightning_llm.training.energy import EnergyMeter, take_meter
from lightning_llm.training.parallel import data_parallel_size
from lightning_llm.training.peaks import CACHE_FILE, device_name, device_peak_flops, precision_dtype

log = get_logger(__name__)

DEFINITIONS = {
    "flops_per_token": "flops_total / tokens: the mean over the trained tokens of model.flops_per_token(length): "
    "6 x trained parameters + 4 x frozen ones (no weight gradients; not the position table) + 12 x layers x "
    "width x length for attention (PaLM appendix B), where length is each token's own sequence: its row's real "
    "tokens (padding excluded), or its document within a packed row under doc_mask",
    "tokens": "tokens trained in this fit, all devices (the module's tokens_seen difference)",
    "flops_total": "the sum over trained batches and devices of (6 x trained + 4 x frozen parameters) x real "
    "tokens + 12 x layers x width x the sum of each sequence's length squared (so rows shorter than the context "
    "count what they cost)",
    "fit_seconds": "wall time from the start to the end of training (validation and checkpoints included)",
    "train_seconds": "fit_seconds minus the time spent in validation during fit",
    "achieved_flops_per_s": "flops_total / train_seconds (all devices together)",
    "peak_flops_per_s": "one device's peak for the run's precision: data-sheet dense peak (GPU) or a measured "
    "torch.matmul peak (CPU); see peak_source",
    "mfu": "achieved_flops_per_s / (peak_flops_per_s x devices); left out when above 1 (a CPU peak measured on a "
    "busy machine is measured again first)",
    "energy_kwh": "CodeCarbon OfflineEmissionsTracker, machine mode, on rank 0's machine x nodes: CPU from RAPL or "
    "TDP x load (a default TDP for unknown CPUs), GPU from NVML, RAM estimated from its size; it starts with "
    "training, in a process of its own (lightning_llm.training.energy)",
    "co2_kg": "energy_kwh x the country's average carbon intensity (CodeCarbon's tables, country_iso_code)",
    "cost_usd": "devices x fit_seconds / 3600 x price_per_device_hour",
}


def sequence_lengths(batch: dict[str, Any]) -> torch.Tensor | None:
    """The length of every sequence attention runs over in a batch: each document of a doc_mask-packed row, each
    row's real tokens when it has an attention mask; None when every row is whole (its length is the batch's)."""
    if "document_ids" in batch:
        documents = batch["document_ids"]
        stride = int(documents.max()) + 1
        rows = torch.arange(documents.size(0), device=documents.device).unsqueeze(1)
        counts = torch.bincount((documents + stride * rows).flatten())  # one bin per (row, document)
        return counts[counts > 0]
    if "attention_mask" in batch:
        return batch["attention_mask"].sum(dim=-1)
    return None


def flops_coefficients(model: Any) -> tuple[int, int]:
    """(a, b) with a sequence of length t costing a·t + b·t² training FLOPs (flops_per_token is linear in t)."""
    per_token = model.flops_per_token(0)
    return per_token, model.flops_per_token(1) - per_token


def batch_flops(model: Any, batch: dict[str, Any], coefficients: tuple[int, int] | None = None) -> int:
    """A batch's training FLOPs from its real sequence lengths: flops_per_token is linear in the length
    (a + b x length), so a sequence of length t costs a·t + b·t² (`coefficients`: a and b, if already known)."""
    per_token, per_length = coefficients or flops_coefficients(model)
    lengths = sequence_lengths(batch)
    if lengths is None:  # whole rows, counted from the shape: no tensor work and no device sync every step
        rows, length = batch["input_ids"].shape
        return rows * (per_token * length + per_length * length**2)
    lengths = lengths.to(torch.float64)
    return int(per_token * lengths.sum().item() + per_length * (lengths**2).sum().item())


def utilization(
    achieved: float, devices: int, device: torch.device, precision: str, cache_dir: str | None
) -> tuple[float | None, float | None, str]:
    """(MFU, the device's peak, where the peak comes from) for `achieved` FLOP/s over `devices`. A CPU peak measured
    on busy cores can be below what a run achieves: it is measured again; an MFU still above 1 is left out."""
    dtype = precision_dtype(precision)
    peak, source = device_peak_flops(device, dtype, cache_dir)
    if peak and achieved > peak * devices and source.startswith("measured"):
        peak, source = device_peak_flops(device, dtype, cache_dir, remeasure=True)
    if not peak:
        return None, peak, source
    if achieved > peak * devices:
        log.warning(
            "MFU left out: this fit's %.3g FLOP/s exceed %d x the device's peak of %.3g (%s): measure the CPU's "
            "peak on a quiet machine by deleting %s",
            achieved, devices, peak, source, Path(cache_dir or ".") / CACHE_FILE,
        )  # fmt: skip
        return None, peak, source
    return achieved / (peak * devices), peak, source


class ComputeMonitor(pl.Callback):
    """Measures a fit's FLOPs, MFU, energy, CO2 and cost; the result is `self.compute` (plain JSON, with one
    line per number in `definitions`), and compute/mfu and compute/achieved_tflops go to the loggers.

    Energy comes from CodeCarbon when it is installed and `track_energy` is set, measured in a child process
    (`training.energy`: no thread of this process runs CodeCarbon's subprocesses); any CodeCarbon failure is one
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
        self._meter: EnergyMeter | None = None
        self._started: float | None = None
        self._validating_since: float | None = None
        self._validation_seconds = 0.0
        self._tokens_before = 0
        self._flops = 0  # model FLOPs of the batches trained in this fit (all devices)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compute, self._validation_seconds = {}, 0.0
        self._tokens_before = int(getattr(pl_module, "tokens_seen", 0))
        self._flops = 0
        self._coefficients: tuple[int, int] | None = None  # what trains is fixed within a fit
        if self.track_energy and trainer.is_global_zero:
            self._meter = self._start_meter()
        self._started = time.perf_counter()

    def _start_meter(self) -> EnergyMeter | None:
        """The energy meter's process (started early by train.py when it could be), told to start measuring."""
        if importlib.util.find_spec("codecarbon") is None:
            log.warning("codecarbon is not installed: no energy or CO2 numbers (pip install 'lightning-llm[energy]')")
            return None
        meter = take_meter(self.country_iso_code, self.measure_power_secs)
        meter.start()
        return meter

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        model = getattr(pl_module, "model", None)
        if self._started is not None and isinstance(batch, dict) and hasattr(model, "flops_per_token"):
            # every data-parallel replica trains a batch like this one; a model-parallel group shares one
            self._coefficients = self._coefficients or flops_coefficients(model)
            self._flops += batch_flops(model, batch, self._coefficients) * data_parallel_size(trainer)

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
        precision = str(trainer.precision)
        c: dict[str, Any] = {
            "device": device_name(pl_module.device),
            "devices": devices,
            "precision": precision,
            "tokens": tokens,
            "fit_seconds": round(fit_seconds, 3),
            "train_seconds": round(train_seconds, 3),
        }
        if self._flops and tokens:
            achieved = self._flops / train_seconds
            c.update(flops_per_token=round(self._flops / tokens), flops_total=self._flops)
            c["achieved_flops_per_s"] = achieved
            c["mfu"], peak, source = utilization(achieved, devices, pl_module.device, precision, self.cache_dir)
            c.update(peak_flops_per_s=peak, peak_source=source)
        c.update(self._energy(trainer))
        if self.price_per_device_hour is not None:
            c["price_per_device_hour"] = self.price_per_device_hour
            c["cost_usd"] = devices * fit_seconds / 3600 * self.price_per_device_hour
        c["definitions"] = {k: v for k, v in DEFINITIONS.items() if c.get(k) is not None}
        self.compute = {k: v for k, v in c.items() if v is not None}
        scalars = {"compute/mfu": c.get("mfu"), "compute/energy_kwh": c.get("energy_kwh")}
        if c.get("achieved_flops_per_s") is not None:
            scalars["compute/achieved_tflops"] = c["achieved_flops_per_s"] / 1e12
        scalars = {k: float(v) for k, v in scalars.items() if v is not None}
        for logger in trainer.loggers if scalars else []:
            logger.log_metrics(scalars, step=trainer.global_step)

    def _energy(self, trainer: pl.Trainer) -> dict[str, Any]:
        """Stop the meter; its energy (kWh, by part) and CO2 (kg), scaled to all nodes."""
        meter, self._meter = self._meter, None
        measured = meter.stop() if meter is not None else None
        if measured is None:
            return {}
        nodes = max(1, int(getattr(trainer, "num_nodes", 1)))
        out = {k: v * nodes for k, v in measured.items()}
        out["energy_country"] = self.country_iso_code
        return out


__all__ = ["ComputeMonitor", "device_peak_flops"]
