"""Every option of every config group composes and passes the schema; presets win over conf/train.yaml; a
misspelt key or a wrong type anywhere fails in one line naming the nearest valid key or the expected type."""

from __future__ import annotations

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lightning_llm.cli.overrides import check_cli_overrides
from lightning_llm.conf import group_options
from lightning_llm.errors import ConfigError
from lightning_llm.recipe import TrainingRecipe, instantiate_model
from lightning_llm.recipe.run import known_top_level_keys
from lightning_llm.recipe.schema import validate_config

from .conftest import CONFIG_DIR, run_cli

GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())
ALL_OPTIONS = [(g, o) for g in GROUPS for o in group_options(g, CONFIG_DIR)]
# options that leave a key for the user to fill in (`???`): the schema names it
REQUIRED = {
    ("data", option): "data.path is required" for option in ("text", "sft", "classify", "preference", "chat", "prompts")
}


def test_every_group_has_options():
    expected = {"model", "objective", "data", "tokenizer", "trainer", "precision", "logger", "callbacks"}
    assert expected <= set(GROUPS)
    assert len(ALL_OPTIONS) > 30


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_passes_the_schema(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", tiny=False)
    if group != "hydra":
        assert HydraConfig.get().runtime.choices[group] == option
    if (group, option) in REQUIRED:
        with pytest.raises(ConfigError, match=REQUIRED[(group, option)]):
            validate_config(cfg, known_top_level_keys())
        return
    validate_config(cfg, known_top_level_keys())  # every key is one the code reads, with a fitting type
    if group == "model":
        model = instantiate_model(cfg.model, 256)
        ids = torch.zeros(1, 8, dtype=torch.long)
        logits = model(ids, ids[:, :5]) if model.architecture == "encoder-decoder" else model(ids)
        assert logits.shape == (1, 5 if model.architecture == "encoder-decoder" else 8, 256)


def test_gpt2_small_has_124m_parameters(make_cfg):
    model = instantiate_model(make_cfg("model=gpt2-small", tiny=False).model, 50257)
    assert 124_000_000 < model.num_parameters() < 124_600_000


def test_a_preset_top_level_key_wins_over_train_yaml(make_cfg):
    assert make_cfg(tiny=False).validate_before_fit == 4
    cfg = make_cfg("debug=fdr", tiny=False)
    assert cfg.validate_before_fit is False and cfg.trainer.fast_dev_run is True


@pytest.mark.integration
def test_cfg_job_shows_the_preset_values(tmp_path):
    result = run_cli("debug=fdr", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validate_before_fit: false" in result.stdout and "fast_dev_run: true" in result.stdout
    assert not any(tmp_path.iterdir()), "printing the config writes nothing"


def test_unknown_group_option_is_named():
    with pytest.raises(ConfigError, match=r"model=gtp is not an option of the 'model' group: choose one of .*gpt"):
        check_cli_overrides(["model=gtp", "trainer.max_steps=3"])
    with pytest.raises(ConfigError, match="tokenizer=sentencepiece"):
        check_cli_overrides(["tokenizer=bpe,sentencepiece", "--multirun"])
    check_cli_overrides(["model=gpt", "model.n_layer=2", "hydra.run.dir=x", "+foo=1", "~logger"])  # no error


def test_precision_is_set_in_its_group_only():
    """One place sets precision: the precision group (it writes trainer.precision); the trainer group does not."""
    with pytest.raises(ConfigError, match=r"trainer.precision=bf16-mixed sets precision outside .*precision=<option>"):
        check_cli_overrides(["trainer.precision=bf16-mixed"])
    check_cli_overrides(["precision=bf16-mixed"])  # no error
    for option in (CONFIG_DIR / "trainer").glob("*.yaml"):
        assert "precision" not in OmegaConf.load(option), f"{option.name} sets precision: the precision group does"


MISSPELT = {
    "optimizer": (
        ["+optimizer.learning_rate=1e-3"],
        "optimizer.learning_rate is not an option of torch.optim.AdamW: did you mean optimizer.lr?",
    ),
    "model": (["+model.n_layers=3"], "did you mean model.n_layer?"),
    "trainer": (["+trainer.max_step=3"], "did you mean trainer.max_steps?"),
    "data": (["+data.batchsize=4"], "did you mean data.batch_size?"),
    "callback": (["+callbacks.sample.promt=x"], "did you mean callbacks.sample.prompt?"),
    "tokenizer": (["+tokenizer.vocab=100"], "did you mean tokenizer.vocab_size?"),
    "top-level": (["+seeds=3"], "did you mean seed?"),
    "eval-task": (["eval=mmlu", "+eval.tasks.mmlu.n_shot=5"], "did you mean eval.tasks.mmlu.num_fewshot?"),
    "finetune": (["finetune=lora", "+finetune.rnak=4"], "did you mean finetune.rank?"),
    "type-int": (["trainer.max_steps=abc"], "trainer.max_steps='abc' must be an integer"),
    "type-scheduler": (["scheduler.warmup_steps=1.5"], "scheduler.warmup_steps=1.5 must be an integer"),
    "range": (["data.batch_size=0"], "data.batch_size=0 must be at least 1"),
    "required": (["data=text"], "data.path is required"),
    "finetune-without-base": (
        ["finetune=lora"],
        "finetune=lora adapts a pretrained model and model.pretrained is not set",
    ),
    "preset-without-base": (["experiment=finetune_gpt_lora"], "finetune=lora adapts a pretrained model"),
}


@pytest.mark.parametrize("case", MISSPELT)
def test_a_misspelt_key_or_wrong_type_fails_in_one_line(make_cfg, tmp_path, case):
    overrides, needle = MISSPELT[case]
    cfg = make_cfg(*overrides, tiny=False, output_dir=tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        TrainingRecipe(cfg).check()
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists(), "nothing is written before the checks pass"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["optimizer.learning_rate=1e-3"],
            "optimizer.learning_rate is not an option of the config: did you mean optimizer.lr?",
        ),
        (["mode=bert"], "mode is not an option of the config: did you mean model?"),
        (["eval=mmlu", "eval.num_fewshots=5"], "did you mean eval.num_fewshot?"),
    ],
    ids=["optimizer", "group", "eval"],
)
def test_hydra_composition_errors_are_one_line_too(tmp_path, args, needle):
    result = run_cli(*args, "hydra.run.dir=out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
