"""Fine-tuning is bounded by the data, not the model's context (issue 34): batches of examples bounded by tokens
(`data.max_tokens`, rows of similar length together, padded to their batch's longest), a bounded validation before
fit, samples that answer held-out prompts in the task's format, and `estimate=true` from the rows' real lengths."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

from lightning_llm.data.examples import AUTO_MAX_TOKENS, resolve_max_tokens
from lightning_llm.data.sampling import TokenBudgetSampler
from lightning_llm.errors import ConfigError
from lightning_llm.eval.forgetting import AUTO_PROBE_BATCHES, PROBE_STEPS_PER_WINDOW, probe_batches
from lightning_llm.finetune import count_parameters
from lightning_llm.recipe import train
from lightning_llm.recipe.build import instantiate_model
from lightning_llm.recipe.metrics import (
    AUTO_VAL_BATCHES,
    HELD_OUT_STEPS,
    auto_val_batches,
    check_val_batches,
    resolve_val_batches,
    validate_before_fit,
)
from lightning_llm.recipe.run import TrainingRecipe

SUMMARIES = ["objective=sft", "data=stdlib_summaries", "model.block_size=256", "data.max_examples=800"]


def lengths_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(10, 400, n)


def test_batches_stay_within_the_token_budget_and_cover_the_epoch():
    lengths = lengths_of(1000)
    sampler = TokenBudgetSampler(lengths, max_tokens=1024, max_rows=16, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(1000))  # every row once, none dropped
    assert all(len(b) <= 16 and len(b) * lengths[b].max() <= 1024 for b in batches)
    assert len(sampler) == len(batches)
    padded = sum(len(b) * lengths[b].max() for b in batches) / lengths.sum()
    random_rows = [list(range(i, min(i + 16, 1000))) for i in range(0, 1000, 16)]
    assert padded < 1.1 < 1.5 < sum(len(b) * lengths[b].max() for b in random_rows) / lengths.sum()  # little padding
    sizes = {len(b) for b in batches}
    assert min(sizes) < 4 and max(sizes) == 16  # long rows come fewer to a batch
    assert [len(b) for b in batches[:20]] != sorted(len(b) for b in batches[:20])  # batches in a random order


def test_token_batches_are_rebuilt_per_epoch_resume_and_shard():
    lengths = lengths_of(500)
    first = TokenBudgetSampler(lengths, 2048, 8, seed=7)
    again = TokenBudgetSampler(lengths, 2048, 8, seed=7)
    assert list(first) == list(again)
    again.set_epoch(1)
    assert list(again) != list(first)
    resumed = TokenBudgetSampler(lengths, 2048, 8, seed=7)
    resumed.resume_after(batches=5, batch_size=8)  # skips batches, not rows
    assert list(resumed) == list(first)[5:]
    ranks = []
    for rank in (0, 1):
        shard = TokenBudgetSampler(lengths, 2048, 8, seed=7)
        shard.distribute(2, rank)
        ranks.append(list(shard))
    assert len(ranks[0]) == len(ranks[1]) == len(list(first)) // 2
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_auto_bounds_batches_when_fine_tuning_an_imported_model():
    assert resolve_max_tokens({"max_tokens": "auto"}, imported=True) == {"max_tokens": AUTO_MAX_TOKENS}
    assert resolve_max_tokens({"max_tokens": "auto"}, imported=False) == {"max_tokens": None}
    assert resolve_max_tokens({"max_tokens": 512}, imported=False) == {"max_tokens": 512}
    assert resolve_max_tokens({"block_size": 256}, imported=True) == {}  # packed text: no such key
    with pytest.raises(ConfigError, match="data.max_tokens=-3 must be a positive number"):
        resolve_max_tokens({"max_tokens": -3}, imported=False)


def test_bad_max_tokens_is_refused_before_anything_loads(make_cfg):
    with pytest.raises(ConfigError, match="data.max_tokens='lots'"):
        TrainingRecipe(make_cfg(*SUMMARIES, "data.max_tokens=lots")).check()


def prepared(cfg) -> TrainingRecipe:
    recipe = TrainingRecipe(cfg)
    for stage in (recipe.check, recipe.load_pretrained, recipe.setup_data, recipe.setup_model, recipe.setup_finetune):
        stage()
    return recipe


def test_supervised_batches_follow_the_data(make_cfg, caplog):
    with caplog.at_level(logging.INFO):
        recipe = prepared(make_cfg(*SUMMARIES, "data.batch_size=16", "data.max_tokens=1024"))
    assert "at most 1024 padded tokens each (data.batch_size, data.max_tokens" in caplog.text
    datamodule, pad = recipe.datamodule, recipe.datamodule.tokenizer.pad_id
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        shapes = []
        for batch in loader:
            ids = batch["input_ids"]
            real = (ids != pad).sum(1)
            assert ids.size(1) == real.max()  # padded to the batch's longest row, not the context
            assert ids.numel() <= 1024 or ids.size(0) == 1
            shapes.append(tuple(ids.shape))
        assert len({rows for rows, _ in shapes}) > 2  # as many rows as fit
    rows, length = datamodule.batch_shape()
    assert rows * length <= 1024 and length <= 256
    assert datamodule.rows_per_batch(256) == 4 and datamodule.rows_per_batch(4096) == 1  # the forgetting probe


def test_before_fit_validation_is_bounded_and_fit_keeps_limit_val_batches(caplog):
    seen = []

    class Count(pl.Callback):
        def on_validation_batch_end(self, *args, **kwargs) -> None:
            seen.append(1)

    trainer = pl.Trainer(
        max_steps=1, limit_val_batches=8, logger=False, enable_checkpointing=False, callbacks=[Count()],
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    module, data = BoringModel(), BoringDataModule()
    data.setup("validate")  # as the recipe has it: prepared
    with caplog.at_level(logging.INFO):
        validate_before_fit(trainer, module, data, 3)
    assert len(seen) == 3 and "validation before fit: the first 3 of 8 batches (validate_before_fit=3" in caplog.text
    assert trainer.limit_val_batches == 8
    seen.clear()
    trainer.validate(module, datamodule=data, verbose=False)
    assert len(seen) == 8  # later validations: trainer.limit_val_batches
    seen.clear()
    validate_before_fit(trainer, module, data, True)
    assert len(seen) == 8


def test_held_out_reads_of_an_imported_model_fine_tune_are_sized_to_the_run(make_cfg, base_checkpoints, caplog):
    """trainer.limit_val_batches=auto and forgetting.batches=auto when fine-tuning an imported model: each
    validation one batch per HELD_OUT_STEPS training steps (1 to AUTO_VAL_BATCHES), the probe one window per
    PROBE_STEPS_PER_WINDOW steps (at least 2, at most AUTO_PROBE_BATCHES full batches), said in the log; the whole
    split and no probe when training from scratch."""
    assert (HELD_OUT_STEPS, AUTO_VAL_BATCHES, PROBE_STEPS_PER_WINDOW, AUTO_PROBE_BATCHES) == (20, 4, 10, 2)
    assert auto_val_batches(-1) == 4 and probe_batches("auto", None, 4) == (2, 4)  # a run bounded by epochs
    summaries = ["objective=sft", "data=stdlib_summaries", "data.max_examples=400", "trainer.limit_val_batches=auto"]
    lora = [f"model.pretrained={base_checkpoints['gpt']}", "finetune=lora", "data.max_tokens=128"]  # probe: 4 rows
    # steps -> validation batches, the probe's (batches, rows)
    for steps, validation, probe in ((20, 1, (1, 2)), (30, 2, (1, 3)), (60, 3, (2, 4)), (1000, 4, (2, 4))):
        recipe = prepared(make_cfg(*summaries, *lora, "forgetting.block_size=32", f"trainer.max_steps={steps}"))
        caplog.clear()
        with caplog.at_level(logging.INFO):
            recipe.setup_trainer()
        assert recipe.trainer.limit_val_batches == validation
        assert (len(recipe.probe.batches), len(recipe.probe.batches[0]["input_ids"])) == probe
        assert f"the first {validation} batch" in caplog.text and "one per 20 training steps" in caplog.text
    recipe = prepared(make_cfg(*summaries, *lora, "forgetting.block_size=32", "forgetting.batches=3"))
    assert (len(recipe.probe.batches), len(recipe.probe.batches[0]["input_ids"])) == (3, 4)  # a number as it is
    scratch = prepared(make_cfg(*summaries, "trainer.max_steps=20"))
    scratch.setup_trainer()
    assert scratch.trainer.limit_val_batches == 1.0 and scratch.probe is None
    assert resolve_val_batches({"limit_val_batches": 0.25, "max_steps": 20}, imported=True) == 0.25
    with pytest.raises(ConfigError, match=r"trainer.limit_val_batches='all' must be auto"):
        check_val_batches("all")
    with pytest.raises(ConfigError, match=r"forgetting.batches=0 must be a positive number of batches or auto"):
        TrainingRecipe(make_cfg(*summaries, *lora, "forgetting.batches=0")).check()


def test_bad_validate_before_fit_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="validate_before_fit=-1 must be a number of validation batches"):
        TrainingRecipe(make_cfg("validate_before_fit=-1")).check()


def test_sft_samples_answer_held_out_prompts_in_the_task_format(make_cfg, tmp_path):
    cfg = make_cfg(*SUMMARIES, "trainer.max_steps=2", "validate_before_fit=1", "callbacks.sample.max_new_tokens=5")
    results = train(cfg)
    prompts = [s["prompt"] for s in results["samples"]]
    assert len(prompts) == 2 and all(p.endswith("\n# Summary:") for p in prompts)  # data.prompt_template's format
    written = (tmp_path / "run" / "samples.txt").read_text()
    for sample in results["samples"]:
        assert f"prompt ---\n{sample['prompt']}\n" in written and sample["text"] in written
    assert not any(p.startswith("The") for p in prompts)


def test_text_samples_still_continue_the(make_cfg):
    results = train(make_cfg("trainer.max_steps=2", "validate_before_fit=1", "callbacks.sample.max_new_tokens=5"))
    assert [s["prompt"] for s in results["samples"]] == ["The"]


def test_estimate_uses_the_rows_real_lengths(make_cfg):
    overrides = [*SUMMARIES, "model.block_size=2048", "data.batch_size=16", "estimate=true"]
    bounded = train(make_cfg(*overrides, "data.max_tokens=2048"))["estimate"]
    assert bounded["batch_size"] * bounded["seq_len"] <= 2048
    assert "of at most 2048 padded tokens (data.max_tokens)" in " ".join(bounded["notes"])
    rows_only = train(make_cfg(*overrides, "data.max_tokens=null"))["estimate"]
    assert rows_only["batch_size"] == 16 and rows_only["seq_len"] < 2048  # the longest rows, not the context


def test_estimate_counts_the_classification_head_the_data_sizes(make_cfg):
    """An estimate configures the objective from the data as a run does: a head of one output per class
    (data.max_labels=8); it stopped at "bind_labels must run before prepare_model")."""
    cfg = make_cfg("model=bert", "objective=classify", "data=stdlib_modules", "data.batch_size=7", "estimate=true")
    estimate = train(cfg)["estimate"]
    with torch.device("meta"):
        bare = count_parameters(instantiate_model(cfg.model, int(cfg.tokenizer.vocab_size)))["total"]
    assert estimate["parameters"]["total"] == bare + 8 * (cfg.model.n_embd + 1)
    assert estimate["batch_size"] == 7  # an epoch's last batch is short: its rows are not read past the end


@pytest.mark.slow  # about 50 s: three runs
def test_a_resumed_run_takes_the_token_batches_a_straight_run_takes(tmp_path, cache_dir):
    """Stopped at step 20 and resumed to 30, a run with token-bounded batches logs the straight run's losses: the
    sampler rebuilds the epoch's batches and skips the 20 it trained."""
    from .conftest import TINY, straight_and_resumed_losses

    args = [*TINY, *SUMMARIES, "data.max_tokens=512", "~callbacks.sample", "validate_before_fit=false",
            "scheduler=constant", "scheduler.warmup_steps=5", "trainer.val_check_interval=10",
            "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1"]  # fmt: skip
    straight, resumed = straight_and_resumed_losses(args, tmp_path, cache_dir)
    assert len(straight) == 30 and resumed == straight
