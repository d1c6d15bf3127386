"""Self-contained reports (Markdown and offline HTML) for a run folder, a sweep folder, or several compared.

Reads plain files only (results.json, csv/metrics.csv, provenance.json, .hydra/): importing it is cheap, and
matplotlib, scipy and optuna load only when a report needs them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_llm.errors import RunInterrupted
from lightning_llm.log import get_logger
from lightning_llm.report.compare import write_comparison
from lightning_llm.report.run_report import write_run_report
from lightning_llm.report.sweep_report import write_sweep_report
from lightning_llm.report.wandb_log import log_to_wandb

__all__ = [
    "log_to_wandb",
    "report_on_exit",
    "report_quietly",
    "write_comparison",
    "write_run_report",
    "write_sweep_report",
]

log = get_logger(__name__)


def report_quietly(write: Callable[..., list[Path]], *args: Any, **kwargs: Any) -> list[Path]:
    """Call a report writer where a report must never fail what it reports on (the end of a run or a sweep):
    an error becomes a warning naming the command that rebuilds it, and no paths."""
    try:
        return write(*args, **kwargs)
    except Exception as err:
        log.warning(
            "the report was not written (%s: %s); rebuild it with python -m lightning_llm report %s",
            type(err).__name__,
            err,
            args[0] if args else "",
        )
        return []


def report_on_exit(run_dir: Path, ending: BaseException | None) -> None:
    """A run's report as the run ends (`ending`: the error it ends with, if any), which it never fails: an error
    is a warning (`report_quietly`) and a Ctrl-C while it is drawn skips it. A Ctrl-C that did not become the run's
    one-line RunInterrupted (pressed as the run's end was recorded or its report drawn) becomes one (exit 130)."""
    try:
        report_quietly(write_run_report, run_dir)
    except KeyboardInterrupt as again:
        log.warning("the report was skipped (interrupted); python -m lightning_llm report %s writes it", run_dir)
        ending = ending or again
    if isinstance(ending, KeyboardInterrupt):
        where = f"python -m lightning_llm report {run_dir} writes its report"
        raise RunInterrupted(f"stopped by SIGINT as the run ended; {where}", signal.SIGINT) from ending
