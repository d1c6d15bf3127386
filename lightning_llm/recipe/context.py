"""What a run reads from its surroundings: Hydra's state, the machine's cores, signals."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_llm.conf import CONFIG_DIR


def set_num_threads(num_threads: int | None) -> int:
    """Pin torch's intra-op threads (default: the cores this process may use); oversubscription stalls."""
    n = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def is_multirun() -> bool:
    """Whether this process runs one job of a Hydra multirun (sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_info() -> dict[str, Any]:
    """The chosen group options and the command-line overrides (empty outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"choices": dict(hc.runtime.choices), "overrides": list(hc.overrides.task)}


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data, interpolations resolved (Hydra's own node left out)."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def known_top_level_keys() -> set[str]:
    """The keys a run config may have at the top: conf/train.yaml's own and its groups'."""
    train = OmegaConf.load(CONFIG_DIR / "train.yaml")
    groups = {next(iter(d)) for d in train.defaults if isinstance(d, DictConfig | dict)}
    return {str(k) for k in train if k != "defaults"} | {g.split("@")[0] for g in groups}


class Terminated(BaseException):
    """SIGTERM outside Lightning's fit loop (which handles it itself, between steps)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the recipe runs, SIGTERM (what schedulers send) becomes an exception the recipe reports."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_to_lightning() -> Iterator[None]:
    """During fit, Lightning stops between steps on SIGTERM (and LastCheckpoint saves them): our handler, which
    would stop mid-step, steps aside (Lightning chains any callable handler it finds)."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
