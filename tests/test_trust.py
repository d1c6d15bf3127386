"""Trust: no code runs from a checkpoint, HF folder or data file; a NaN never reaches a checkpoint; nothing is
lost on resume or bad input; every failure is one line. The malicious files are built here; a marker file
that their code would create must never appear."""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from lightning_llm.cli.main import main as cli_main
from lightning_llm.errors import ConfigError, TrainingDiverged
from lightning_llm.recipe import train

from .conftest import TINY, compose_config, run_cli

QUICK = [*TINY, "~callbacks.sample", "trainer.limit_val_batches=1", "validate_before_fit=false"]


class RunsCode:
    """Unpickling this calls os.system (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_files(tmp_path: Path) -> dict[str, Path]:
    marker = tmp_path / "marker"
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps({"state_dict": RunsCode(marker), "global_step": 1}))
    saved = tmp_path / "torch.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "model_config": {}, "x": RunsCode(marker)}, saved)
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(saved.read_bytes())
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(saved.read_bytes()[:200])
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(4096))
    return {"raw-pickle": raw, "torch-save": saved, "run-folder": folder, "truncated": truncated, "noise": noise}


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-save", "run-folder", "truncated", "noise"])
def test_a_hostile_or_broken_pretrained_checkpoint_is_refused_and_runs_nothing(tmp_path, cache_dir, kind):
    path = hostile_files(tmp_path)[kind]
    cfg = compose_config([*QUICK, f"model.pretrained={path}"], tmp_path / "out", cache_dir)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert "\n" not in str(err.value) and "cannot read" in str(err.value), str(err.value)
    assert not (tmp_path / "marker").exists(), "code in the checkpoint ran"
    assert not (tmp_path / "out").exists(), "nothing is written before the checks pass"


@pytest.mark.parametrize("kind", ["raw-pickle", "torch-save", "truncated", "noise"])
def test_a_hostile_or_broken_resume_checkpoint_is_refused(tmp_path, cache_dir, kind):
    path = hostile_files(tmp_path)[kind]
    cfg = compose_config([*QUICK, f"ckpt_path={path}"], tmp_path / "out", cache_dir)
    with pytest.raises(ConfigError, match="ckpt_path="):
        train(cfg)
    assert not (tmp_path / "marker").exists()
    # the same file as a run folder's last.ckpt, reached through resume=auto
    run = tmp_path / "resumed"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
    (run / "results.json").write_text('{"keep": true}')
    with pytest.raises(ConfigError, match=r"cannot read resume=auto \(.*last.ckpt\): |resume=auto .*is not a training"):
        train(compose_config([*QUICK, "resume=auto"], run, cache_dir))
    assert not (tmp_path / "marker").exists()
    assert (run / "results.json").read_text() == '{"keep": true}' and sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "results.json",
    ]


def test_a_data_only_checkpoint_cannot_call_a_target(tmp_path, cache_dir, base_checkpoints):
    """A weights_only-loadable checkpoint whose fine-tuning entry names builtins.open must not truncate a file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    checkpoint = torch.load(base_checkpoints["gpt"], weights_only=True)
    checkpoint["base_checkpoint"] = str(base_checkpoints["gpt"])
    checkpoint["finetune"] = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    hostile = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, hostile)
    cfg = compose_config([*QUICK, f"model.pretrained={hostile}", "finetune=lora"], tmp_path / "out", cache_dir)
    with pytest.raises(ConfigError, match="not a method description"):
        train(cfg)
    assert victim.read_text() == "precious"
    checkpoint["finetune"] = {"method": "lora", "settings": {"rank": 2, "_target_": "builtins.open"}}
    torch.save(checkpoint, hostile)
    with pytest.raises(ConfigError, match="has no setting '_target_'"):
        train(compose_config([*QUICK, f"model.pretrained={hostile}", "finetune=lora"], tmp_path / "o2", cache_dir))
    assert victim.read_text() == "precious"


