"""Install weight (issue 27): `pip install lightning-llm` is what training, fine-tuning and evaluation need; every
optional feature is an extra, and a feature whose extra is missing says in one line which to install."""

from __future__ import annotations

import logging
import re
import sys

import pytest

from lightning_llm.errors import ConfigError
from lightning_llm.extras import AFTERWARDS, OPTIONAL, require
from lightning_llm.recipe import TrainingRecipe, train

from .conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
#: what a GPT's trainer must not download
HEAVY = (
    "opacus",
    "captum",
    "codecarbon",
    "boto3",
    "ray",
    "lm-eval",
    "accelerate",
    "bitsandbytes",
    "litdata",
    "transformers",
)


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=;! ]", r, maxsplit=1)[0].lower() for r in requirements}


def missing(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `modules` uninstalled for this test (import fails, find_spec finds nothing)."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_the_core_install_pulls_no_optional_feature():
    core = names(PROJECT["dependencies"])
    assert not core & set(HEAVY), core & set(HEAVY)
    assert {"torch", "lightning", "hydra-core", "datasets", "sentencepiece", "torchmetrics"} <= core


def test_every_feature_has_its_extra_and_all_and_dev_hold_them():
    features = set(EXTRAS) - {"all", "dev"}
    for module, (_, extra) in OPTIONAL.items():
        assert extra in features, (module, extra)
        assert module in AFTERWARDS or module.replace("_", "-") in names(EXTRAS[extra]), (module, EXTRAS[extra])
    (everything,) = EXTRAS["all"]
    assert set(re.search(r"\[(.*)\]", everything).group(1).split(",")) == features
    assert "lightning-llm[all]" in EXTRAS["dev"], "make install (the dev extra) installs every feature, so tests run"


def test_require_names_the_extra_in_one_line(monkeypatch):
    require("torch", "training")  # installed: nothing to say
    missing(monkeypatch, "opacus", "litdata")
    with pytest.raises(ConfigError, match=r"^privacy=dp needs Opacus: pip install 'lightning-llm\[privacy\]'$"):
        require("opacus", "privacy=dp")
    with pytest.raises(
        ConfigError, match=r"needs LitData: pip install 'lightning-llm\[shards\]' && pip install --no-deps"
    ):
        require("litdata", "data.format=shards")


@pytest.mark.parametrize(
    ("module", "overrides", "message"),
    [
        ("opacus", ["privacy=dp"], "privacy=dp needs Opacus: pip install 'lightning-llm[privacy]'"),
        ("litdata", ["data.format=shards"], "data.format=shards needs LitData: pip install 'lightning-llm[shards]' &&"),
        (
            "lm_eval",
            ["eval=harness", "eval.tasks.lm_eval.tasks=[arc_easy]"],
            "needs lm-evaluation-harness: pip install 'lightning-llm[harness]'",
        ),
    ],
)
def test_a_missing_extra_is_refused_at_check_time(module, overrides, message, make_cfg, monkeypatch, tmp_path):
    missing(monkeypatch, module)
    cfg = make_cfg(*overrides, output_dir=tmp_path / "run")
    with pytest.raises(ConfigError) as refused:
        TrainingRecipe(cfg).check()
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_inspect_without_captum_says_so_before_loading(monkeypatch, tmp_path, capsys):
    from lightning_llm.cli.main import main

    missing(monkeypatch, "captum")
    assert main(["inspect", f"model.pretrained={tmp_path / 'run'}", "--prompt", "x"]) == 2
    error = capsys.readouterr().err
    assert error == "error: lightning-llm inspect needs Captum: pip install 'lightning-llm[inspect]'\n"


def test_a_run_without_codecarbon_has_no_energy_numbers_and_one_warning(make_cfg, monkeypatch, caplog):
    missing(monkeypatch, "codecarbon")
    cfg = make_cfg("trainer.max_steps=3", "trainer.val_check_interval=3", "~callbacks.sample")
    cfg.callbacks.compute.track_energy = True
    with caplog.at_level(logging.WARNING):
        results = train(cfg)
    assert results["status"] == "completed"
    assert "flops_per_token" in str(results["compute"]) and "energy_kwh" not in results["compute"]
    warnings = [r.getMessage() for r in caplog.records if "codecarbon" in r.getMessage().lower()]
    assert len(warnings) == 1 and "lightning-llm[energy]" in warnings[0], warnings
