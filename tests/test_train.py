"""End-to-end runs of the same function `python train.py` runs: loss falls, outputs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_llm.recipe import train


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cache_dir):
    """One tiny run shared by the assertions below (100 steps on the pydoc topics)."""
    from .conftest import TINY, compose_config

    out = tmp_path_factory.mktemp("smoke")
    cfg = compose_config(TINY, out, cache_dir)
    return out, train(cfg)


def test_loss_falls(smoke):
    _, results = smoke
    start, end = results["val_start"]["val/loss"], results["metrics"]["val/loss"]
    assert start == pytest.approx(torch.log(torch.tensor(float(results["data"]["vocab_size"]))).item(), rel=0.05)
    assert end < 0.85 * start, (start, end)  # the unigram entropy alone is ~0.8 of ln(vocab)


def test_results_json(smoke):
    out, results = smoke
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["status"] == "completed"
    assert on_disk["steps"] == 100
    assert on_disk["tokens"] == 100 * 8 * 32
    assert on_disk["choices"]["model"] == "gpt" and on_disk["choices"]["objective"] == "clm"
    assert on_disk["metrics"]["val/perplexity"] == pytest.approx(
        torch.exp(torch.tensor(on_disk["metrics"]["val/loss"])).item(), rel=0.02
    )
    assert on_disk["tokens_per_s"] > 0
    assert set(on_disk["data"]["tokens"]) == {"train", "val"}


def test_outputs_written(smoke):
    out, results = smoke
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert results["checkpoints"]["best"].endswith(".ckpt")
    metrics = (out / "csv" / "metrics.csv").read_text()
    assert "val/loss" in metrics and "train/loss" in metrics and "lr-AdamW" in metrics
    assert "train/device/items_per_sec" in metrics  # tokens/s, from Lightning's ThroughputMonitor
    sample = results["samples"][0]
    assert sample["text"].startswith("The") and len(sample["text"]) > len("The")
    assert sample["text"] in (out / "samples.txt").read_text()


def test_checkpoint_is_self_describing(smoke):
    out, _ = smoke
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["model_config"]["n_embd"] == 64
    assert ckpt["tokens_seen"] == 100 * 8 * 32
    from lightning_llm.tokenizers import tokenizer_from_bytes

    assert (
        tokenizer_from_bytes(ckpt["tokenizer"]).decode(tokenizer_from_bytes(ckpt["tokenizer"]).encode("x = 1"))
        == "x = 1"
    )


def test_resume_continues_from_checkpoint(smoke, make_cfg, tmp_path):
    out, first = smoke
    cfg = make_cfg(
        "trainer.max_steps=120",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
        output_dir=tmp_path / "resumed",
    )
    resumed = train(cfg)
    assert "val_start" not in resumed  # no re-validation of an untrained model
    assert resumed["steps"] == 120
    assert resumed["tokens"] == 120 * 8 * 32  # the counter continued, it did not restart
    rows = (tmp_path / "resumed" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [int(r.split(",")[header.index("step")]) for r in rows[1:]]
    assert min(steps) >= 100, "a resumed run logs from the step it resumed at"


def test_bf16_mixed_trains(make_cfg):
    results = train(make_cfg("precision=bf16-mixed", "trainer.max_steps=5", "validate_before_fit=false"))
    assert torch.isfinite(torch.tensor(results["metrics"]["val/loss"]))


def test_fast_dev_run_with_char_tokenizer(make_cfg):
    results = train(make_cfg("debug=fdr", "tokenizer=char"))
    assert results["steps"] == 1
    assert results["data"]["vocab_size"] < 200


def test_eval_suite_runs_after_training(make_cfg):
    results = train(
        make_cfg(
            "eval=offline",
            "eval.limit=8",
            "eval.tasks.memorization.prefix_tokens=16",
            "eval.tasks.memorization.suffix_tokens=8",
            "trainer.max_steps=5",
            "validate_before_fit=false",
        )
    )
    tasks = results["eval"]["tasks"]
    assert tasks and all(t["status"] in ("ok", "skipped") for t in tasks.values()), tasks
    assert "perplexity" in tasks and tasks["perplexity"]["metrics"]["bits_per_byte"] > 0
    assert "summary" in results["eval"]


def test_per_step_values_are_logged_at_the_logging_cadence_only(smoke):
    """The module logs train/loss, train/tokens and train/grad_norm only on the steps the loggers write (every
    trainer.log_every_n_steps = 10): each of those steps still has all three, with the tokens seen so far."""
    import csv

    out, _ = smoke
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    for column in ("train/loss", "train/tokens", "train/grad_norm"):
        steps = [int(row["step"]) for row in rows if row.get(column)]
        assert steps == list(range(9, 100, 10)), (column, steps)
    tokens = {int(row["step"]): float(row["train/tokens"]) for row in rows if row.get("train/tokens")}
    assert tokens[99] == 100 * 8 * 32


def _val_rows(out) -> list[tuple[int, float]]:
    import csv

    rows = csv.DictReader((out / "csv" / "metrics.csv").open())
    return [(int(row["step"]), float(row["val/loss"])) for row in rows if row.get("val/loss")]


def test_no_second_validation_when_fit_ended_on_one(smoke):
    """Fit validated at its last step (100 = 4 x 25): the results take that validation instead of repeating it."""
    out, results = smoke
    rows = _val_rows(out)
    assert [step for step, _ in rows] == [0, 24, 49, 74, 99], rows  # a repeat would log at step 100
    assert results["metrics"]["val/loss"] == pytest.approx(rows[-1][1])


def test_final_validation_runs_when_fit_ended_between_validations(make_cfg):
    """Fit's last validation (step 4) saw older weights than the final ones (step 6): validate again."""
    cfg = make_cfg("trainer.max_steps=6", "trainer.val_check_interval=4", "trainer.limit_val_batches=2")
    results = train(cfg)
    rows = _val_rows(Path(cfg.paths.output_dir))
    assert [step for step, _ in rows][-2:] == [3, 6], rows  # the final validation logs at the global step
    assert results["metrics"]["val/loss"] == pytest.approx(rows[-1][1])


