"""Command-line checks that run before Hydra composes and before torch loads (they must stay cheap)."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from lightning_llm.errors import ConfigError, LightningLLMError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def check_cli_overrides(overrides: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Name an unknown group option (`model=gtp`) in one line, before Hydra or torch start."""
    args = [a for a in overrides if not a.startswith("-") and "=" in a]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides {args}: {str(err).splitlines()[0]}") from err
    for override in parsed:
        group = override.key_or_group
        if group.startswith("hydra") or not (config_dir / group).is_dir() or override.is_delete():
            continue
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            value = override.value()
            values = value if isinstance(value, list) else [value]
        options = group_options(group, config_dir)
        for value in values:
            if value is not None and str(value) not in options and str(value) != "null":
                raise ConfigError(
                    f"{group}={value} is not an option of the '{group}' group: choose one of "
                    f"{', '.join(options)} (files in conf/{group}/)"
                )


def user_error_in(err: BaseException) -> LightningLLMError | None:
    """The user-facing error behind `err`, also when Hydra's instantiate or Lightning wrapped it."""
    while err is not None:
        if isinstance(err, LightningLLMError):
            return err
        err = err.__cause__ or err.__context__
    return None


#: Set by a multirun job before Lightning starts its DDP processes: the job's overrides and output folder.
DDP_JOB_ENV = "LIGHTNING_LLM_DDP_JOB"


def ddp_child_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """The command line of a DDP child process of a multirun job: that one job, in the job's folder.

    Lightning starts children with the parent's own command line, which under `-m` would run the whole sweep
    again into new folders (a known Hydra + Lightning trap). The job's overrides come from the environment.
    """
    job = env.get(DDP_JOB_ENV)
    if env.get("LOCAL_RANK", "0") == "0" or not job:
        return argv
    spec = json.loads(job)
    return [
        argv[0],
        *spec["overrides"],
        f"hydra.run.dir={spec['output_dir']}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
