"""Every option of every config group composes, and the CLI names unknown options in one line."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.cli.overrides import check_cli_overrides
from lightning_llm.conf import group_options
from lightning_llm.errors import ConfigError
from lightning_llm.recipe import instantiate_model, resolved_config

from .conftest import CONFIG_DIR

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())
ALL_OPTIONS = [(g, o) for g in GROUPS for o in group_options(g, CONFIG_DIR)]


def test_every_group_has_options():
    expected = {"model", "objective", "data", "tokenizer", "trainer", "precision", "logger", "callbacks"}
    assert expected <= set(GROUPS)
    assert len(ALL_OPTIONS) > 30


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", tiny=False)
    container = resolved_config(cfg) if group != "data" or option != "text" else {"model": cfg.model}
    assert container["model"]["_target_"].startswith("lightning_llm.models")
    if group == "model":
        model = instantiate_model(cfg.model, 256)
        ids = torch.zeros(1, 8, dtype=torch.long)
        logits = model(ids, ids[:, :5]) if model.family == "t5" else model(ids)
        assert logits.shape == (1, 5 if model.family == "t5" else 8, 256)


def test_gpt2_small_has_124m_parameters(make_cfg):
    model = instantiate_model(make_cfg("model=gpt2-small", tiny=False).model, 50257)
    assert 124_000_000 < model.num_parameters() < 124_600_000


def test_unknown_group_option_is_named():
    with pytest.raises(ConfigError, match=r"model=gtp is not an option of the 'model' group: choose one of .*gpt"):
        check_cli_overrides(["model=gtp", "trainer.max_steps=3"])
    with pytest.raises(ConfigError, match="tokenizer=sentencepiece"):
        check_cli_overrides(["tokenizer=bpe,sentencepiece", "--multirun"])
    check_cli_overrides(["model=gpt", "model.n_layer=2", "hydra.run.dir=x", "+foo=1", "~logger"])