def test_hugging_face_folders_never_run_their_code(tmp_path, cache_dir):
    marker = tmp_path / "marker"
    remote = tmp_path / "remote_code"
    remote.mkdir()
    (remote / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["EvilForCausalLM"],
                "model_type": "evil",
                "auto_map": {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"},
                "trust_remote_code": True,
            }
        )
    )
    (remote / "modeling_evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(ConfigError, match="architecture 'EvilForCausalLM' is not supported"):
        train(compose_config([*QUICK, f"model.pretrained={remote}"], tmp_path / "out", cache_dir))
    pickled = tmp_path / "pickled_weights"
    pickled.mkdir()
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 64, "n_positions": 32}
    (pickled / "config.json").write_text(json.dumps({**gpt2, "n_layer": 2, "n_head": 2, "n_embd": 64}))
    torch.save({"transformer.wte.weight": RunsCode(marker)}, pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="cannot read"):
        train(compose_config([*QUICK, f"model.pretrained={pickled}"], tmp_path / "out2", cache_dir))
    assert not marker.exists(), "code from a Hugging Face folder ran"


def _finite(checkpoint: dict) -> bool:
    """Weights and optimizer state hold no NaN or infinity."""
    states = [checkpoint["state_dict"], *[s["state"] for s in checkpoint.get("optimizer_states", [])]]
    tensors = [t for state in states for t in _tensors(state) if t.is_floating_point()]
    return bool(tensors) and all(torch.isfinite(t).all() for t in tensors)


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def test_divergence_never_reaches_a_checkpoint_and_resumes_with_a_lower_lr(tmp_path, cache_dir):
    run = tmp_path / "run"
    steps = ["trainer.val_check_interval=1", "trainer.log_every_n_steps=1"]
    train(compose_config([*QUICK, *steps, "trainer.max_steps=4"], run, cache_dir))
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4

    diverging = [*QUICK, *steps, "trainer.max_steps=8", "optimizer.lr=1e6", "trainer.gradient_clip_val=null"]
    with pytest.raises(TrainingDiverged) as err:
        train(compose_config([*diverging, "resume=auto"], run, cache_dir))
    assert f"the last good checkpoint is {last}" in str(err.value)
    assert torch.load(last, weights_only=True)["global_step"] == 4 and _finite(torch.load(last, weights_only=True))
    for path in (run / "checkpoints").glob("*.ckpt"):
        assert _finite(torch.load(path, weights_only=True)) and "nan" not in path.name, path
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "diverged" and "TrainingDiverged" in results["error"]

    resumed = train(
        compose_config([*QUICK, *steps, "trainer.max_steps=8", "optimizer.lr=1e-3", "resume=auto"], run, cache_dir)
    )
    assert resumed["status"] == "completed" and resumed["steps"] == 8
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    lrs = [float(r["lr-AdamW/pg1"]) for r in rows if r.get("lr-AdamW/pg1") and int(r["step"]) >= 4]
    assert lrs and max(lrs) <= 1e-3 * 1.0001, "the resumed run uses the configured learning rate"


def test_divergence_at_the_first_step_says_no_checkpoint_exists(tmp_path, cache_dir):
    cfg = compose_config(
        [*QUICK, "optimizer.lr=1e6", "trainer.gradient_clip_val=null", "trainer.val_check_interval=100"],
        tmp_path / "run",
        cache_dir,
    )
    with pytest.raises(TrainingDiverged, match="no checkpoint was written before it"):
        train(cfg)
    assert not list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))


def test_resume_keeps_the_whole_metrics_history(tmp_path, cache_dir):
    run = tmp_path / "run"
    args = [*QUICK, "trainer.val_check_interval=5", "trainer.log_every_n_steps=1"]
    train(compose_config([*args, "trainer.max_steps=10"], run, cache_dir))
    train(compose_config([*args, "trainer.max_steps=20", "resume=auto"], run, cache_dir))
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    train_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert train_steps == list(range(20)), train_steps  # the whole curve, no step twice
    assert len(list((run / "checkpoints").glob("step*.ckpt"))) == 1, "an old best is superseded"
    assert sorted(p.name for p in (run / "checkpoints").glob("last*.ckpt")) == ["last.ckpt"], "replaced in place"
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "resume-1" / "config.yaml").is_file()


