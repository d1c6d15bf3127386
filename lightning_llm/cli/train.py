"""`lightning-llm train [group=option ...] [key=value ...]`, the same command as `python train.py ...`: check the
command line, compose the config with Hydra (conf/train.yaml; Hydra's flags work: `-m`, `--cfg job`, `--help`),
run the recipe. `lightning-llm eval model.pretrained=<run> eval=<suite> ...` is the same with `train=false`.
`resume=auto hydra.run.dir=<run>` continues that run with its own config (cli.resume)."""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from lightning_llm.cli.handler import fail, run_command
from lightning_llm.cli.overrides import check_cli_overrides, explain_composition_error
from lightning_llm.cli.resume import resume_argv
from lightning_llm.conf import CONFIG_DIR
from lightning_llm.errors import user_error_in
from lightning_llm.recipe.ddp import ddp_child_argv


def task(cfg: DictConfig) -> float | None:
    """One job of the composed config; returns the metric a sweeper optimizes (`optimized_metric`)."""
    from lightning_llm.recipe.startup import start_early_work

    start_early_work(cfg)  # beside the imports of torch and Lightning, which use one core (the command line is checked)
    from lightning_llm.recipe.context import is_multirun
    from lightning_llm.recipe.experiment import train
    from lightning_llm.recipe.outputs import record_failure

    if not gc.isenabled():  # `main` paused collection for the imports: their ~1M objects live all run, so
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
    relative to the code)."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag in ("--config-path", "-cp"):
            if arg == flag and i + 1 < len(out):
                out[i + 1] = os.path.abspath(out[i + 1])
            elif arg.startswith(flag + "="):
                out[i] = f"{flag}={os.path.abspath(arg.split('=', 1)[1])}"
    return out


def hydra_command_line(argv: list[str]) -> list[str]:
    """What Hydra parses for `argv`: a DDP child's own job under `-m` (recipe.ddp), `--config-path` from the
    current folder, a resume's run config (cli.resume)."""
    argv = ddp_child_argv(["", *argv], dict(os.environ))[1:]
    return resume_argv(config_path_from_cwd(argv))


def compose_and_run(argv: list[str]) -> None:
    """Hydra's command line as `@hydra.main` runs it, from `argv` instead of sys.argv (which keeps the command
    that re-runs this one); a composition error becomes one line."""
    from hydra._internal.utils import _run_hydra, get_args_parser
    from hydra.errors import ConfigCompositionException

    parser = get_args_parser()
    args = parser.parse_args(argv)
    config_dir, config_name = Path(args.config_path or CONFIG_DIR), args.config_name or "train"
    try:
        _run_hydra(
            args=args, args_parser=parser, task_function=task, config_path=str(config_dir), config_name=config_name
        )
    except ConfigCompositionException as err:
        overrides = [o for o in args.overrides if not o.lstrip("+~").startswith("hydra")]
        raise explain_composition_error(err, overrides, config_dir, config_name) from err


def main(argv: list[str], program: list[str]) -> int:
    """Train with Hydra's arguments `argv`; `program` is what runs this command (the script, and the verb when
    there is one): DDP's launcher starts the other processes with it and the final Hydra arguments. Returns the
    exit code (cli.handler)."""
    os.environ.setdefault("LIGHTNING_LLM_STARTED", repr(time.time()))  # start-up time is measured from here
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing and exiting 1

    def command() -> None:
        hydra_argv = hydra_command_line(argv)
        check_cli_overrides(hydra_argv)
        sys.argv = [*program, *hydra_argv]  # what the DDP launcher re-runs: the same config in every process
        compose_and_run(hydra_argv)

    gc.disable()  # until torch and Lightning are imported (see task)
    try:
        return run_command(command)
    finally:
        gc.enable()
