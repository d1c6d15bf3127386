"""A new user's first hour: no silent fallbacks, exit codes that tell the truth, logs a cluster user can read,
tidy folders, instant help."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_llm.errors import ConfigError, EvalIncomplete
from lightning_llm.recipe import TrainingRecipe, run_experiment, train

from .conftest import ROOT, TINY, compose_config, run_cli

QUICK = [*TINY, "~callbacks.sample", "trainer.limit_val_batches=1", "validate_before_fit=false"]


def test_prompt_tuning_runs_with_the_default_block_size(tmp_path, cache_dir, base_checkpoints, caplog):
    caplog.set_level(logging.INFO, logger="lightning_llm")
    results, module = run_experiment(
        compose_config(
            [*QUICK, f"model.pretrained={base_checkpoints['gpt']}", "finetune=prompt", "trainer.max_steps=3"],
            tmp_path,
            cache_dir,
        )
    )
    assert results["status"] == "completed" and module.model.prefix_length == 20
    assert "data.block_size 32 -> 12: the prefix (prompt tuning) takes 20 positions" in caplog.text


def test_more_cpu_processes_than_cores_is_said(make_cfg, caplog):
    caplog.set_level(logging.WARNING, logger="lightning_llm")
    cores = len(os.sched_getaffinity(0))
    TrainingRecipe(make_cfg("trainer=ddp", f"trainer.devices={cores + 1}", "trainer.accelerator=cpu")).check()
    assert f"trainer.devices={cores + 1} starts {cores + 1} processes on {cores} CPU cores" in caplog.text


def test_eval_tasks_that_cannot_run_make_the_run_partial(tmp_path, cache_dir):
    args = [*QUICK, "trainer.max_steps=2", "eval=commonsense", "eval.limit=2"]
    started = time.perf_counter()
    with pytest.raises(EvalIncomplete, match=r"5 of 5 eval tasks could not run .*eval.on_error=skip"):
        train(compose_config(args, tmp_path / "fail", cache_dir))
    assert time.perf_counter() - started < 60, "offline hub tasks fail at once, without retries"
    results = json.loads((tmp_path / "fail" / "results.json").read_text())
    assert results["status"] == "partial"
    assert {t["status"] for t in results["eval"]["tasks"].values()} == {"error"}
    assert "Hugging Face Hub is unreachable" in results["eval"]["tasks"]["arc_easy"]["reason"]
    skipped = train(compose_config([*args, "eval.on_error=skip"], tmp_path / "skip", cache_dir))
    assert skipped["status"] == "completed"


def test_an_unreachable_hub_is_detected_once_without_offline_switches(monkeypatch):
    from lightning_llm import hub

    for name in hub.OFFLINE_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    hub.hub_reachable.cache_clear()
    try:
        assert not hub.hub_available() and not hub.hub_available()
        assert len(calls) == 1, "probed once per process"
    finally:
        hub.hub_reachable.cache_clear()


@pytest.mark.integration
def test_sigterm_exits_143_with_status_interrupted_and_a_checkpoint(tmp_path, cache_dir):
    args = [*QUICK, f"paths.cache_dir={cache_dir}", "trainer.max_steps=100000", "trainer.val_check_interval=1000"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, "hydra.run.dir=run", "callbacks.text_progress.every_n_steps=5"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    for line in process.stdout:
        if line.startswith("step 10/") or time.time() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM at step"), stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "interrupted" and results["steps"] >= 10
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == results["steps"], "the interrupted steps are saved"


@pytest.mark.integration
def test_redirected_output_is_plain_progress_without_duplicates_or_colour(tmp_path, cache_dir):
    result = run_cli(
        *TINY,
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "callbacks.text_progress.every_n_steps=10",
        f"paths.cache_dir={cache_dir}",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "step 10/20 | loss " in out and "step 20/20 | loss " in out and "tokens/s | elapsed" in out
    assert "\x1b[" not in out + result.stderr, "no terminal control codes in a log"
    assert "Epoch 0/-2" not in out and "litlogger" not in out + result.stderr
    assert out.count("GPU available") == 1 and "INFO:" not in result.stderr, "each log line once"
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr[-2000:]
    log_file = (tmp_path / "run" / "train.log").read_text()
    assert "step 20/20 | loss" in log_file and "\x1b[" not in log_file


@pytest.mark.integration
def test_help_is_instant_and_describes_the_arguments():
    code = (
        "import sys, io, contextlib\n"
        "from lightning_llm.cli.main import main\n"
        "for verb in ('merge', 'export'):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try: main([verb, '--help'])\n"
        "        except SystemExit as e: assert e.code == 0\n"
        "    assert 'checkpoint' in out.getvalue() and 'usage' in out.getvalue(), out.getvalue()\n"
        "print('torch' in sys.modules)\n"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "--help must not import torch"
    assert time.perf_counter() - started < 5


@pytest.mark.integration
def test_failing_checks_leave_no_folder(tmp_path):
    result = run_cli("data.batch_size=0", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert not Path(tmp_path / "logs").exists()


def test_an_evaluation_only_run_loads_only_what_eval_needs(tmp_path, cache_dir, base_checkpoints, monkeypatch):
    from lightning_llm.data import TextDataModule

    built = []
    monkeypatch.setattr(TextDataModule, "prepare_data", lambda self: built.append(self) or None)
    args = [
        *QUICK,
        "train=false",
        f"model.pretrained={base_checkpoints['gpt']}",
        "eval=offline",
        "eval.limit=3",
        "~eval.tasks.memorization",
    ]
    results = train(compose_config(args, tmp_path / "eval", cache_dir))
    assert results["status"] == "completed" and "perplexity" in results["eval"]["tasks"]
    assert not built, "no datamodule: no task reads the training texts"
    assert "steps" not in results and "checkpoints" not in results
    assert not (tmp_path / "eval" / "checkpoints").exists()
    with pytest.raises(ConfigError, match="train=false evaluates a trained model"):
        train(compose_config([*QUICK, "train=false", "eval=offline"], tmp_path / "none", cache_dir))
