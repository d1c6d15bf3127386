"""Work a run can start before torch and Lightning import: they take seconds and keep only one core busy.

This module imports neither (train.py calls it first thing in `main`).
"""

from __future__ import annotations

import importlib.util
import os

from omegaconf import DictConfig

from lightning_llm.log import process_rank
from lightning_llm.training.energy import start_meter

COMPUTE_MONITOR = "lightning_llm.training.compute.ComputeMonitor"


def energy_settings(cfg: DictConfig) -> DictConfig | None:
    """The ComputeMonitor settings when this process will measure energy: it trains, it is rank 0 (the monitor
    measures there only), and a ComputeMonitor in `callbacks` has track_energy on; else None."""
    if not cfg.get("train", True) or cfg.get("estimate") or process_rank() != 0:
        return None
    callbacks = cfg.get("callbacks") or {}
    for c in callbacks.values():
        if isinstance(c, DictConfig) and c.get("_target_") == COMPUTE_MONITOR and c.get("track_energy", True):
            return c
    return None


#: Libraries that write caches of their own, and where a run's go instead (inside our cache, not /tmp or ~)
LIBRARY_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "torchinductor", "MPLCONFIGDIR": "matplotlib"}


def start_early_work(cfg: DictConfig) -> None:
    """Point the libraries' own caches into ours (before torch and matplotlib import: they read these once), and
    start the energy meter's process (CodeCarbon's hardware probe in it) when the run measures energy."""
    for variable, folder in LIBRARY_CACHES.items():
        os.environ.setdefault(variable, os.path.join(os.path.expanduser(str(cfg.paths.cache_dir)), folder))
    settings = energy_settings(cfg)
    if settings is not None and importlib.util.find_spec("codecarbon") is not None:
        start_meter(str(settings.get("country_iso_code", "USA")).upper(), float(settings.get("measure_power_secs", 15)))
