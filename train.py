"""Entry point: `python train.py [group=option ...] [key=value ...]` (see README for the groups)."""

from __future__ import annotations

import gc
import os
import time

os.environ.setdefault("LIGHTNING_LLM_STARTED", repr(time.time()))  # start-up time is measured from here

import math  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lightning_llm.cli.handler import exit_now, fail, run_command  # noqa: E402
from lightning_llm.cli.overrides import check_cli_overrides, explain_composition_error  # noqa: E402
from lightning_llm.errors import user_error_in  # noqa: E402
from lightning_llm.recipe.ddp import ddp_child_argv  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lightning_llm.recipe.startup import start_early_work

    start_early_work(cfg)  # beside the imports of torch and Lightning, which use one core (the command line is checked)
    from lightning_llm.recipe.context import is_multirun
    from lightning_llm.recipe.outputs import record_failure
    from lightning_llm.recipe.run import train

    if not gc.isenabled():  # __main__ paused collection for the imports: their ~1M objects live all run, so
        gc.freeze()  # collecting them over and over cost ~1 s of start-up; later collections skip them too
        gc.enable()
    try:
        results = train(cfg)
    except Exception as err:
        if is_multirun():  # one failed trial is recorded and the sweep goes on
            record_failure(cfg, err)
            return math.nan
        user_error = user_error_in(err)
        if user_error is None:
            raise
        sys.exit(fail(user_error))  # before Hydra would log its own "Error executing job" line
    return results["metrics"].get(cfg.optimized_metric)


def config_path_from_cwd(argv: list[str]) -> list[str]:
    """`--config-path <run>/.hydra` relative to the current folder, like every other path (Hydra would read it
    relative to train.py)."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--config-path", "-cp"):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = os.path.abspath(out[i + 1])
            elif arg.startswith(flag + "="):
                out[i] = f"{flag}={os.path.abspath(arg.split('=', 1)[1])}"
    return out


def cli() -> None:
    """Check the command line, then compose and run; Hydra's composition errors become one line too."""
    from hydra.errors import ConfigCompositionException

    check_cli_overrides(sys.argv[1:])
    try:
        main()
    except ConfigCompositionException as err:
        raise explain_composition_error(err, sys.argv[1:]) from err


if __name__ == "__main__":
    gc.disable()  # until torch and Lightning are imported (see main)
    sys.argv = config_path_from_cwd(ddp_child_argv(sys.argv, dict(os.environ)))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing and exiting 1
    exit_now(run_command(cli))
