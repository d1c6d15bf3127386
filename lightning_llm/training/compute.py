"""Compute and cost of a run: FLOPs, model FLOPs utilisation (MFU), energy, CO2 and money.

MFU follows PaLM (Chowdhery et al. 2022, appendix B): the FLOPs the model needs per token (6N plus attention,
`LanguageModel.flops_per_token`) times the tokens trained per second, over the devices' peak (`peaks`).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import lightning.pytorch as pl

from lightning_llm.errors import ConfigError
from lightning_llm.log import get_logger
from lightning_llm.training.energy import quiet_codecarbon, wait_for_hardware_probe
from lightning_llm.training.peaks import device_name, device_peak_flops, precision_dtype

log = get_logger(__name__)

DEFINITIONS = {
    "flops_per_token": "model.flops_per_token(data.block_size): 6 x parameters (frozen ones too; not the position "
    "table) + 12 x layers x width x sequence for attention (PaLM appendix B)",
    "tokens": "tokens trained in this fit, all devices (the module's tokens_seen difference)",
    "flops_total": "flops_per_token x tokens",
    "fit_seconds": "wall time from the start to the end of training (validation and checkpoints included)",
    "train_seconds": "fit_seconds minus the time spent in validation during fit",
    "achieved_flops_per_s": "flops_total / train_seconds (all devices together)",
    "peak_flops_per_s": "one device's peak for the run's precision: data-sheet dense peak (GPU) or a measured "
    "torch.matmul peak (CPU); see peak_source",
    "mfu": "achieved_flops_per_s / (peak_flops_per_s x devices)",
    "energy_kwh": "CodeCarbon OfflineEmissionsTracker, machine mode, on rank 0's machine x nodes: CPU from RAPL or "
    "TDP x load (a default TDP for unknown CPUs), GPU from NVML, RAM estimated from its size; it starts with "
    "training (its hardware probe ran while the run started up: lightning_llm.training.energy)",
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
        self._tracker_starting: threading.Thread | None = None
        self._started: float | None = None
        self._validating_since: float | None = None
        self._validation_seconds = 0.0
        self._tokens_before = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.compute, self._validation_seconds = {}, 0.0
        self._tokens_before = int(getattr(pl_module, "tokens_seen", 0))
        if self.track_energy and trainer.is_global_zero:  # beside the first steps (see training.energy)
            self._tracker_starting = threading.Thread(target=self._start_tracker, name="codecarbon-start", daemon=True)
            self._tracker_starting.start()
        self._started = time.perf_counter()

    def _start_tracker(self) -> None:
        self._tracker = self._codecarbon("start", self._new_tracker)

    def _new_tracker(self) -> Any:
        from codecarbon import OfflineEmissionsTracker

        wait_for_hardware_probe()
        quiet_codecarbon()
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
        except Exception as err:  # energy accounting must never stop training
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
            c["mfu"] = achieved / (peak * devices) if peak else None
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
        """Stop CodeCarbon; its energy (kWh, by part) and CO2 (kg), scaled to all nodes."""
        if self._tracker_starting is not None:
            self._tracker_starting.join()
            self._tracker_starting = None
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return {}
        emissions = self._codecarbon("stop", tracker.stop)
        data = getattr(tracker, "final_emissions_data", None)
        if emissions is None or data is None:
            return {}
        nodes = max(1, int(getattr(trainer, "num_nodes", 1)))
        out = {"energy_kwh": data.energy_consumed * nodes, "co2_kg": float(emissions) * nodes}
        for part in ("cpu", "gpu", "ram"):
            out[f"energy_{part}_kwh"] = getattr(data, f"{part}_energy", 0.0) * nodes
        out["energy_country"] = self.country_iso_code
        return out


__all__ = ["ComputeMonitor", "device_peak_flops"]
