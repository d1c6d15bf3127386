"""trainer=tp, fsdp_tp and pp refuse what they cannot run in one line, before any work; an `estimate=true`
dry run of them gives memory and communication per device."""

from __future__ import annotations

import pytest

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel, register_family
from lightning_llm.recipe import train
from lightning_llm.training.parallel_checks import check_model_parallel
from tests.toy_family.family import FAMILY as TOY
from tests.toy_family.model import ParallelDecoder

from .conftest import compose_config

TOY_CONF = str((__import__("pathlib").Path(__file__).parent / "toy_family" / "conf").resolve())
LLAMA_PP = ["trainer=pp", "model=llama-nano", "model.n_kv_head=1"]

REFUSED = {
    "heads": (["trainer=tp", "trainer.devices=4"], "model.n_head=2 is not divisible by the tensor-parallel size 4"),
    "kv-heads": (["trainer=tp", "model=llama-nano", "model.n_kv_head=1"], "model.n_kv_head"),
    "devices": (
        ["trainer=fsdp_tp", "trainer.devices=3", "trainer.tensor_parallel_size=2"],
        "3 processes cannot be split into groups",
    ),
    "dp-sgd": (["trainer=tp", "privacy=dp"], "privacy=dp cannot run under tensor or pipeline parallel"),
    "compile": (["trainer=tp", "model.compile=true"], "model.compile=true"),
    "t5-pipeline": (["trainer=pp", "model=t5", "objective=span"], "its decoder reads the encoder's output"),
    "tied-pipeline": (["trainer=pp"], "model.tie_embeddings=false"),
    "prompt-pipeline": ([*LLAMA_PP, "finetune=prompt"], "finetune=prompt prepends virtual tokens"),
    "classify-pipeline": (
        [*LLAMA_PP, "objective=classify", "data=stdlib_modules"],
        "reads one vector per sequence",
    ),
    "doc-mask-pipeline": ([*LLAMA_PP, "data.packing=doc_mask"], "data.packing=doc_mask needs attention masks"),
    "schedule": ([*LLAMA_PP, "trainer.pipeline_schedule=interleaved"], "pipeline_schedule='interleaved' is unknown"),
    "accumulate-pipeline": ([*LLAMA_PP, "trainer.accumulate_grad_batches=2"], "use trainer.microbatches"),
    "pipeline-with-data-parallel": (
        [*LLAMA_PP, "trainer.devices=4", "trainer.pipeline_parallel_size=2"],
        "pipeline parallel with tensor or data parallel is not built here",
    ),
    "stages-without-layers": ([*LLAMA_PP, "trainer.devices=3"], "layers cannot fill 3 pipeline stages"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_in_one_line(case, make_cfg):
    overrides, message = REFUSED[case]
    with pytest.raises(ConfigError) as refused:
        check_model_parallel(make_cfg(*overrides))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_run_refuses_before_any_work(make_cfg, tmp_path):
    """The recipe's checks call it: nothing is written."""
    with pytest.raises(ConfigError, match="cannot be split into groups"):
        train(make_cfg("trainer=fsdp_tp", "trainer.devices=3", "trainer.tensor_parallel_size=2"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=tp"],
        ["trainer=fsdp_tp", "trainer.devices=4", "trainer.tensor_parallel_size=2"],
        ["trainer=tp", "model=t5", "objective=span"],
        [*LLAMA_PP, "trainer.pipeline_schedule=gpipe"],
        ["trainer=pp", "model=bert", "objective=mlm", "model.tie_embeddings=false"],
    ],
)
def test_what_runs_passes(overrides, make_cfg):
    check_model_parallel(make_cfg(*overrides))


def test_a_family_without_a_plan_is_refused(tmp_path, cache_dir, monkeypatch):
    """The toy family adds a tensor-parallel plan and no pipeline stages; without its plan trainer=tp refuses it."""
    register_family(TOY)
    toy = ["hydra.searchpath=[file://" + TOY_CONF + "]", "model=toy"]
    check_model_parallel(compose_config([*toy, "trainer=tp"], tmp_path, cache_dir))
    with pytest.raises(ConfigError, match="model family 'toy' has no pipeline stages"):
        check_model_parallel(compose_config([*toy, "trainer=pp"], tmp_path, cache_dir))
    monkeypatch.setattr(ParallelDecoder, "tensor_parallel_plan", LanguageModel.tensor_parallel_plan)
    with pytest.raises(ConfigError, match="model family 'toy' has no tensor-parallel plan"):
        check_model_parallel(compose_config([*toy, "trainer=tp"], tmp_path, cache_dir))


def test_estimate_gives_memory_and_communication_per_device(make_cfg):
    """Tensor parallel halves the split weights (norms and position tables stay whole) and sends the residual
    stream; a 2-stage pipeline of 4 microbatches idles 1/5 of each step and holds a stage's weights."""
    llama = ["model=llama-nano", "model.n_layer=4", "model.n_head=4", "model.n_kv_head=2", "estimate=true"]
    one = train(make_cfg(*llama))["estimate"]
    split = train(make_cfg(*llama, "trainer=tp"))["estimate"]
    piped = train(make_cfg(*llama, "trainer=pp", "trainer.microbatches=4"))["estimate"]
    assert 0.5 < split["memory_bytes"]["weights"] / one["memory_bytes"]["weights"] < 0.52
    assert split["parallel"]["communication_bytes"]["tensor_parallel"] > 0
    assert split["tokens_per_step"] == one["tokens_per_step"], "one replica reads one batch"
    assert piped["parallel"]["bubble_fraction"] == pytest.approx(1 / 5)
    assert piped["parallel"]["microbatch_rows"] == 2 and piped["parallel"]["microbatches_in_flight"] == 2
    assert piped["memory_bytes"]["weights"] < 0.6 * one["memory_bytes"]["weights"]
    assert piped["parallel"]["communication_bytes"]["pipeline_parallel"] == 2 * 8 * 32 * 64 * 4
