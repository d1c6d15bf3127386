"""The project's logger: progress messages from rank 0 only, into Hydra's run log and the console.

Hydra configures the root logger for every job (console plus `<run>/train.log`); our messages go through
`logging.getLogger("lightning_llm")`, so they land in both. A filter drops records from ranks other than 0
(LOCAL_RANK/RANK set by Lightning's launchers, torchrun and SLURM), so a two-process run says each thing once.
"""

from __future__ import annotations

import logging
import os


def process_rank() -> int:
    """This process's global rank as the launchers set it (0 when not distributed)."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


class RankZeroFilter(logging.Filter):
    """Let only rank 0's records through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return process_rank() == 0


def get_logger(name: str) -> logging.Logger:
    """A logger under `lightning_llm` whose records come from rank 0 only."""
    logger = logging.getLogger(name if name.startswith("lightning_llm") else f"lightning_llm.{name}")
    root = logging.getLogger("lightning_llm")
    if not any(isinstance(f, RankZeroFilter) for f in root.filters):
        root.addFilter(RankZeroFilter())
        root.setLevel(logging.INFO)
    if not any(isinstance(f, RankZeroFilter) for f in logger.filters):
        logger.addFilter(RankZeroFilter())
    return logger
