"""Entry point: `python train.py [group=option ...] [key=value ...]` (see README for the groups), the same command
as `lightning-llm train ...` (lightning_llm.cli.train)."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("LIGHTNING_LLM_STARTED", repr(time.time()))  # start-up time is measured from here

from lightning_llm.cli.handler import exit_now  # noqa: E402
from lightning_llm.cli.train import main  # noqa: E402

if __name__ == "__main__":
    exit_now(main(sys.argv[1:], program=sys.argv[:1]))
