"""GRPO's step, split: time and tokens/s of generation (the KV-cache `generate` sampling a group per prompt), of the
reference's log-probabilities (the KL penalty's) and of the update (forward + backward + optimizer step), and the
peak memory, for LoRA (the reference: adapters off) and full fine-tuning (the reference: a frozen copy).

    python -m bench.grpo [--quick] [--steps N] [--threads N] [--device cpu|cuda]

Model: `lightning_llm.models.GPT`, 6 layers, 6 heads, 384 wide, context 256, vocabulary 8192 (random init: every
completion runs to `max_new_tokens`, so each step does the same work). A step: 4 prompts of 64 tokens x group 8 =
32 completions of 64 new tokens, `objectives.GRPO.rollout` (generation, rewards, reference) then `GRPO.update` +
backward + AdamW. Each variant runs in its own subprocess (`--worker VARIANT`): peak resident memory (`ru_maxrss`)
is per process (on CUDA: `max_memory_allocated`). The machine may be shared: the table keeps the cores other
processes used. --quick: a 2-layer, 128-wide model, a smoke check, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

from bench.common import run_in_fresh_process, span, stamp
from bench.finetune import peak_rss_mb

VARIANTS = ("lora", "full")
SHAPE = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "vocab_size": 8192}
QUICK_SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 128, "vocab_size": 1024}
PROMPTS, GROUP, PROMPT_TOKENS, NEW_TOKENS = 4, 8, 64, 64


class IdTokenizer:
    """Token ids as text (`"17 4 9"`): what the rewards read; ids 0-3 are pad, unk, bos, eos."""

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3
    sequence_start: list[int] = []

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


@dataclass
class Result:
    variant: str
    parameters: int
    trainable: int
    peak_mb: float
    generate_s: list[float] = field(default_factory=list)
    reference_s: list[float] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    generated_tokens: int = 0  # per step
    update_tokens: int = 0  # per step: prompt + completion tokens read by the update
    others: list[float] = field(default_factory=list)


def worker(variant: str, shape: dict[str, int], steps: int, threads: int, device: str) -> Result:
    """Build, apply the method, bind the reference as a run does, then time the parts of GRPO steps."""
    import torch

    from lightning_llm.finetune import Full, LoRA, count_parameters
    from lightning_llm.models import GPT
    from lightning_llm.objectives import GRPO, ObjectiveContext
    from lightning_llm.training.optim import parameter_groups
    from lightning_llm.training.post_training import reference_for

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(**shape).to(device)
    method = LoRA(rank=8, alpha=16) if variant == "lora" else Full()
    method.apply(model)
    rewards = [{"_target_": "lightning_llm.objectives.rewards.LengthPenalty", "target_chars": 100}]
    objective = GRPO(rewards=rewards, group_size=GROUP, max_new_tokens=NEW_TOKENS, kl_beta=0.04)
    objective.configure(ObjectiveContext(model=model, tokenizer=IdTokenizer()))
    objective.bind_reference(reference_for(model, method)[0])
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-5)
    ids = torch.randint(4, shape["vocab_size"], (PROMPTS, PROMPT_TOKENS), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "prompts": [""] * PROMPTS}
    batch["answers"] = [""] * PROMPTS
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(fn, *args):
        sync()
        before = stamp()
        out = fn(*args)
        sync()
        return out, span(before, stamp())

    def update(rollout) -> None:
        objective.update(model, rollout).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = Result(variant, 0, 0, 0.0)
    model.train()
    for step in range(steps + 1):  # step 0 warms up (AdamW's state, allocator)
        kl_beta, objective.kl_beta = objective.kl_beta, 0.0  # the reference's pass, timed on its own below
        rollout, generated = timed(objective.rollout, model, batch)
        objective.kl_beta = kl_beta
        rollout.ref_logps, reference = timed(objective.reference_logps, model, rollout.batch)
        _, updated = timed(update, rollout)
        if step:
            result.generate_s.append(generated.seconds)
            result.reference_s.append(reference.seconds)
            result.update_s.append(updated.seconds)
            result.others.append(max(generated.others, updated.others))
            mask = rollout.batch["labels"] != -100
            result.generated_tokens = int(mask.sum())
            result.update_tokens = int(rollout.batch["input_ids"].numel())
    counts = count_parameters(model)
    result.parameters, result.trainable = int(counts["total"]), int(counts["trainable"])
    result.peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
    return result


def run_worker(variant: str, quick: bool, steps: int, threads: int, device: str) -> Result:
    """`worker` in a fresh interpreter (its own peak memory)."""
    args = ["--worker", variant, "--steps", str(steps), "--threads", str(threads), "--device", device]
    return Result(**run_in_fresh_process("bench.grpo", *args, *(["--quick"] if quick else [])))


def table(results: list[Result]) -> str:
    """Medians per step; ratios against full fine-tuning measured in the same run."""
    full = next(r for r in results if r.variant == "full")
    lines = [
        "| variant | trainable | generate | gen tok/s | reference | update | update tok/s | generation share "
        "| peak memory | vs full | step vs full | others' cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def step(r: Result) -> float:
        return statistics.median(r.generate_s) + statistics.median(r.reference_s) + statistics.median(r.update_s)

    for r in results:
        gen, ref, upd = (statistics.median(x) for x in (r.generate_s, r.reference_s, r.update_s))
        lines.append(
            f"| {r.variant} | {r.trainable:,} | {gen * 1000:,.0f} ms | {r.generated_tokens / gen:,.0f} | "
            f"{ref * 1000:,.0f} ms | {upd * 1000:,.0f} ms | {r.update_tokens / upd:,.0f} | {gen / step(r):.2f} | "
            f"{r.peak_mb:,.0f} MB | {r.peak_mb / full.peak_mb:.2f} | {step(r) / step(full):.2f} | {max(r.others):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--worker", choices=VARIANTS)
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else SHAPE
    if args.worker:
        print(json.dumps(asdict(worker(args.worker, shape, args.steps, args.threads, args.device))))
        return
    started = time.time()
    results = [run_worker(v, args.quick, args.steps, args.threads, args.device) for v in VARIANTS]
    print(
        f"GPT {shape}, {results[0].parameters:,} parameters on {args.device}; a step: {PROMPTS} prompts x {GROUP} "
        f"completions, {PROMPT_TOKENS} prompt + {NEW_TOKENS} new tokens; {args.steps} timed steps, medians"
    )
    print(table(results))
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
