"""What a run spends outside its training steps (`python -m bench.run_costs`).

1. The forgetting probe's share of a short LoRA run. A base model with a long context (Llama-style nano model,
   `model.block_size` 8192, as a real small Llama) is pretrained for a few steps; then LoRA fine-tunes it for
   `--steps` steps at `data.block_size` 128 with the probe on (its default: 10 batches at the run's block size,
   before and after). The same run with `forgetting.block_size=8192` repeats what the version before the fix
   did (it scored at the model's full context). Reported: the probe's seconds (before + after, from
   results.json) and their share of the whole process.
2. An evaluation-only run: perplexity (20 documents) of the base, with `data=text` naming a generated
   `--corpus-mb` training corpus, as a user who evaluates with their training config does. This version
   against `--previous` (a git revision, checked out into a temporary worktree and run with this environment),
   which tokenized the training corpus and ran a validation pass first. Each version makes its own base.

Every command runs as its own process, the two versions alternating, `--rounds` times; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import git_checkout

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = "526c2a3^"  # the last version whose train=false built the datamodule and validated first
CONTEXT = 8192
BASE = [
    "model=llama-nano",
    f"model.block_size={CONTEXT}",
    "data.block_size=128",
    "data.batch_size=8",
    "trainer.val_check_interval=1000",
    "trainer.limit_val_batches=5",
]
NOW_ONLY = ["callbacks.compute.track_energy=false"]  # the previous version has no compute monitor
EVAL_ONLY = ["train=false", "eval=none", "+eval/tasks@eval.tasks.perplexity=perplexity", "eval.limit=20"]


def write_corpus(path: Path, megabytes: float) -> Path:
    """About `megabytes` of text: the pydoc topics over and over, each copy numbered (no two documents equal)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    with path.open("w") as f:
        for copy in range(max(1, round(megabytes * 1e6 / len(text)))):
            f.write(f"copy {copy}\n{text}\n\n")
    return path


def run(checkout: Path, overrides: list[str], out: Path) -> tuple[float, dict]:
    """Wall seconds of `train.py overrides` in `checkout`, and its results.json."""
    command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={out}", "overwrite=true"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[2:6])} ... in {checkout} failed:\n{done.stderr[-2000:]}")
    return wall, json.loads((out / "results.json").read_text())


def probe_seconds(results: dict) -> float:
    forgetting = results.get("forgetting") or {}
    return sum(part.get("seconds", 0.0) for part in forgetting.values() if isinstance(part, dict))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_costs", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=100, help="LoRA steps of the short fine-tuning run")
    p.add_argument("--previous", default=PREVIOUS, help="the git revision to compare the evaluation-only run with")
    p.add_argument("--corpus-mb", type=float, default=20.0, help="size of the training corpus the eval-only run names")
    p.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "run_costs")
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(out / "corpus.txt", args.corpus_mb)
    with git_checkout(args.previous) as previous:
        versions = {  # name: (folder tag, checkout, its own overrides)
            "this version": ("now", ROOT, [*BASE, *NOW_ONLY]),
            f"previous ({args.previous})": ("previous", previous, BASE),
        }
        for tag, checkout, base in versions.values():  # each version pretrains its own base
            run(checkout, [*base, "trainer.max_steps=20"], out / f"base-{tag}")
        lora = [*BASE, *NOW_ONLY, "finetune=lora", f"model.pretrained={out / 'base-now'}",
                f"trainer.max_steps={args.steps}"]  # fmt: skip
        probe: dict[str, list[tuple[float, float]]] = {"block 128 (now)": [], f"block {CONTEXT} (before)": []}
        evaluation: dict[str, list[float]] = {name: [] for name in versions}
        for round_ in range(args.rounds):
            for label, extra in zip(probe, ([], [f"forgetting.block_size={CONTEXT}"]), strict=True):
                wall, results = run(ROOT, [*lora, *extra], out / f"lora-{round_}")
                probe[label].append((probe_seconds(results), wall))
            for name, (tag, checkout, base) in versions.items():
                pretrained = f"model.pretrained={out / f'base-{tag}'}"
                data = ["data=text", f"data.path={corpus}", "data.sample_by=paragraph"]
                wall, _ = run(checkout, [*base, *data, *EVAL_ONLY, pretrained], out / f"eval-{tag}")
                evaluation[name].append(wall)
            print(f"round {round_ + 1}: probe {probe}, eval-only {evaluation}", file=sys.stderr)
    print(f"# The forgetting probe in a {args.steps}-step LoRA run (llama-nano, context {CONTEXT}, block 128), "
          f"{args.rounds} rounds\n")  # fmt: skip
    print("| probe scores at | probe s (median) | run wall s (median) | probe share |")
    print("|---|---:|---:|---:|")
    for label, rows in probe.items():
        seconds, wall = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"| {label} | {seconds:.1f} | {wall:.1f} | {100 * seconds / wall:.1f}% |")
    print(f"\n# Evaluation-only run (perplexity, data.path a {args.corpus_mb:g} MB corpus), {args.rounds} rounds\n")
    print("| version | wall s (median) | ratio |")
    print("|---|---:|---:|")
    now = statistics.median(evaluation["this version"])
    for name, walls in evaluation.items():
        print(f"| {name} | {statistics.median(walls):.1f} | {statistics.median(walls) / now:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
