"""Entry point: `python train.py [group=option ...] [key=value ...]` (see README for the groups)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lightning_llm.cli import check_cli_overrides, config_error_in
from lightning_llm.errors import ConfigError


def fail(err: ConfigError) -> None:
    """A user mistake: one line on stderr and exit code 2; nothing written so far is touched."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lightning_llm.run import train  # torch and Lightning load after the command line is checked

    try:
        results = train(cfg)
    except Exception as err:
        if (user_error := config_error_in(err)) is None:
            raise
        fail(user_error)
    return results["metrics"].get(cfg.optimized_metric)


if __name__ == "__main__":
    try:
        check_cli_overrides(sys.argv[1:])
    except ConfigError as err:
        fail(err)
    main()
