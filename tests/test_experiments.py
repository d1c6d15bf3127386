"""Experiments that survive: sweeps, failed trials, Optuna persistence, provenance, kill -9 and resume, NaN guard."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from lightning_llm.errors import TrainingDiverged
from lightning_llm.objectives import CausalLM
from lightning_llm.recipe import train

from .conftest import ROOT, TINY, compose_config, run_cli

pytestmark = pytest.mark.integration

QUICK = [*TINY, "~callbacks.sample", "trainer.limit_val_batches=1"]


def _cached(cache_dir) -> list[str]:
    return [f"paths.cache_dir={cache_dir}"]


def test_grid_multirun_with_summary(tmp_path, cache_dir):
    result = run_cli(
        "-m",
        *QUICK,
        *_cached(cache_dir),
        "model.n_layer=1,2",
        "optimizer.lr=1e-3,2e-3",
        "debug=fdr",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "sweep" / "summary.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    grid = {
        tuple(
            o
            for o in r["overrides"].split()
            if o.startswith(("model.n_layer=1", "model.n_layer=2", "optimizer.lr=0.00"))
        )
        for r in rows
    }
    assert len(grid) == 4
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 4, "one output folder per job, no extras"


@pytest.mark.slow  # about 11 s; the grid sweep above runs in make test
def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, cache_dir):
    result = run_cli(
        "-m", *QUICK, *_cached(cache_dir), "model.n_embd=64,63", "debug=fdr", "hydra.sweep.dir=sweep", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {
        [o for o in r["overrides"].split() if o.startswith("model.n_embd=")][-1]: r
        for r in csv.DictReader((tmp_path / "sweep" / "summary.csv").open())
    }
    assert rows["model.n_embd=64"]["status"] == "completed"
    failed = rows["model.n_embd=63"]
    assert failed["status"] == "failed" and "not divisible by model.n_head" in failed["error"]
    assert "1 failed" in result.stdout


@pytest.mark.slow  # about 22 s: two Optuna sweeps in subprocesses
def test_optuna_sweep_persists_and_continues(tmp_path, cache_dir):
    args = [
        "hparams_search=optuna",
        *QUICK,
        *_cached(cache_dir),
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "hydra.sweeper.params={optimizer.lr:'interval(1e-4, 1e-2)'}",
        "paths.log_dir=logs",
        "hydra.sweep.dir=sweep",
    ]
    first = run_cli(*args, "hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(list((tmp_path / "sweep").glob("*/results.json"))) == 3
    second = run_cli(*args, "hydra.sweeper.n_trials=1", "hydra.sweep.dir=sweep2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    import optuna

    name = yaml.safe_load((tmp_path / "sweep2" / "multirun.yaml").read_text())["hydra"]["sweeper"]["study_name"]
    assert name == yaml.safe_load((tmp_path / "sweep" / "multirun.yaml").read_text())["hydra"]["sweeper"]["study_name"]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'logs' / 'optuna.db'}")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4, "the study continued"


def test_provenance_and_rerun(tmp_path, cache_dir):
    run = tmp_path / "run"
    result = run_cli(
        *QUICK,
        *_cached(cache_dir),
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={run}",
        "seed=7",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["seed"] == 7 and "seed=7" in prov["overrides"]
    assert len(prov["git"]["commit"] or "x" * 40) == 40 and prov["packages"]["torch"].startswith("2.")
    assert prov["hardware"]["cpus_available"] >= 1
    assert (run / ".hydra" / "config.yaml").exists() and (run / ".hydra" / "overrides.yaml").exists()
    again = run_cli(*prov["rerun"].split()[2:], cwd=tmp_path)  # the documented command, as printed
    assert again.returncode == 0, again.stderr[-3000:]
    (rerun,) = [p.parent for p in (tmp_path / "logs" / "runs").glob("*/results.json")]  # under logs/, as documented
    assert not (tmp_path / "outputs").exists()
    original, repeated = (yaml.safe_load((d / ".hydra" / "config.yaml").read_text()) for d in (run, rerun))
    assert repeated == original
    assert json.loads((rerun / "results.json").read_text())["metrics"]["train/loss"] == pytest.approx(
        json.loads((run / "results.json").read_text())["metrics"]["train/loss"], abs=1e-6
    )


def _losses(run) -> dict[int, float]:
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


@pytest.mark.slow  # about 35 s; in-process resume is exact in tests/test_train.py and tests/test_shards.py
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path, cache_dir):
    args = [
        *QUICK,
        *_cached(cache_dir),
        "trainer.max_steps=300",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
        "validate_before_fit=false",
    ]
    reference = run_cli(*args, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    killed_after = 0
    while time.time() < deadline and process.poll() is None:
        if last.exists():
            killed_after = torch.load(last, weights_only=True)["global_step"]
            if killed_after >= 100:
                process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run was killed mid-way"
    assert 100 <= killed_after < 300
    torch.load(last, weights_only=True)  # the checkpoint on disk is whole

    resumed = run_cli(*args, f"hydra.run.dir={run}", "resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "results.json").read_text())["steps"] == 300
    expected, got = _losses(tmp_path / "reference"), _losses(run)
    resumed_steps = [s for s in got if s >= killed_after]
    assert len(resumed_steps) >= 150
    assert [got[s] for s in resumed_steps] == [expected[s] for s in resumed_steps], "bit-exact on CPU"
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    logged = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert logged == list(range(300)), "the resumed run's metrics.csv holds the whole curve, each step once"


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir, monkeypatch):
    original = CausalLM.forward

    def poisoned(self, model, batch):
        out = original(self, model, batch)
        if model.training and poisoned.calls >= 7:
            out.loss = out.loss * float("nan")
        poisoned.calls += model.training
        return out

    poisoned.calls = 0
    monkeypatch.setattr(CausalLM, "forward", poisoned)
    cfg = compose_config([*QUICK, "trainer.val_check_interval=5", "validate_before_fit=false"], tmp_path, cache_dir)
    with pytest.raises(TrainingDiverged, match="train/loss is nan at step 7"):
        train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_last_checkpoint_links_the_checkpoint_written_at_its_step(tmp_path, cache_dir):
    """At a validation where the best-checkpoint callback wrote this step's checkpoint, last.ckpt is a hard link to
    it (the same bytes, written once: a big model's validation wrote them twice); a weights-only best checkpoint
    cannot serve as last.ckpt (no optimizer state to resume from), so last.ckpt is then written in full."""
    every = ["trainer.max_steps=4", "trainer.val_check_interval=2", "validate_before_fit=false"]
    cfg = compose_config([*QUICK, *every, "callbacks.model_checkpoint.save_top_k=-1"], tmp_path / "a", cache_dir)
    train(cfg)
    folder = tmp_path / "a" / "checkpoints"
    (at_4,) = folder.glob("step000004-*.ckpt")
    (at_2,) = folder.glob("step000002-*.ckpt")
    last = folder / "last.ckpt"
    assert last.stat().st_ino == at_4.stat().st_ino != at_2.stat().st_ino and last.stat().st_nlink == 2
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 4 and checkpoint["optimizer_states"]
    at_2.unlink()  # the best-checkpoint callback removing an older one leaves last.ckpt whole
    assert torch.load(last, weights_only=True)["global_step"] == 4

    weights_only = ["callbacks.model_checkpoint.save_top_k=-1", "+callbacks.model_checkpoint.save_weights_only=true"]
    train(compose_config([*QUICK, *every, *weights_only], tmp_path / "b", cache_dir))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert last.stat().st_nlink == 1 and torch.load(last, weights_only=True)["optimizer_states"]