def test_a_run_without_validation_trains(make_cfg):
    """trainer.limit_val_batches=0 turns validation off: the final validation returns nothing (was an IndexError)."""
    results = train(make_cfg("trainer.limit_val_batches=0", "trainer.max_steps=3", "~callbacks.sample"))
    assert results["status"] == "completed" and results["steps"] == 3 and "val/loss" not in results["metrics"]


def test_a_run_without_loggers_trains(make_cfg):
    """logger=none with the default callbacks: Lightning's learning-rate monitor would fail once training starts
    (it refuses to run without a logger); the recipe leaves it out."""
    results = train(make_cfg("logger=none", "trainer.max_steps=3", "validate_before_fit=false", "~callbacks.sample"))
    assert results["status"] == "completed" and results["steps"] == 3


def test_results_name_the_model_and_tokenizer_that_were_loaded(make_cfg, base_checkpoints):
    """Fine-tuning from a checkpoint: results.json said `tokenizer: bpe` and a tokenizer path of "None" although the
    checkpoint's tokenizer ran; it names the loaded model and where its tokenizer came from."""
    source = str(base_checkpoints["gpt"])
    results = train(make_cfg(f"model.pretrained={source}", "finetune=lora", "trainer.max_steps=2", "~callbacks.sample"))
    assert results["tokenizer"]["kind"] == results["choices"]["tokenizer"] == "the checkpoint's (model.pretrained)"
    assert results["tokenizer"]["source"] == source and results["tokenizer"]["vocab_size"] == 512
    assert results["choices"]["model"] == f"gpt: gpt from {source}"
    assert results["model"]["pretrained"] == source
