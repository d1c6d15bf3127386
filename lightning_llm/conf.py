"""Where the shipped configs live and what options each group has (cheap: no torch, no Hydra composition), where
a run's files and the cache go (said at start-up), and the name of the Optuna study a sweep's config belongs to
(`${optuna_study:}` in conf/hparams_search/optuna.yaml).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
#: The options that name a study without an experiment, in this order (with a hash of everything else the sweep
#: does not vary); with `experiment=` its name stands for them.
STUDY_GROUPS = ("model", "objective", "data", "finetune")
#: Settings that change where a run writes or what it shows, never the metric a sweep optimizes: left out of the
#: study's hash, so that `logger=wandb` or a quieter progress line continues the same study.
STUDY_IGNORES = (
    "hydra",
    "paths",
    "logger",
    "num_threads",
    "overwrite",
    "callbacks.rich_progress_bar",
    "callbacks.text_progress",
    "callbacks.validation_summary",
    "callbacks.compute",
    "callbacks.watchdog",
)


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def load_option(group: str, option: str, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """One option's YAML as written (its own defaults list is not composed)."""
    return OmegaConf.load(config_dir / group / f"{option}.yaml")


def where_things_go(output_dir: str | Path, cache_dir: str | Path) -> str:
    """The line a run starts with: its folder (runs go under the working directory's logs/) and the cache it reads
    and fills (one per user: conf/paths), both absolute."""
    return (
        f"run folder: {Path(output_dir).resolve()} | cache: {Path(cache_dir).expanduser().resolve()} "
        "(one per user; LIGHTNING_LLM_CACHE=<folder> moves it)"
    )


def swept_keys(root: DictConfig) -> set[str]:
    """The keys an Optuna sweep varies: its `hydra.sweeper.params` and the command line's sweeps
    (`optimizer.lr='interval(1e-4,1e-2)'`), less the keys the command line fixes (`model.n_embd=64`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(list(root.hydra.overrides.task))
    fixed = {o.key_or_group for o in overrides if not o.is_sweep_override()}
    params = set((OmegaConf.select(root, "hydra.sweeper.params") or {}).keys())
    return (params | {o.key_or_group for o in overrides if o.is_sweep_override()}) - fixed


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part) if isinstance(tree.get(part), dict) else {}
    tree.pop(leaf, None)


def study_name(root: DictConfig) -> str:
    """The Optuna study of a sweep's composed config: its experiment (else its model, objective, data and
    fine-tuning options), then 8 hex digits of a hash of every other setting (unresolved) but the swept keys and
    STUDY_IGNORES. Sweeps of different experiments, or of one experiment at another fixed setting
    (trainer.max_steps=...), get their own study; rerunning a sweep, or extending it (hydra.sweeper.n_trials=...),
    continues its study."""
    choices = {group: choice for group, choice in root.hydra.runtime.choices.items() if choice not in (None, "none")}
    parts = [choices["experiment"]] if "experiment" in choices else [choices[g] for g in STUDY_GROUPS if g in choices]
    settings = OmegaConf.to_container(root, resolve=False)
    for key in (*STUDY_IGNORES, *swept_keys(root)):
        _drop(settings, key)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return "-".join([*map(str, parts), digest])


def _optuna_study(*, _root_: DictConfig) -> str:
    return study_name(_root_)


OmegaConf.register_new_resolver("optuna_study", _optuna_study, replace=True)
# `${mul:a,b}` in configs, e.g. the data-parallel size of trainer=fsdp (devices x nodes)
OmegaConf.register_new_resolver("mul", lambda a, b: int(a) * int(b), replace=True)


class StudyRecord(Callback):
    """When an Optuna sweep starts: say which study it joins, and keep the sweeper's settings, its study's name
    resolved, in the sweep folder's multirun.yaml (as Hydra's basic sweeper does), where `report` finds them."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        record = OmegaConf.to_container(config, resolve=False)
        record["hydra"]["sweeper"]["study_name"] = sweeper.study_name
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(record), sweep_dir / "multirun.yaml")
        print(
            f"optuna study {sweeper.study_name} in {sweeper.storage}: one study per experiment (its options and a "
            "hash of the settings it does not sweep); hydra.sweeper.study_name=<name> picks one"
        )
