"""The starting point's held-out numbers are measured once (issue 34): a rerun or a sweep from the same imported
model, settings and rows reads the validation before fit and the forgetting probe's `before` from the cache, trains
exactly as a run that measured them, and measures again when anything they depend on changes."""

from __future__ import annotations

import csv

from lightning_llm.recipe import run_experiment

from .conftest import TINY, compose_config

SEED = "seed=4242"  # a seed no other test fine-tunes with: the first run below finds nothing cached


def test_a_rerun_reads_the_starting_points_numbers_and_trains_the_same(base_checkpoints, cache_dir, tmp_path):
    common = [
        *TINY, f"model.pretrained={base_checkpoints['gpt']}", "finetune=lora", "objective=sft",
        "data=stdlib_summaries", "data.max_examples=300", "trainer.max_steps=4", "trainer.val_check_interval=4",
        "forgetting.batches=1", "~callbacks.sample", SEED,
    ]  # fmt: skip

    def run(name: str, *overrides: str) -> dict:
        results, _ = run_experiment(compose_config([*common, *overrides], tmp_path / name, cache_dir))
        return results

    first = run("first")
    assert "start_point" not in first and first["val_start"] and "seconds" in first["forgetting"]["before"]
    again = run("again")
    assert set(again["start_point"]) == {"validation", "forgetting"}
    assert again["val_start"] == first["val_start"]
    assert again["forgetting"]["before"]["loss"] == first["forgetting"]["before"]["loss"]
    assert again["metrics"] == first["metrics"]  # the same random state after: the same training
    with open(tmp_path / "again" / "csv" / "metrics.csv") as f:
        step0 = [row for row in csv.DictReader(f) if row["step"] == "0" and row.get("val/loss")]
    assert step0 and float(step0[0]["val/loss"]) == first["val_start"]["val/loss"]  # the curve starts there
    other_rows = run("other-rows", "data.max_examples=200")  # the validation scores other rows: measured again
    assert set(other_rows.get("start_point", {})) == {"forgetting"}
    other_model = run("other-method", "finetune=adapter")  # another starting point
    assert "start_point" not in other_model
