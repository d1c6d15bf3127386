"""A stall watchdog: a run that makes no progress for `stall_seconds` dumps every thread's stack to its log.

A hang (a deadlock after training, a stuck collective, an exit handler that never returns) otherwise looks like
a quiet run. `faulthandler.dump_traceback_later` arms a timer in C (no Python thread, no lock a forked worker
could inherit); every sign of progress (a training or validation batch, a stage of the recipe) re-arms it, at
most once a second. When it fires it writes each thread's stack to the log file and, with `exit=true`, ends
the process with exit code 1.
"""

from __future__ import annotations

import faulthandler
import sys
import time
from pathlib import Path
from typing import IO, Any

import lightning.pytorch as pl

from lightning_llm.errors import ConfigError

#: re-arming costs a thread start in C: progress closer together than this is not re-armed
REARM_INTERVAL_S = 1.0


class _Timer:
    """The process's one faulthandler timer and its settings."""

    seconds: float | None = None
    exit: bool = False
    file: IO[str] | None = None
    armed_at: float = 0.0


def arm(seconds: float, exit: bool = False, log_file: str | Path | None = None) -> None:
    """Dump every thread's stack to `log_file` (appended; stderr when None) after `seconds` without progress."""
    disarm()
    _Timer.seconds, _Timer.exit = float(seconds), exit
    _Timer.file = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115 (kept open while armed)
    _rearm()


def progress() -> None:
    """Something happened: restart the countdown (cheap; a no-op when not armed)."""
    if _Timer.seconds is not None and time.monotonic() - _Timer.armed_at >= REARM_INTERVAL_S:
        _rearm()


def disarm() -> None:
    """Stop watching (and close the log file it wrote to)."""
    faulthandler.cancel_dump_traceback_later()
    if _Timer.file is not None:
        _Timer.file.close()
    _Timer.seconds, _Timer.file = None, None


def armed() -> bool:
    return _Timer.seconds is not None


def _rearm() -> None:
    stream = _Timer.file if _Timer.file is not None else sys.stderr
    stream.flush()
    faulthandler.dump_traceback_later(_Timer.seconds, repeat=False, file=stream, exit=_Timer.exit)
    _Timer.armed_at = time.monotonic()


class StallWatchdog(pl.Callback):
    """Arms the watchdog when fit starts; every training and validation batch and the end of training are
    progress. The recipe re-arms it at each of its stages and disarms it when the run ends."""

    def __init__(self, stall_seconds: float = 600.0, exit: bool = False, log_file: str | None = None) -> None:
        if not stall_seconds > 0:
            raise ConfigError(f"callbacks.watchdog.stall_seconds={stall_seconds} must be > 0")
        self.stall_seconds, self.exit, self.log_file = float(stall_seconds), bool(exit), log_file

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not armed():
            log_file = self.log_file if self.log_file and Path(self.log_file).parent.is_dir() else None
            arm(self.stall_seconds, self.exit, log_file)

    def on_train_batch_end(self, *args: Any) -> None:
        progress()

    def on_validation_batch_end(self, *args: Any) -> None:
        progress()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        progress()


__all__ = ["StallWatchdog", "arm", "armed", "disarm", "progress"]
