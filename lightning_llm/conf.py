"""Where the shipped configs live and what options each group has (cheap: no torch, no Hydra composition)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def load_option(group: str, option: str, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """One option's YAML as written (its own defaults list is not composed)."""
    return OmegaConf.load(config_dir / group / f"{option}.yaml")
