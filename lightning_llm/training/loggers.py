"""Logger factories for conf/logger where Lightning's own classes need a little help."""

from __future__ import annotations

import csv
import netrc
import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _ResumedWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run keeps its rows before the
    checkpoint's step instead (the steps after it are trained again, so they are not duplicated)."""

    def __init__(self, log_dir: str, keep_before_step: int | None) -> None:
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self.keep_before_step is None or not path.is_file():
            _ExperimentWriter._check_log_dir_exists(self)
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step", "") == "" or int(float(r["step"])) < self.keep_before_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger that continues a resumed run's metrics.csv (see `resume_from`)."""

    _keep_before_step: int | None = None

    def resume_from(self, step: int) -> None:
        """Keep the rows logged before `step` (the checkpoint's); call before anything is logged."""
        self._keep_before_step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumedWriter(log_dir=self.log_dir, keep_before_step=self._keep_before_step)
        return self._experiment


class ResumableTensorBoardLogger(TensorBoardLogger):
    """TensorBoardLogger whose resumed run hides the events after the checkpoint's step (`purge_step`)."""

    def resume_from(self, step: int) -> None:
        self._kwargs["purge_step"] = step


def _wandb_api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(_wandb_base_url()).hostname or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _wandb_reachable(timeout: float = 2.0) -> bool:
    url = urlparse(_wandb_base_url())
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_online() -> bool:
    """Whether W&B can sync now: not forced offline, an API key present and the server reachable."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    return _wandb_api_key_present() and _wandb_reachable()


TAG_GROUPS = ("model", "objective", "finetune", "trainer", "precision")


def wandb_logger(
    save_dir: str,
    offline: bool | None = None,
    tags: list[str] | None = None,
    group: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A WandbLogger that goes offline by itself with no API key or no network (it never prompts or hangs).

    Tagged with the chosen group options; the jobs of one multirun share a group (the sweep folder); and
    the run id is kept in the run folder, so resuming a run continues the same W&B run.
    """
    if offline is None:
        offline = not wandb_online()
    choices, sweep = {}, None
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = hydra_cfg.runtime.choices
        sweep = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    tags = list(tags or []) + [f"{g}:{choices[g]}" for g in TAG_GROUPS if choices.get(g)]
    id_file = Path(save_dir) / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)
    return WandbLogger(
        save_dir=save_dir, offline=offline, tags=tags, group=group or sweep, id=run_id, resume="allow", **kwargs
    )
