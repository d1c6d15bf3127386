"""`resume=auto hydra.run.dir=<run>` continues the run with the run's own config (its non-default settings, the new
overrides on top, recorded), refuses group changes in one line, and a failed resume attempt leaves the run's
record as it was (issue 28, item 1)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_llm.cli.resume import resume_argv
from lightning_llm.errors import ConfigError

from .conftest import ROOT, TINY, run_cli

RECORD = ("results.json", "provenance.json", "report.md")
# a run whose settings differ from the defaults in model, data, tokenizer and callbacks
SETTINGS = [
    *TINY,
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    "~callbacks.sample",
]


def fingerprints(run: Path) -> dict[str, str]:
    return {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in RECORD}


def lightning_llm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m lightning_llm ARGS` (the installed `lightning-llm` runs the same function)."""
    return subprocess.run(
        [sys.executable, "-m", "lightning_llm", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def a_run(folder: Path, steps: int = 4) -> Path:
    """Hand-made run folder: its composed config and command line, as the recipe records them."""
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    (hydra / "config.yaml").write_text("seed: 1\n")
    OmegaConf.save(
        OmegaConf.create(["data=pydoc_topics", "~callbacks.sample", f"trainer.max_steps={steps}"]),
        hydra / "overrides.yaml",
    )
    (folder / "results.json").write_text(json.dumps({"choices": {"model": "gpt", "data": "pydoc_topics"}}))
    return folder


@pytest.mark.integration
def test_resume_continues_the_runs_own_config_and_a_failed_attempt_keeps_its_record(tmp_path, cache_dir):
    run = tmp_path / "run"
    first = run_cli(
        *SETTINGS, "trainer.max_steps=4", f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr[-3000:]

    # only what the user typed: the run's own settings (2 layers, pydoc_topics, vocab 512) carry on
    resumed = lightning_llm("train", "resume=auto", f"hydra.run.dir={run}", "trainer.max_steps=8", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == 8, results
    assert results["model"]["config"]["n_layer"] == 2 and results["tokenizer"]["source"]
    assert results["choices"]["data"] == "pydoc_topics" and results["choices"]["model"] == "gpt"
    assert results["overrides"] == ["resume=auto", "trainer.max_steps=8"]
    part = run / ".hydra" / "resume-1"
    assert OmegaConf.to_container(OmegaConf.load(part / "overrides.yaml")) == results["overrides"]
    assert OmegaConf.load(part / "config.yaml").model.n_layer == 2

    # a resume that cannot continue (the architecture changed) fails and leaves the record as it was
    before = fingerprints(run)
    failed = run_cli("resume=auto", f"hydra.run.dir={run}", "trainer.max_steps=12", "model.n_layer=3", cwd=tmp_path)
    assert failed.returncode != 0
    assert fingerprints(run) == before
    assert not (run / ".hydra" / "resume-2").exists()

    # a corrupt checkpoint and another group option are refused in one line, before anything is written
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # cut short
    for words, needle in {
        ("trainer.max_steps=12",): "cannot read resume=auto",
        ("model=bert",): "whose groups cannot change",
    }.items():
        refused = run_cli("resume=auto", f"hydra.run.dir={run}", *words, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.startswith("error: ") and needle in refused.stderr, (
            refused.stderr[-2000:]
        )
        assert fingerprints(run) == before and not (run / ".hydra" / "resume-2").exists()


def test_the_run_config_is_composed_with_the_new_overrides(tmp_path):
    run = a_run(tmp_path / "run")
    argv = ["resume=auto", f"hydra.run.dir={run}", "data=pydoc_topics", "~callbacks.sample", "+foo=1", "seed=2"]
    assert resume_argv(argv) == [
        "--config-path",
        str(run / ".hydra"),
        "--config-name",
        "config",
        "+hydra.runtime.choices.data=pydoc_topics",
        "+hydra.runtime.choices.model=gpt",
        "resume=auto",
        f"hydra.run.dir={run}",
        "++foo=1",  # the run's config may hold it already
        "seed=2",
    ], "a repeated command line drops what the run's config already holds"
    (run / ".hydra" / "resume-1").mkdir()
    (run / ".hydra" / "resume-1" / "config.yaml").write_text("seed: 2\n")
    assert resume_argv(["resume=auto", f"hydra.run.dir={run}"])[1] == str(run / ".hydra" / "resume-1")


def test_what_is_not_a_resume_of_a_run_is_composed_as_written(tmp_path):
    run = a_run(tmp_path / "run")
    for argv in (
        ["model.n_layer=2"],
        ["resume=auto", f"hydra.run.dir={tmp_path / 'new'}"],  # a first start: no run config yet
        ["-m", "resume=auto", "seed=1,2"],  # a sweep's jobs: each command line is its config
        ["--config-path", str(run / ".hydra"), "--config-name", "config", "resume=auto", f"hydra.run.dir={run}"],
    ):
        assert resume_argv(argv) == argv


def test_resume_mistakes_are_one_line(tmp_path):
    run = a_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"resume=auto continues a run folder: name it with hydra.run.dir=<run>"):
        resume_argv(["resume=auto", "trainer.max_steps=8"])
    with pytest.raises(
        ConfigError, match=r"model=bert: .* own config \(model=gpt\), whose groups cannot change: override keys"
    ):
        resume_argv(["resume=auto", f"hydra.run.dir={run}", "model=bert"])
    with pytest.raises(ConfigError, match=r"objective=mlm: resume=auto continues .* with its own config, whose groups"):
        resume_argv(["resume=auto", f"hydra.run.dir={run}", "objective=mlm"])
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "resume=auto"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.startswith("error: resume=auto continues a run folder")
    assert not (tmp_path / "logs").exists()
