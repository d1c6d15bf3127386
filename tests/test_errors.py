"""User mistakes: one line naming the key and the fix, exit code 2, before any tokenizer or training work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from lightning_llm.errors import ConfigError
from lightning_llm.recipe import train

from .conftest import ROOT, TINY, compose_config, run_cli

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
    # data that does not fit the objective (it failed in collation with IndexError, RuntimeError, TypeError)
    "sft-on-text": (
        ["objective=sft", "data=pydoc_topics"],
        [
            "data=pydoc_topics gives packed blocks of text",
            "objective=clm",
            "sft or stdlib_summaries with objective=sft",
        ],
    ),
    "classify-on-text": (
        ["model=bert", "objective=classify", "data=pydoc_topics"],
        ["objective=classify does not train on", "objective=mlm", "data=classify or stdlib_modules"],
    ),
    "clm-on-pairs": (
        ["objective=clm", "data=stdlib_summaries"],
        ["gives (prompt, response) pairs", "sft with this data", "python_docs"],
    ),
    # the architecture from the config alone (it was a traceback around this line, after the tokenizer's work)
    "heads": (["model.n_head=3", "model.n_embd=128"], ["model.n_embd=128 is not divisible by model.n_head=3"]),
    # optimizer and schedule numbers (a ValueError after setup; a string failed after ~22 s)
    "lr-negative": (["optimizer.lr=-1"], ["optimizer.lr=-1 must be a number > 0"]),
    "lr-text": (["optimizer.lr=fast"], ["optimizer.lr='fast' must be a number"]),
    "betas": (["optimizer.betas=[0.9,1.5]"], ["optimizer.betas=[0.9, 1.5] must be 2 numbers in [0, 1)"]),
    "weight-decay": (["optimizer.weight_decay=-0.1"], ["optimizer.weight_decay=-0.1 must be a number >= 0"]),
    "warmup": (["scheduler.warmup_steps=-5"], ["scheduler.warmup_steps=-5 must be a number >= 0"]),
    "min-lr": (["scheduler.min_lr_ratio=2"], ["scheduler.min_lr_ratio=2 must be a number in [0, 1]"]),
    # settings the datamodule and the objective check themselves, now before anything loads (a wrapped traceback)
    "holdout": (["data.holdout=middle"], ["data.holdout='middle' is unknown: use documents or tail"]),
    "two-targets": (["objective=sft", "data=stdlib_summaries", "data.label_column=module"], ["set exactly one of"]),
    "mask-prob": (["model=bert", "objective=mlm", "objective.mask_prob=2"], ["objective.mask_prob=2 must be in"]),
    "noise-density": (["model=t5", "objective=span", "objective.noise_density=0"], ["objective.noise_density=0"]),
    "optimizer-refuses": (
        ["+optimizer.foreach=true", "optimizer.fused=true"],
        ["optimizer=adamw with scheduler=cosine cannot be built", "`fused` and `foreach`"],
    ),
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
    assert not list((tmp_path / "out").glob("*")), "the run folder is not touched"


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


# train.py with a stage that waits to be interrupted (the first Ctrl-C lands outside Lightning's fit, which
# ignores further Ctrl-Cs itself) and a report that takes its time (the second lands while it is drawn)
SLOW_ENDING = """
import runpy, sys, time
from pathlib import Path
root, marks = Path(sys.argv[1]), Path(sys.argv[2])
sys.argv = [str(root / "train.py"), *sys.argv[3:]]
import lightning_llm.report as report
from lightning_llm.recipe.run import TrainingRecipe
def waiting(self, mark="stage"):
    (marks / mark).touch()
    time.sleep(120)
TrainingRecipe.setup_model = waiting
report.write_run_report = lambda run_dir: waiting(None, "report")
runpy.run_path(str(root / "train.py"), run_name="__main__")
"""


@pytest.mark.integration
def test_a_second_ctrl_c_while_the_report_is_drawn_is_one_line(tmp_path, cache_dir):
    """Ctrl-C twice 0.3 s apart: the second one, while the report is drawn, skips it; the run still ends with
    the one-line interrupted message and exit code 130 (it was a 210-line KeyboardInterrupt traceback)."""
    (tmp_path / "driver.py").write_text(SLOW_ENDING)
    marks = tmp_path / "marks"
    marks.mkdir()
    args = [*TINY, f"hydra.run.dir={tmp_path / 'out'}", f"paths.cache_dir={cache_dir}"]
    command = [sys.executable, str(tmp_path / "driver.py"), str(ROOT), str(marks), *args]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 240
        while not (marks / "stage").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    assert (marks / "report").exists(), "the second Ctrl-C came while the report was drawn"
    assert proc.returncode == 130, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: stopped by SIGINT at step 0; no checkpoint was written"], stderr[-2000:]
    assert "Traceback" not in stderr
    assert (tmp_path / "out" / "results.json").is_file()
