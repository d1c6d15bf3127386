"""Entry point: `python train.py [group=option ...] [key=value ...]` (see README for the groups)."""

from __future__ import annotations

import math
import os
import sys

import hydra
from omegaconf import DictConfig

from lightning_llm.cli import check_cli_overrides, ddp_child_argv, user_error_in
from lightning_llm.errors import LightningLLMError


def fail(err: LightningLLMError) -> None:
    """A user-facing error: one line on stderr and its exit code; nothing written so far is touched."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # torch and Lightning load only after the command line is checked
    from lightning_llm.run import is_multirun, record_failure, train

    try:
        results = train(cfg)
    except Exception as err:
        if is_multirun():  # one failed trial is recorded and the sweep goes on
            record_failure(cfg, err)
            return math.nan
        if (user_error := user_error_in(err)) is None:
            raise
        fail(user_error)
    return results["metrics"].get(cfg.optimized_metric)


if __name__ == "__main__":
    sys.argv = ddp_child_argv(sys.argv, dict(os.environ))
    try:
        check_cli_overrides(sys.argv[1:])
    except LightningLLMError as err:
        fail(err)
    main()
