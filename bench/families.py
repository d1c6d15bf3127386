"""Train-step time and tokens/s of the three model families at the same width and depth, each with its objective.

    python -m bench.families [--quick] [--rounds N] [--budget SECONDS] [--threads N]

GPT + causal LM, BERT + masked LM, T5 + span corruption; n_layer=4 (T5: 4 encoder and 4 decoder layers),
4 heads, 256 wide, context 128, vocabulary 4096, batch 16, random init. Each step runs the objective's real
`collate` on random token blocks of its `block_layout` length, its `forward` (model + loss), backward, an AdamW
step over `lightning_llm.training.optim.parameter_groups` and `zero_grad`. The three take turns step by step (A B C A B
C ...) after warm-up rounds, so they share whatever else the CPU is doing. tokens/s counts the tokens the model
reads per step (`ObjectiveOutput.num_tokens`): for T5, encoder plus decoder tokens. Timed rounds stop early once
--budget seconds have passed (at least MIN_ROUNDS): a busy CPU slows 2-thread steps several-fold. --quick: a
smoke check (batch 4, 1 warm-up + 3 timed rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import load_average, span, stamp
from bench.finetune import markdown_table

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 128, "vocab_size": 4096}
BATCH, QUICK_BATCH = 16, 4
FULL_ROUNDS = (3, 30)  # (warm-up, timed) rounds; one round = one step of each family
QUICK_ROUNDS = (1, 3)
MIN_ROUNDS = 5
BUDGET_S = 150.0  # for the timed rounds


@dataclass
class Family:
    """One model with its objective, optimizer and timings."""

    name: str
    model: Any
    objective: Any
    optimizer: Any
    block_length: int
    seconds: list[float] = field(default_factory=list)
    collate_seconds: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def tokenizer_for(objective: Any, vocab_size: int) -> Any:
    """A CharTokenizer of exactly `vocab_size` pieces: pad, unk, bos, eos, the objective's specials, filler."""
    from lightning_llm.tokenizers import BASE_SPECIAL_TOKENS, CharTokenizer

    vocab = [*BASE_SPECIAL_TOKENS, *objective.special_tokens]
    vocab += [f"<piece_{i}>" for i in range(vocab_size - len(vocab))]
    return CharTokenizer(vocab)


def build_families(shape: dict[str, int]) -> list[Family]:
    """GPT + CausalLM, BERT + MaskedLM, T5 + SpanCorruption, each configured with its own tokenizer."""
    import torch

    from lightning_llm.models import BERT, GPT, T5
    from lightning_llm.objectives import CausalLM, MaskedLM, ObjectiveContext, SpanCorruption
    from lightning_llm.training.optim import parameter_groups

    families = []
    for name, model_class, objective in (
        ("GPT + causal LM", GPT, CausalLM()),
        ("BERT + masked LM", BERT, MaskedLM()),
        ("T5 + span corruption", T5, SpanCorruption()),
    ):
        tokenizer = tokenizer_for(objective, shape["vocab_size"])
        for token in objective.special_tokens:  # the ids the objective looks up must be real pieces
            assert tokenizer.token_to_id(token) != tokenizer.unk_id, token
        model = model_class(**shape)
        objective.configure(ObjectiveContext(model=model, tokenizer=tokenizer))
        model.train()
        optimizer = torch.optim.AdamW(parameter_groups(model), lr=3e-4, weight_decay=0.1)
        length, _ = objective.block_layout(shape["block_size"])
        families.append(Family(name, model, objective, optimizer, length))
    return families


def train_step(family: Family, batch_size: int, generator: Any) -> tuple[float, float, float, int]:
    """One timed step: (seconds, of which collate, others' cores, tokens read)."""
    import torch

    objective, low = family.objective, family.objective.first_regular_id
    blocks = list(torch.randint(low, SHAPE["vocab_size"], (batch_size, family.block_length), generator=generator))
    before = stamp()
    batch = objective.collate(blocks)
    collated = time.perf_counter()
    out = objective.forward(family.model, batch)
    out.loss.backward()
    family.optimizer.step()
    family.optimizer.zero_grad(set_to_none=True)
    sample = span(before, stamp())
    return sample.seconds, collated - before[0], sample.others, int(out.num_tokens)


