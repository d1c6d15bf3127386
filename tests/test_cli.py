"""What only the process boundary shows: multirun over seeds, W&B offline without a key."""

from __future__ import annotations

import json

import pytest

from lightning_llm.training.loggers import wandb_logger, wandb_online

from .conftest import TINY, run_cli

pytestmark = pytest.mark.integration

QUICK = [
    *TINY,
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "~callbacks.sample",
]


@pytest.mark.slow  # multirun itself: test_experiments.py::test_grid_multirun_with_summary
def test_multirun_over_seeds(tmp_path, cache_dir):
    result = run_cli("-m", "seed=1,2", *QUICK, f"paths.cache_dir={cache_dir}", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads((tmp_path / "sweep" / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert [r["seed"] for r in runs] == [1, 2]
    assert runs[0]["metrics"]["train/loss"] != runs[1]["metrics"]["train/loss"]
    assert "outputs:" in result.stdout


def test_wandb_goes_offline_without_a_key(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_online()
    assert wandb_logger(save_dir=str(tmp_path))._offline
    env = {"HOME": str(tmp_path), "WANDB_MODE": "", "WANDB_API_KEY": ""}
    result = run_cli(*QUICK, "logger=wandb", f"paths.cache_dir={cache_dir}", "hydra.run.dir=run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    offline_runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert offline_runs, "W&B wrote an offline run"
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
