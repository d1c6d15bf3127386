"""Every command the README shows runs as written (shrunk to a few steps of a tiny model), in a fresh folder.

Commands are read from the README itself: lines starting with `python train.py` or `python -m lightning_llm`
in code blocks and table cells. Placeholders (`<run>`, `<ckpt>`, ...) become the outputs of the commands before
them; `$ python train.py ...` lines are the documented mistakes and must fail with one line and exit code 2.
Commands for hardware or services this machine lacks (GPUs, TPUs, SLURM, the hub) are listed and skipped.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from .conftest import ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.integration]

NEEDS_ELSEWHERE = (
    "trainer=gpu",
    "gpt2_small",
    "deepspeed",
    "xla",
    "launcher=slurm",
    "torchrun",
    "devices=8",
    "eval=mmlu",
    "eval=standard",
    "train=false",
)
SHRINK = [
    "debug=limit",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=32",
    "data.batch_size=8",
    "tokenizer.vocab_size=512",
    "trainer.limit_val_batches=2",
    "~callbacks.sample",
    "eval.limit=4",
    "forgetting.batches=2",
]


def as_python(command: str) -> str:
    """`lightning-llm train ...` as `python train.py ...`, `lightning-llm <verb> ...` as `python -m lightning_llm
    <verb> ...` (the installed command runs the same functions)."""
    if command.startswith("lightning-llm train "):
        return "python train.py " + command.removeprefix("lightning-llm train ")
    if command.startswith("lightning-llm"):
        return command.replace("lightning-llm", "python -m lightning_llm", 1)
    return command


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        pattern = r"(\$ )?((?:python (?:train\.py|-m lightning_llm)|lightning-llm (?=[a-z]+ ))[^`|#\n]*)"
        for match in re.finditer(pattern, line):
            command = " ".join(re.sub(r"\[--[^\]]*\]", "", match.group(2)).split())  # [--optional] flags dropped
            found.append(("$ " if match.group(1) else "") + as_python(command))
    return list(dict.fromkeys(found))


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert len(commands) > 20 and any(c.startswith("$ ") for c in commands)


def test_every_readme_command_runs(tmp_path, cache_dir):
    places = {
        "<run>": "logs/runs/base",
        "<ckpt>": "logs/runs/base/checkpoints/last.ckpt",
        "<run or ckpt>": "logs/runs/lora",
        "<out.ckpt>": "logs/merged.ckpt",
    }
    base = run_cli("hydra.run.dir=logs/runs/base", *SHRINK, f"paths.cache_dir={cache_dir}", cwd=tmp_path)
    assert base.returncode == 0, base.stderr[-2000:]
    lora = run_cli(
        "hydra.run.dir=logs/runs/lora",
        "model.pretrained=logs/runs/base",
        "finetune=lora",
        *SHRINK,
        f"paths.cache_dir={cache_dir}",
        cwd=tmp_path,
    )
    assert lora.returncode == 0, lora.stderr[-2000:]
    from pydoc_data.topics import topics

    with (tmp_path / "corpus.jsonl").open("w") as f:  # the README's own-corpus example reads this file
        for text in list(topics.values())[:150]:
            f.write(json.dumps({"body": text}) + "\n")
    (tmp_path / "prompts.txt").write_text("The for statement\nA class\n")  # the README's batch generation reads it
    failures, skipped = [], []
    for n, command in enumerate(readme_commands()):
        expect_error = command.startswith("$ ")
        command = command.removeprefix("$ ")
        for placeholder, value in places.items():
            command = command.replace(f"logs/runs/{placeholder}", value).replace(placeholder, value)
        if any(marker in command for marker in NEEDS_ELSEWHERE) or "<" in command or "..." in command:
            skipped.append(command)
            continue
        words = shlex.split(command)
        if words[1] == "train.py":
            args = [w for w in words[2:] if not w.startswith("hydra.run.dir=")]
            if "logs/runs/base" in command and "model.pretrained" not in command and "resume" not in command:
                args = [*args, "overwrite=true"]
            extra = [] if expect_error or "--config-path" in command else list(SHRINK)
            if "optuna" in command:
                extra.append("hydra.sweeper.n_trials=2")
            if "eval=offline" in command:  # the tiny model's context is 32 tokens
                extra += ["eval.tasks.memorization.prefix_tokens=8", "eval.tasks.memorization.suffix_tokens=8"]
            named = [w for w in words[2:] if w.startswith("hydra.run.dir=") and "logs/runs/base" not in w]
            run_dir = named[0] if named else f"hydra.run.dir=logs/runs/r{n}"  # later commands read a named folder
            run_dir = "hydra.sweep.dir=logs/sweep" + str(n) if "-m" in args else run_dir
            result = run_cli(*args, *extra, run_dir, f"paths.cache_dir={cache_dir}", cwd=tmp_path)
        else:
            import subprocess
            import sys

            result = subprocess.run(
                [sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
        ok = (
            (result.returncode == 2 and result.stderr.startswith("error: ")) if expect_error else result.returncode == 0
        )
        if not ok:
            failures.append(f"{command}: rc={result.returncode} {result.stderr.strip().splitlines()[-1:]}")
    assert not failures, "\n".join(failures)
    print(f"ran {len(readme_commands()) - len(skipped)} README commands; skipped (need other hardware): {skipped}")
