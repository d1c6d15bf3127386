"""A resumed run's numbers are the uninterrupted run's, one run per folder at a time, and a failed start does
not block the next (issues 27 and 28)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from filelock import FileLock

from lightning_llm.errors import ConfigError, RunInterrupted, TrainingDiverged
from lightning_llm.recipe import train
from lightning_llm.recipe.outputs import LOCK_FILE

from .conftest import ROOT, TINY, compose_config

LOGGED = ["trainer.log_every_n_steps=5", "trainer.val_check_interval=10", "trainer.limit_val_batches=1"]


class InterruptAt(pl.Callback):
    """Ctrl-C at the end of step `step`'s batch (where a progress line is printed: the moment a user presses it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def rows(run: Path, column: str) -> dict[int, str]:
    found: dict[int, str] = {}
    for row in csv.DictReader((run / "csv" / "metrics.csv").open()):
        if row.get(column):
            assert int(row["step"]) not in found, f"{column} logged twice at step {row['step']}"
            found[int(row["step"])] = row[column]
    return found


def test_a_run_resumed_after_ctrl_c_logs_the_uninterrupted_curve(tmp_path, cache_dir):
    """Lightning restores its logging step one ahead from a checkpoint written mid-batch: the resumed rows were
    labelled one log interval late and the final validation landed at max_steps + 1."""
    args = [*TINY, *LOGGED, "trainer.max_steps=30", "~callbacks.sample"]
    straight = train(compose_config(args, tmp_path / "straight", cache_dir))
    stop = [f"+callbacks.interrupt._target_={__name__}.InterruptAt", "+callbacks.interrupt.step=13"]
    with pytest.raises(RunInterrupted):
        train(compose_config([*args, *stop], tmp_path / "resumed", cache_dir))
    resumed = train(compose_config([*args, "resume=auto"], tmp_path / "resumed", cache_dir))
    for column in ("train/loss", "val/loss"):
        assert rows(tmp_path / "resumed", column) == rows(tmp_path / "straight", column)
    assert max(rows(tmp_path / "resumed", "val/loss")) < 30  # never past max_steps (it was at 31)
    assert resumed["val_start"] == straight["val_start"]  # the run's record keeps its first part's numbers
    assert resumed["resumed"]["from_step"] == 13 and resumed["resumed"]["earlier"]["steps"] == 13
    assert resumed["tokens"] == straight["tokens"]
    # this part's tokens over this part's time (it divided the whole run's tokens by this part's time: 1000x)
    assert resumed["tokens_per_s"] < 10 * straight["tokens_per_s"]


def test_resuming_a_finished_run_is_refused_and_rewrites_nothing(tmp_path, cache_dir):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=6", "~callbacks.sample"]
    train(compose_config(args, run, cache_dir))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"at step 6, and trainer.max_steps=6 leaves nothing to train"):
        train(compose_config([*args, "resume=auto"], run, cache_dir))
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.is_file()}
    assert after == before


def test_one_run_per_folder_at_a_time(tmp_path, cache_dir):
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=4", "~callbacks.sample"]
    train(compose_config(args, run, cache_dir))
    record = (run / "results.json").read_bytes()
    with FileLock(str(run / LOCK_FILE)), pytest.raises(ConfigError, match="is in use by another run"):
        train(compose_config([*args, "trainer.max_steps=8", "resume=auto"], run, cache_dir))
    assert (run / "results.json").read_bytes() == record
    assert train(compose_config([*args, "trainer.max_steps=8", "resume=auto"], run, cache_dir))["steps"] == 8


def test_a_failed_start_does_not_block_the_next_start(tmp_path, cache_dir):
    """A check that can only run once the folder exists (the data file's bytes) fails the start; the next start in
    that folder, fixed, runs (with or without resume=auto) instead of being refused as 'already holds a run'."""
    corpus, run = tmp_path / "corpus.txt", tmp_path / "run"
    corpus.write_bytes(b"caf\xe9 latin-1, not UTF-8\n" * 50)
    args = [*TINY, "data=text", f"data.path={corpus}", "data.sample_by=paragraph", "trainer.max_steps=3"]
    with pytest.raises(ConfigError, match="UTF-8"):
        train(compose_config(args, run, cache_dir))
    assert json.loads((run / "results.json").read_text())["status"] == "failed"
    corpus.write_text("".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(400)))
    assert train(compose_config(args, run, cache_dir))["status"] == "completed"
    with pytest.raises(ConfigError, match="already holds a run: continue it with resume=auto"):
        train(compose_config(args, run, cache_dir))


def test_a_diverged_run_without_checkpoint_is_told_what_works(tmp_path, cache_dir):
    run = tmp_path / "run"
    settings = [*TINY, "trainer.max_steps=20", "validate_before_fit=false", "~callbacks.sample"]
    args = [*settings, "optimizer.lr=1e6"]
    with pytest.raises(TrainingDiverged, match=r"no checkpoint was written before it; start again \(overwrite=true\)"):
        train(compose_config(args, run, cache_dir))
    with pytest.raises(ConfigError, match="it has no checkpoint to resume; choose another hydra.run.dir, or replace"):
        train(compose_config(args, run, cache_dir))
    assert train(compose_config([*settings, "trainer.max_steps=2", "overwrite=true"], run, cache_dir))["steps"] == 2


@pytest.mark.slow
@pytest.mark.integration
def test_two_resumes_started_at_once_never_both_run(tmp_path, cache_dir):
    """Started together five times: each time one continues the run and the other is refused in one line."""
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=4", "~callbacks.sample", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}"]
    train(compose_config(args[:-2], run, cache_dir))
    for attempt in range(5):
        more = [*args, f"trainer.max_steps={8 + 4 * attempt}", "resume=auto"]
        both = [
            subprocess.Popen([sys.executable, str(ROOT / "train.py"), *more], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]  # fmt: skip
        ended = [(p.wait(timeout=300), p.stderr.read()) for p in both]
        codes = sorted(code for code, _ in ended)
        assert codes == [0, 2], ended
        refused = next(err for code, err in ended if code == 2)
        assert "is in use by another run" in refused and len(refused.strip().splitlines()) == 1
        steps = [int(r["step"]) for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("train/loss")]
        assert len(steps) == len(set(steps))