def test_a_finished_run_folder_is_never_overwritten(tmp_path, cache_dir):
    run = tmp_path / "run"
    train(compose_config([*QUICK, "trainer.max_steps=3"], run, cache_dir))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run: continue it with resume=auto"):
        train(compose_config([*QUICK, "trainer.max_steps=3"], run, cache_dir))
    with pytest.raises(ConfigError, match="data.batch_size=0"):
        train(compose_config([*QUICK, "data.batch_size=0", "resume=auto"], run, cache_dir))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    (run / "notes.txt").write_text("mine")  # not a run's output: overwrite=true keeps it
    (run / "checkpoints" / "step000099-val_loss1.0000.ckpt").write_bytes(b"an old run's best")
    again = train(compose_config([*QUICK, "trainer.max_steps=2", "overwrite=true"], run, cache_dir))
    assert again["status"] == "completed" and (run / "notes.txt").read_text() == "mine"
    written = {Path(path).name for path in again["checkpoints"].values()}
    assert {p.name for p in (run / "checkpoints").iterdir()} == written and "last.ckpt" in written  # no old best
    assert not (run / ".hydra" / "resume-1").exists()  # the new run's config, not a resumed part
    assert (run / "train.log").read_text().count("`Trainer.fit` stopped") == 1  # the old run's log is gone


def test_every_run_that_trains_leaves_a_checkpoint(tmp_path, cache_dir, capsys):
    results = train(
        compose_config([*QUICK, "trainer.max_steps=5", "trainer.val_check_interval=100"], tmp_path / "r", cache_dir)
    )
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert results["checkpoints"]["last"] == str(last) and torch.load(last, weights_only=True)["global_step"] == 5
    (tmp_path / "empty_run").mkdir()
    assert cli_main(["export", str(tmp_path / "empty_run"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint=" in err and "without checkpoints/last.ckpt" in err and "model.pretrained" not in err


def test_stale_temporary_files_are_cleaned_and_a_full_disk_is_one_line(tmp_path, cache_dir, monkeypatch):
    run = tmp_path / "run"
    train(compose_config([*QUICK, "trainer.max_steps=2"], run, cache_dir))
    stale = run / "checkpoints" / ".last.ckpt.tmp424242"
    stale.write_bytes(b"x" * 1000)
    import lightning.fabric.plugins.io.torch_io as torch_io

    def disk_full(checkpoint, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", disk_full)
    with pytest.raises(ConfigError) as err:
        train(
            compose_config(
                [*QUICK, "trainer.max_steps=6", "trainer.val_check_interval=2", "resume=auto"], run, cache_dir
            )
        )
    message = str(err.value)
    assert "No space left on device" in message and "last.ckpt is kept" in message, message
    assert not stale.exists(), "a crashed write's temporary file is removed at start-up"
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp" in p.name], "a failed write leaves no temp file"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.integration
@pytest.mark.parametrize(
    "kind",  # each case is a process start: two run in make test, all four in test-full
    [
        "binary",
        pytest.param("latin-1", marks=pytest.mark.slow),
        pytest.param("bad-jsonl", marks=pytest.mark.slow),
        "truncated-ckpt",
    ],
)
def test_bad_input_is_the_first_and_only_line_on_stderr(tmp_path, cache_dir, kind):
    files = {
        "binary": ("corpus.txt", os.urandom(3000) + b"\x00\xff"),
        "latin-1": ("corpus.txt", "Caf\u00e9 cr\u00e8me, na\u00efve\n".encode("latin-1") * 50),
        "bad-jsonl": ("corpus.jsonl", b'{"text": "one"}\n{"text": "two"}\n{"text": broken}\n{"text": "four"}\n'),
    }
    if kind == "truncated-ckpt":
        (tmp_path / "t.ckpt").write_bytes(b"PK\x03\x04" + os.urandom(100))
        args, needle = ["ckpt_path=t.ckpt"], "ckpt_path='t.ckpt'"
    else:
        name, data = files[kind]
        (tmp_path / name).write_bytes(data)
        args = ["data=text", f"data.path={name}"]
        needle = {"binary": "is not UTF-8 text", "latin-1": "is not UTF-8 text (byte 0xe9", "bad-jsonl": "line 3 of"}[
            kind
        ]
    result = run_cli(*args, *QUICK, f"paths.cache_dir={cache_dir}", "hydra.run.dir=out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and needle in lines[0], result.stderr[-2000:]
    assert len([line for line in lines if line.startswith("error:")]) == 1 and "Traceback" not in result.stderr
