"""What a user watches: progress lines by steps or by time, validation progress, one line per validation (in a
terminal above the live bar, in logs and train.log alike); where things land: runs under the working directory,
one cache per user."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from rich.console import Console

from lightning_llm.conf import where_things_go
from lightning_llm.training import callbacks
from lightning_llm.training.callbacks import TextProgress, ValidationSummary

from .conftest import CONFIG_DIR, ROOT, TINY, run_cli


class Clock:
    """A stand-in for time.perf_counter that the test moves on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trainer(**kw: object) -> SimpleNamespace:
    defaults = dict(global_step=0, max_steps=100, callback_metrics={}, sanity_checking=False, num_val_batches=[4])
    return SimpleNamespace(**{**defaults, "is_global_zero": True, "progress_bar_callback": None, **kw})


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("lightning_llm")]
    caplog.clear()
    return lines


def test_progress_lines_come_every_n_steps_or_seconds_whichever_first(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    caplog.set_level(logging.INFO, logger="lightning_llm")
    progress = TextProgress(every_n_steps=10, every_n_seconds=30, only_without_terminal=False)
    trainer, module = _trainer(accumulate_grad_batches=2), SimpleNamespace(tokens_seen=0)
    progress.on_train_start(trainer, module)

    def step(n: int, at: float) -> list[str]:
        clock.now, trainer.global_step, module.tokens_seen = at, n, n * 1000
        progress.on_train_batch_end(trainer, module, {"loss": torch.tensor(2.5)}, None, 0)  # divided by 2 micro-batches
        return _lines(caplog)

    fast = [line for n in range(1, 26) for line in step(n, float(n))]  # one step a second: by steps
    assert [line.split(" | ")[0] for line in fast] == ["step 10/100", "step 20/100"]
    assert fast[0] == "step 10/100 | loss 5.0000 | 1,000 tokens/s | elapsed 0:00:10 | ETA 0:01:30"
    assert step(26, 100.0)[0].startswith("step 26/100"), "80 s since the last line: by time"
    assert step(26, 140.0) == [], "another micro-batch of the same step writes no second line"
    assert step(27, 120.0) == [] and step(28, 131.0)[0].startswith("step 28/100")

    clock.now = 200.0
    progress.on_validation_start(trainer, module)
    validation = []
    for batch, at in enumerate((210.0, 215.0, 240.5, 250.0)):
        clock.now = at
        progress.on_validation_batch_end(trainer, module, None, None, batch)
        validation += _lines(caplog)
    assert validation == [
        "validation at step 28 | batch 1/4 | elapsed 0:00:10",
        "validation at step 28 | batch 3/4 | elapsed 0:00:40",
    ]


METRICS = {
    "train/loss": torch.tensor(5.0),
    "val/web/loss": torch.tensor(4.25),
    "val/perplexity": torch.tensor(90.0171),
    "val/loss": torch.tensor(4.5),
    "val/accuracy": torch.tensor(0.25),
}
LINE = "validation at step 100 | val/loss 4.5000 | val/accuracy 0.2500 | val/perplexity 90.0171 | val/web/loss 4.2500"


def test_one_line_per_validation_with_the_objective_metrics(caplog):
    caplog.set_level(logging.INFO, logger="lightning_llm")
    summary = ValidationSummary()
    summary.on_validation_end(_trainer(global_step=100, callback_metrics=METRICS), None)
    assert _lines(caplog) == [LINE]
    summary.on_validation_end(_trainer(callback_metrics=METRICS, sanity_checking=True), None)
    assert _lines(caplog) == [], "Lightning's sanity check is not a validation of the model"
    summary.on_validation_start(_trainer(global_step=100), None)
    time.sleep(0.25)
    summary.on_validation_end(_trainer(global_step=100, callback_metrics=METRICS), None)
    (line,) = _lines(caplog)
    assert line.startswith(LINE + " | ") and 0.2 <= float(line.removeprefix(LINE + " | ").removesuffix(" s")) < 5


def test_under_a_live_bar_the_line_goes_above_it_and_into_train_log(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="lightning_llm")
    screen = io.StringIO()
    live = SimpleNamespace(live=SimpleNamespace(is_started=True), console=Console(file=screen, width=200))
    train_log = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(train_log)
    try:
        trainer = _trainer(
            global_step=100, callback_metrics=METRICS, progress_bar_callback=SimpleNamespace(progress=live)
        )
        ValidationSummary().on_validation_end(trainer, None)
    finally:
        logging.getLogger().removeHandler(train_log)
        train_log.close()
    assert screen.getvalue() == LINE + "\n", "printed through rich, above the bar (a log line would be drawn over)"
    assert (tmp_path / "train.log").read_text() == LINE + "\n"
    assert _lines(caplog) == [], "not again through the console handlers"


@pytest.mark.integration
def test_a_run_in_a_log_file_shows_validation_and_progress_by_time(tmp_path, cache_dir):
    result = run_cli(
        *TINY,
        "~callbacks.sample",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2",
        "callbacks.text_progress.every_n_steps=1000",
        "callbacks.text_progress.every_n_seconds=0",  # every step and every validation batch: by time only
        f"paths.cache_dir={cache_dir}",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log_file = (tmp_path / "run" / "train.log").read_text()
    for out in (result.stdout, log_file):
        for step in (0, 10, 20):
            assert f"validation at step {step} | val/loss " in out and "| val/perplexity " in out
        assert "step 7/20 | loss " in out and "validation at step 10 | batch 2/2 | elapsed" in out


def _paths() -> tuple[str, str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        paths = compose("train").paths
    return paths.log_dir, paths.cache_dir


def test_the_cache_is_one_per_user_and_runs_go_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("LIGHTNING_LLM_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _paths() == ("logs", str(tmp_path / "home" / ".cache" / "lightning-llm"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _paths()[1] == str(tmp_path / "xdg" / "lightning-llm")
    monkeypatch.setenv("LIGHTNING_LLM_CACHE", str(tmp_path / "mine"))
    assert _paths()[1] == str(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    line = where_things_go("logs/runs/first", "~/.cache/lightning-llm")
    assert line.startswith(f"run folder: {tmp_path / 'logs' / 'runs' / 'first'} | cache: {tmp_path / 'home'}/.cache/")
    assert "LIGHTNING_LLM_CACHE=<folder> moves it" in line


@pytest.mark.integration
def test_runs_from_two_directories_share_one_tokenizer(tmp_path):
    """The cache was .cache/ under the working directory: a run from elsewhere trained the tokenizer again."""
    env = {k: v for k, v in os.environ.items() if k not in ("LIGHTNING_LLM_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path / "home")
    models = []
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        args = [*TINY, "~callbacks.sample", "debug=fdr", "hydra.run.dir=run"]
        run = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=tmp_path / where,
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert not (tmp_path / where / ".cache").exists()
        models.append(
            {p: p.stat().st_mtime_ns for p in (tmp_path / "home").glob(".cache/lightning-llm/tokenizers/*/*")}
        )
    assert models[0] and models[1] == models[0], "the second run found the first one's tokenizer"
