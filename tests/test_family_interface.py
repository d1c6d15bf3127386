"""A new model family is one folder plus a YAML: the test-only toy family (tests/toy_family) trains, fine-tunes,
evaluates, checkpoints and loads through the family interface, with no edit outside its folder."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.checkpoints import build_model, load_pretrained, load_weights
from lightning_llm.cli.main import main as cli_main
from lightning_llm.models import families, family_of, register_family
from lightning_llm.recipe import run_experiment, train
from tests.toy_family.family import FAMILY as TOY
from tests.toy_family.model import ParallelDecoder

from .conftest import TINY, compose_config

TOY_CONF = str((__import__("pathlib").Path(__file__).parent / "toy_family" / "conf").resolve())
QUICK = [*TINY, "trainer.max_steps=30", "trainer.val_check_interval=15", "trainer.limit_val_batches=2"]


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    register_family(TOY)
    yield


def toy_cfg(tmp_path, cache_dir, *overrides: str):
    return compose_config([f"hydra.searchpath=[file://{TOY_CONF}]", "model=toy", *overrides], tmp_path, cache_dir)


def test_the_registry_lists_it_beside_the_builtin_families():
    assert set(families()) >= {"gpt", "bert", "t5", "toy"}
    assert family_of(ParallelDecoder) is TOY and TOY.architecture == "decoder"


def test_toy_family_pretrains_finetunes_evaluates_and_reloads(tmp_path, cache_dir):
    results, module = run_experiment(
        toy_cfg(tmp_path / "base", cache_dir, *QUICK, "eval=offline", "eval.limit=4", "~eval.tasks.memorization")
    )
    assert isinstance(module.model, ParallelDecoder)
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]
    assert results["eval"]["tasks"]["perplexity"]["status"] == "ok", results["eval"]["tasks"]["perplexity"]
    assert results["eval"]["tasks"]["human_eval"]["status"] == "ok"

    last = tmp_path / "base" / "checkpoints" / "last.ckpt"
    pretrained = load_pretrained(last)
    assert pretrained.family == "toy"
    model = build_model("toy", pretrained.config, pretrained.state_dict)
    load_weights(model, pretrained.state_dict, "toy")
    ids = torch.randint(5, 100, (2, 12))
    torch.testing.assert_close(model.eval()(ids), module.model.eval()(ids))

    for method in ("lora", "freeze", "prompt", "adapter"):
        tuned = train(
            toy_cfg(
                tmp_path / method,
                cache_dir,
                *QUICK,
                f"model.pretrained={last}",
                f"finetune={method}",
                "forgetting.batches=2",
            )
        )
        assert tuned["metrics"]["val/loss"] < tuned["val_start"]["val/loss"], method
        assert tuned["parameters"]["trainable"] < tuned["parameters"]["total"], method
        assert set(tuned["forgetting"]) == {"before", "after"}


def test_a_family_without_a_hugging_face_mapping_says_so(tmp_path, cache_dir, capsys):
    train(toy_cfg(tmp_path / "run", cache_dir, *QUICK, "trainer.max_steps=2", "validate_before_fit=false"))
    assert cli_main(["export", str(tmp_path / "run"), str(tmp_path / "hf")]) == 2
    assert "model family 'toy' has no Hugging Face mapping" in capsys.readouterr().err
