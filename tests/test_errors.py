"""User mistakes: one line naming the key and the fix, exit code 2, before any tokenizer or training work."""

from __future__ import annotations

import pytest

from lightning_llm.errors import ConfigError
from lightning_llm.recipe import train

from .conftest import compose_config, run_cli

FAST = ["trainer.max_steps=1", "paths.log_dir=logs", "hydra.run.dir=out"]


def _one_line_error(result, *needles: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]
    return error_lines[0]


CASES = {
    "missing-path": (["data=text", "data.path=./no/such/file.txt"], ["data.path='./no/such/file.txt' does not exist"]),
    "block-size": (["data.block_size=4096"], ["data.block_size=4096", "model.block_size=128"]),
    "tokenizer-type": (["tokenizer.type=wordpiece"], ["tokenizer.type='wordpiece'", "bpe"]),
    "fp16-on-cpu": (["precision=16-mixed", "trainer=cpu"], ["precision=16-mixed", "bf16-mixed"]),
    "missing-ckpt": (["ckpt_path=missing.ckpt"], ["ckpt_path='missing.ckpt' does not exist"]),
    "bert+clm": (["model=bert"], ["objective=clm does not fit model family 'bert'", "objective=mlm"]),
    "t5+mlm": (["model=t5", "objective=mlm"], ["objective=mlm does not fit model family 't5'", "objective=span"]),
    "gpt+span": (["model=gpt", "objective=span"], ["objective=span does not fit model family 'gpt'", "objective=clm"]),
    "deepspeed-on-cpu": (["trainer=deepspeed"], ["trainer.strategy=deepspeed_stage_2 needs CUDA GPUs", "trainer=fsdp"]),
    "xla-without-tpu": (["trainer=xla"], ["trainer=xla needs torch_xla"]),
    "fp8-without-te": (["precision=transformer-engine"], ["needs NVIDIA Transformer Engine", "bf16-mixed"]),
    "qlora-under-fsdp": (["trainer=fsdp", "finetune=qlora"], ["finetune=qlora cannot run under trainer=fsdp"]),
    "mixture-zero-weights": (
        ["data=mixture", "data.sources.topics.weight=0", "data.sources.docstrings.weight=0"],
        ["data.sources weights sum to 0"],
    ),
    "mixture-negative-weight": (["data=mixture", "data.sources.topics.weight=-1"], ["data.sources.topics.weight=-1"]),
    "mixture-missing-file": (
        ["data=mixture", "data.sources.topics.path=./nope.jsonl"],
        ["data.sources.topics.path='./nope.jsonl' does not exist"],
    ),
    "mixture-unknown-key": (["data=mixture", "+data.sources.topics.colour=red"], ["data.sources.topics.colour is not"]),
    "pipeline-engine": (["data.pipeline_engine=spark"], ["data.pipeline_engine='spark' is unknown", "local, ray"]),
    "doc-mask-on-t5": (["model=t5", "objective=span", "data.packing=doc_mask"], ["data.packing='doc_mask'", "concat"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_config_fails_fast(tmp_path, case):
    """The run function raises one ConfigError naming the key, before any tokenizer or training work."""
    overrides, needles = CASES[case]
    cache = tmp_path / "cache"
    cfg = compose_config([*overrides, "trainer.max_steps=1"], tmp_path / "out", cache)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert not (cache / "tokenizers").exists(), "no tokenizer work before the check"
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["model=gtp"], ["model=gtp", "gpt2-small"]),
        pytest.param(["data.block_size=4096"], ["data.block_size=4096"], marks=pytest.mark.slow),  # in-process above
    ],
    ids=["unknown-option", "config-check"],
)
def test_cli_prints_one_line_and_exits_2(tmp_path, args, needles):
    result = run_cli(*args, *FAST, "paths.cache_dir=cache", cwd=tmp_path)
    _one_line_error(result, *needles)


@pytest.mark.integration
def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    result = run_cli("data=text", f"data.path={tmp_path / 'empty.txt'}", *FAST, "paths.cache_dir=cache", cwd=tmp_path)
    _one_line_error(result, "empty.txt", "empty")
    assert not (tmp_path / "cache" / "tokenizers").exists()


@pytest.mark.integration
def test_error_keeps_existing_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"keep": true}')
    result = run_cli("data.block_size=999", *FAST, cwd=tmp_path)
    _one_line_error(result, "data.block_size=999")
    assert (out / "results.json").read_text() == '{"keep": true}'
