"""Optuna sweeps: one study per experiment (named from the composed config), said at the start and recorded."""

from __future__ import annotations

import re

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from lightning_llm.conf import study_name

from .conftest import CONFIG_DIR, TINY, run_cli


def sweep_config(*overrides: str) -> DictConfig:
    """The config `python train.py -m hparams_search=optuna OVERRIDES` composes (its sweep's master config)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)


def study_of(*overrides: str) -> str:
    """The study name that sweep uses (lightning_llm.conf, imported above as train.py imports it, registers the
    `${optuna_study:}` resolver)."""
    return sweep_config(*overrides).hydra.sweeper.study_name


def test_each_experiment_has_its_own_study():
    default = study_of()
    assert re.fullmatch(r"gpt-clm-python_docs-[0-9a-f]{8}", default), default
    assert study_of("experiment=llama_nano").startswith("llama_nano-")
    for other_objective in (["model=bert", "objective=mlm"], ["trainer.max_steps=3"], ["optimizer.lr=0.5"], ["seed=3"]):
        assert study_of(*other_objective) != default, f"{other_objective} optimizes something else"
    for same in (["hydra.sweeper.n_trials=40"], ["logger=wandb", "num_threads=1"], ["paths.log_dir=elsewhere"]):
        assert study_of(*same) == default, f"{same} continues the study"
    cfg = sweep_config()
    with open_dict(cfg):
        cfg.optimizer.lr, cfg.model.n_embd = 0.123, 32  # swept: their defaults are not what the study optimizes
    assert study_name(cfg) == default


@pytest.mark.integration
@pytest.mark.slow  # about 40 s: two Optuna sweeps in subprocesses
def test_two_experiments_sweep_into_two_studies(tmp_path, cache_dir):
    optuna = pytest.importorskip("optuna")
    quick = [*TINY, "~callbacks.sample", "trainer.limit_val_batches=1", "trainer.max_steps=2"]
    names = {}
    for experiment in ("gpt_nano_python_docs", "llama_nano"):
        sweep = f"hydra.sweep.dir=sweep_{experiment}"
        args = ["hparams_search=optuna", f"experiment={experiment}", *quick, "hydra.sweeper.n_trials=1", sweep]
        result = run_cli(*args, f"paths.cache_dir={cache_dir}", "trainer.val_check_interval=2", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        names[experiment] = re.search(r"^optuna study (\S+) in sqlite:///logs/optuna.db", result.stdout, re.M)[1]
        multirun = yaml.safe_load((tmp_path / f"sweep_{experiment}" / "multirun.yaml").read_text())
        assert multirun["hydra"]["sweeper"]["study_name"] == names[experiment]
        assert f"## Optuna study {names[experiment]}" in (tmp_path / f"sweep_{experiment}" / "report.md").read_text()
    storage = f"sqlite:///{tmp_path / 'logs' / 'optuna.db'}"
    studies = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    assert studies == {names["gpt_nano_python_docs"]: 1, names["llama_nano"]: 1}, studies
    assert names["llama_nano"].startswith("llama_nano-")
