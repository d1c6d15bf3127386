"""The command line of `train.py`: cheap checks before Hydra or torch start, and Hydra's own composition errors
turned into one line naming the key and the nearest valid one."""

from __future__ import annotations

import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from lightning_llm.conf import CONFIG_DIR, group_options
from lightning_llm.errors import ConfigError, unknown_key


def check_cli_overrides(overrides: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Name an unknown group option (`model=gtp`) in one line, before Hydra or torch start."""
    args = [a for a in overrides if not a.startswith("-") and "=" in a]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as err:
        raise ConfigError(f"cannot parse the overrides {args}: {str(err).splitlines()[0]}") from err
    for override in parsed:
        group = override.key_or_group
        if group.lstrip("+~") == "trainer.precision":
            options = ", ".join(group_options("precision", config_dir))
            raise ConfigError(
                f"{override.input_line} sets precision outside its group: use precision=<option>, one of {options} "
                "(files in conf/precision/)"
            )
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


_NOT_IN_STRUCT = re.compile(r"Could not (?:override|append to|delete from) '([^']+)'")


def explain_composition_error(
    err: Exception, overrides: list[str], config_dir: Path = CONFIG_DIR, config_name: str = "train"
) -> ConfigError | None:
    """A Hydra composition error as one line: an override of a key that does not exist names the nearest key of
    its parent (composing once more without it); other composition errors keep their first line."""
    message = str(err).strip()
    match = _NOT_IN_STRUCT.search(message)
    if match is None:
        first = message.splitlines()[0] if message else type(err).__name__
        return ConfigError(f"the command line does not compose: {first}")
    key = match.group(1)
    rest = [
        o
        for o in overrides
        if "=" in o and not o.startswith(("-", "hydra")) and not o.lstrip("+~").startswith(f"{key}=")
    ]
    parent_key, _, _ = key.rpartition(".")
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=rest)
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        known = [str(k) for k in parent] if parent is not None and hasattr(parent, "keys") else []
    except Exception:  # the rest does not compose either: say what we can
        known = []
    if not known:
        return ConfigError(f"{key} is not a key of the config: check its spelling (see conf/)")
    return unknown_key(key, known, "the config")


def compose_tool_config(name: str, overrides: list[str], config_dir: Path = CONFIG_DIR):
    """A tool's config (conf/<name>.yaml) with Hydra-style overrides (`key=value`), composed by Hydra; a key that
    does not exist names the nearest one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(name, overrides=list(overrides))
    except HydraException as err:
        raise explain_composition_error(err, overrides, config_dir, name) from err
