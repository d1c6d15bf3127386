"""Work a run can start before torch and Lightning import: they take seconds and keep only one core busy.

This module imports neither (train.py calls it first thing in `main`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from lightning_llm.log import process_rank
from lightning_llm.training.energy import start_hardware_probe

COMPUTE_MONITOR = "lightning_llm.training.compute.ComputeMonitor"


def tracks_energy(cfg: DictConfig) -> bool:
    """Whether this process will start a CodeCarbon tracker: it trains, it is rank 0 (the monitor tracks there
    only), and a ComputeMonitor in `callbacks` has track_energy on."""
    if not cfg.get("train", True) or cfg.get("estimate") or process_rank() != 0:
        return False
    callbacks = cfg.get("callbacks") or {}
    return any(
        isinstance(c, DictConfig) and c.get("_target_") == COMPUTE_MONITOR and c.get("track_energy", True)
        for c in callbacks.values()
    )


def start_early_work(cfg: DictConfig) -> None:
    """CodeCarbon's hardware probe, when the run tracks energy (lightning_llm.training.energy)."""
    if tracks_energy(cfg):
        start_hardware_probe()
