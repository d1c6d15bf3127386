"""DPO's reference model, three ways, on CPU: peak memory and step time of LoRA-DPO (the reference is the same model
with its LoRA layers off), full DPO with a frozen copy, and full DPO with precomputed reference log-probabilities.

    python -m bench.preference [--quick] [--steps N] [--threads N]

Model: `lightning_llm.models.GPT`, 8 layers, 8 heads, 512 wide, context 256, vocabulary 8192 (random init; the
memory and time do not depend on the weights). Each variant runs in its own subprocess (`--worker VARIANT`), since
peak resident memory (`ru_maxrss`) is per process: build the model, apply the method, bind the reference as a run
does (`training.post_training.reference_for`; the precomputed variant scores the batch once first), AdamW, one
warm-up step, then timed DPO steps (`objectives.DirectPreference.forward` + backward + optimizer step) on random
pairs: 4 pairs of 96 prompt + 160 response tokens. The machine is shared: the table keeps each step's seconds and the
cores other processes used meanwhile. --quick: a 2-layer, 128-wide model, a smoke check, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

from bench.common import run_in_fresh_process, span, stamp
from bench.finetune import peak_rss_mb

VARIANTS = ("lora", "full-copy", "full-precomputed")
SHAPE = {"n_layer": 8, "n_head": 8, "n_embd": 512, "block_size": 256, "vocab_size": 8192}
QUICK_SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 64, "vocab_size": 1024}


@dataclass
class Result:
    """What a worker measured (MiB)."""

    variant: str
    parameters: int
    trainable: int
    built_peak_mb: float  # peak RSS once the model is built
    peak_mb: float
    seconds: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # cores other processes used during each step


def worker(variant: str, shape: dict[str, int], steps: int, threads: int) -> Result:
    """Build, apply, bind the reference, train: measured inside this process."""
    import torch

    from lightning_llm.finetune import Full, LoRA, count_parameters
    from lightning_llm.models import GPT
    from lightning_llm.objectives import IGNORE_INDEX, DirectPreference, ObjectiveContext
    from lightning_llm.objectives.base import sequence_logps
    from lightning_llm.training.optim import parameter_groups
    from lightning_llm.training.post_training import reference_for

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(**shape)
    built_peak = peak_rss_mb()
    method = LoRA(rank=8, alpha=16) if variant == "lora" else Full()
    method.apply(model)
    objective = DirectPreference(beta=0.1, precompute_reference=variant == "full-precomputed")
    objective.configure(ObjectiveContext(model=model))
    length, pairs = shape["block_size"], 4
    ids = torch.randint(4, shape["vocab_size"], (2 * pairs, length + 1))
    labels = ids[:, 1:].clone()
    labels[:, : length * 3 // 8] = IGNORE_INDEX  # the prompt: read, not scored (as SFT collation makes it)
    batch = {"input_ids": ids[:, :-1], "labels": labels}
    if variant == "full-precomputed":  # what precompute_reference_logps leaves in every batch
        with torch.no_grad():
            batch["reference_logps"] = sequence_logps(model(batch["input_ids"]), labels)[0]
    else:
        objective.bind_reference(reference_for(model, method)[0])
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-5)

    def step() -> None:
        objective.forward(model, batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    step()  # warm-up: AdamW's state exists from here
    counts = count_parameters(model)
    result = Result(variant, int(counts["total"]), int(counts["trainable"]), built_peak, 0.0)
    for _ in range(steps):
        before = stamp()
        step()
        sample = span(before, stamp())
        result.seconds.append(sample.seconds)
        result.others.append(sample.others)
    result.peak_mb = peak_rss_mb()
    return result


def run_worker(variant: str, quick: bool, steps: int, threads: int) -> Result:
    """`worker` in a fresh interpreter (its own peak RSS)."""
    args = ["--worker", variant, "--steps", str(steps), "--threads", str(threads), *(["--quick"] if quick else [])]
    return Result(**run_in_fresh_process("bench.preference", *args))


def table(results: list[Result]) -> str:
    """The markdown table bench/README.md shows."""
    full = next(r for r in results if r.variant == "full-copy")
    lines = [
        "| variant | trainable | peak RSS | vs full (copy) | above the built model | step time (median) | vs full "
        "| others' cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = statistics.median(full.seconds)
    for r in results:
        median = statistics.median(r.seconds)
        lines.append(
            f"| {r.variant} | {r.trainable:,} | {r.peak_mb:,.0f} MB | {r.peak_mb / full.peak_mb:.2f} | "
            f"{r.peak_mb - r.built_peak_mb:,.0f} MB | {median * 1000:,.0f} ms | {median / base:.2f} | "
            f"{max(r.others):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=VARIANTS)
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else SHAPE
    if args.worker:
        print(json.dumps(asdict(worker(args.worker, shape, args.steps, args.threads))))
        return
    started = time.time()
    results = [run_worker(v, args.quick, args.steps, args.threads) for v in VARIANTS]
    print(f"GPT {shape}, {results[0].parameters:,} parameters, {args.steps} timed steps, {args.threads} threads")
    print(table(results))
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