def rows_from(families: list[Family]) -> list[dict[str, Any]]:
    """One row per family; ratios against the first (GPT), paired by round."""
    from lightning_llm.finetune import count_parameters

    ref = families[0]
    ref_ms = statistics.median(ref.seconds) * 1e3
    ref_tps = statistics.median(ref.tokens) / (ref_ms / 1e3)
    rows = []
    for f in families:
        ms = statistics.median(f.seconds) * 1e3
        q1, _, q3 = statistics.quantiles(f.seconds, n=4, method="inclusive") if len(f.seconds) > 1 else [ms / 1e3] * 3
        tokens = int(statistics.median(f.tokens))
        tps = tokens / (ms / 1e3)
        paired = statistics.median(a / b for a, b in zip(f.seconds, ref.seconds, strict=True))
        rows.append(
            {
                "family": f.name,
                "parameters": int(count_parameters(f.model)["total"]),
                "tokens/step": tokens,
                "ms/step": round(ms, 1),
                "IQR ms": f"{q1 * 1e3:.0f}-{q3 * 1e3:.0f}",
                "collate ms": round(statistics.median(f.collate_seconds) * 1e3, 2),
                "tokens/s": round(tps),
                "time / GPT": round(ms / ref_ms, 3),
                "paired time / GPT": round(paired, 3),
                "tokens/s / GPT": round(tps / ref_tps, 3),
                "others' load": round(statistics.mean(f.others), 2),
            }
        )
    return rows


COLUMNS = [
    "family",
    "parameters",
    "tokens/step",
    "ms/step",
    "IQR ms",
    "collate ms",
    "tokens/s",
    "time / GPT",
    "paired time / GPT",
    "tokens/s / GPT",
    "others' load",
]


def main(
    quick: bool = False, rounds: int | None = None, threads: int = 2, budget_s: float = BUDGET_S
) -> list[dict[str, Any]]:
    """Warm up, time interleaved rounds, print the table, return its rows."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    warmup, timed = QUICK_ROUNDS if quick else FULL_ROUNDS
    batch_size = QUICK_BATCH if quick else BATCH
    timed = rounds if rounds is not None else timed
    started, load_start = time.perf_counter(), load_average()
    families = build_families(SHAPE)
    shape = ", ".join(f"{k}={v}" for k, v in SHAPE.items())
    print(
        f"[bench] model families: {shape} (T5: {SHAPE['n_layer']} encoder + {SHAPE['n_layer']} decoder layers), "
        f"batch {batch_size}, {warmup} warm-up + {timed} timed rounds of {len(families)} interleaved steps, "
        f"{threads} threads",
        flush=True,
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(warmup):
        for family in families:
            train_step(family, batch_size, generator)
    timing_started = time.perf_counter()
    for r in range(timed):
        if r >= min(MIN_ROUNDS, timed) and time.perf_counter() - timing_started > budget_s:
            print(f"[bench] stopped after {r} timed rounds: past the {budget_s:.0f} s budget (a busy CPU)")
            break
        order = families[r % len(families) :] + families[: r % len(families)]  # rotate: nobody always runs first
        for family in order:
            seconds, collate, others, tokens = train_step(family, batch_size, generator)
            family.seconds.append(seconds)
            family.collate_seconds.append(collate)
            family.others.append(others)
            family.tokens.append(tokens)
    rows = rows_from(families)
    print()
    print(markdown_table(rows, COLUMNS))
    print()
    print(
        "- ms/step: median of the timed steps (collate + forward + loss + backward + AdamW step + zero_grad); "
        "paired time / GPT: median over rounds of the step-time ratio to GPT's step in the same round; "
        "others' load: cores other processes used during the steps (mean)"
    )
    print(f"- timed rounds: {len(families[0].seconds)}")
    print(f"- load average (1/5/15 min) at start / end: {load_start} | {load_average()}")
    print(f"- wall time: {time.perf_counter() - started:.0f} s")
    return rows


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 4, 1 warm-up + 3 timed rounds: a smoke check")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 30; quick 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument(
        "--budget", type=float, default=BUDGET_S, help=f"seconds for the timed rounds (default {BUDGET_S:g})"
    )
    args = p.parse_args(argv)
    main(args.quick, args.rounds, args.threads, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
