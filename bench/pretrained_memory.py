"""Peak memory of fine-tuning a pretrained checkpoint (`python -m bench.pretrained_memory`).

A GPT of GPT-2 small's blocks (12 layers, 12 heads, 768 wide; our 4096-token vocabulary: 89M parameters) is
pretrained for one step; then `finetune=lora` and `finetune=qlora` (NF4 base) train it for `--steps` steps at
block 128, batch 2, each as its own `train.py` process, whose peak resident memory (`ru_maxrss` of the child)
is reported, beside the same run of a 0.3M-parameter model (the process's own memory). This version builds the
model on the meta device and takes the checkpoint's memory-mapped tensors; QLoRA takes each float32 weight's pages
out of memory as it quantizes it; `--previous` (a git revision, run from a temporary worktree with
this environment) built a randomly initialised model, copied the checkpoint into it and kept the checkpoint's
tensors alive. Each version makes its own base checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from bench.common import git_checkout

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = "HEAD~1"
MODEL = ["model.n_layer=12", "model.n_head=12", "model.n_embd=768"]
#: the same run of a 0.3M-parameter model: the memory of the process itself (Python, torch, Lightning, data)
FLOOR_MODEL = ["model.n_layer=1", "model.n_head=1", "model.n_embd=64"]
SHAPE = [
    "data.block_size=128",
    "data.batch_size=2",
    "trainer.val_check_interval=1000",
    "trainer.limit_val_batches=2",
    "forgetting.enabled=false",
    "~callbacks.sample",
    "callbacks.compute.track_energy=false",
]


#: glibc's mmap threshold pinned (it otherwise grows after the first large free): every allocation of 1 MiB or more
#: is mapped and unmapped on its own, so bitsandbytes' per-call dequantized weights never fragment the heap
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def peak_mib(checkout: Path, overrides: list[str], out: Path, env: dict[str, str] | None = None) -> float:
    """Run `train.py overrides` in `checkout` as this process's only child; its peak RSS in MiB."""
    command = [sys.executable, "train.py", *SHAPE, *overrides, f"hydra.run.dir={out}", "overwrite=true"]
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError(f"{' '.join(overrides)} in {checkout} failed:\n{done.stderr[-2000:]}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pretrained_memory", description=__doc__)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--previous", default=PREVIOUS, help="the git revision to compare with")
    p.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "pretrained_memory")
    args = p.parse_args(argv)
    rows: dict[str, dict[str, float]] = {}
    pinned = "this version, MALLOC_MMAP_THRESHOLD_=1048576"
    with git_checkout(args.previous) as previous:
        versions = {"this version": (ROOT, None), pinned: (ROOT, PINNED_MALLOC),
                    f"previous ({args.previous})": (previous, None)}  # fmt: skip
        built: set[str] = set()
        for name, (checkout, env) in versions.items():
            tag = "now" if checkout == ROOT else "previous"
            if tag not in built:  # each version makes its own base checkpoint, once
                built.add(tag)
                subprocess.run([sys.executable, "train.py", *MODEL, *SHAPE, "trainer.max_steps=1",
                                f"hydra.run.dir={args.out / f'base-{tag}'}", "overwrite=true"],
                               cwd=checkout, check=True, capture_output=True)  # fmt: skip
            rows[name] = {}
            for method in ("qlora", "lora"):
                overrides = [*MODEL, f"finetune={method}", f"model.pretrained={args.out / f'base-{tag}'}",
                             f"trainer.max_steps={args.steps}"]  # fmt: skip
                run = args.out / f"{method}-{tag}"
                rows[name][method] = measure(checkout, overrides, run, env)
                rows[name][f"{method}_fit"] = json.loads((run / "results.json").read_text())["fit_seconds"]
            print(f"{name}: {rows[name]}", file=sys.stderr)
    floor = measure(ROOT, [*FLOOR_MODEL, f"trainer.max_steps={args.steps}"], args.out / "floor")
    print(f"# Peak RSS (MiB) of a {args.steps}-step fine-tuning run from an 89M-parameter checkpoint\n")
    print(f"The process alone (the same run of a 0.3M-parameter model): {floor:,.0f} MiB.\n")
    print("| version | LoRA | QLoRA | QLoRA / LoRA | LoRA above the process | QLoRA above the process | ratio "
          "| LoRA fit s | QLoRA fit s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, peaks in rows.items():
        lora, qlora = peaks["lora"], peaks["qlora"]
        print(f"| {name} | {lora:,.0f} | {qlora:,.0f} | {qlora / lora:.2f} | {lora - floor:,.0f} | "
              f"{qlora - floor:,.0f} | {(qlora - floor) / (lora - floor):.2f} | {peaks['lora_fit']:.1f} "
              f"| {peaks['qlora_fit']:.1f} |")  # fmt: skip
    return 0


def measure(checkout: Path, overrides: list[str], out: Path, env: dict[str, str] | None = None) -> float:
    """The peak of one run, measured from a fresh Python (ru_maxrss of RUSAGE_CHILDREN is the largest child's)."""
    code = (
        "import sys; from pathlib import Path; from bench.pretrained_memory import peak_mib; "
        f"print(peak_mib(Path({str(checkout)!r}), {overrides!r}, Path({str(out)!r}), {env!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
