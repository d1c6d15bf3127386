"""One LoRA SFT training step of a SmolLM2-135M-shaped decoder, before and after issue 34's lean step.

    python -m bench.sft_step [--rounds N] [--batch B] [--threads N]

The model: 30 layers, 576 wide, 9 heads over 3 key/value heads, SwiGLU 1536, RMSNorm, RoPE (base 1e5), context
8,192, 49,152-token vocabulary, tied embeddings, random weights; LoRA as `finetune=lora` (rank 8, alpha 16, dropout
0.05, the attention projections). The rows: `--batch` (prompt, response) pairs of seeded random tokens, prompts of
220-250 tokens and responses of 24-8 (about the 1,024 tokens a batch of `data.max_tokens=auto` holds of
`data=stdlib_summaries`, rows bucketed by length), collated by `objective=sft`. A step: the objective's forward,
backward, an AdamW step over the LoRA weights, zero_grad.

- before: the LM head and the cross-entropy on every position (`token_cross_entropy(model(ids), labels)`, the
  objective's old forward) and the old rotary embedding (two half-width products per half, per call)
- labelled logits, old RoPE: the objective's forward as it is, with the old rotary embedding (the two apart)
- after: the product as it is (`SupervisedFineTuning.forward`: the head on the labelled positions only; the
  rotary embedding as `models.blocks` has it)

The two take turns step by step in one process (after a warm-up step each), so they share whatever else the CPU is
doing; the median step and tokens/s (tokens read: `ObjectiveOutput.num_tokens`) per variant. Memory, per step: the
freed heap is handed back (`malloc_trim`) and the process's peak RSS reset (`/proc/self/clear_refs`) before it, so
its peak (VmHWM) above the resident size it started from is that step's own; the median per variant.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from typing import Any

from bench.common import load_average
from bench.families import tokenizer_for
from bench.finetune import markdown_table

SHAPE = {
    "vocab_size": 49152, "block_size": 8192, "n_layer": 30, "n_head": 9, "n_kv_head": 3, "n_embd": 576,
    "mlp_hidden": 1536, "gated": True, "activation": "silu", "norm": "rmsnorm", "positions": "rope",
    "rope_base": 100000.0, "bias": False, "tie_embeddings": True, "norm_eps": 1e-5,
}  # fmt: skip
VARIANTS = ("before", "labelled logits, old RoPE", "after")


def old_rope(self: Any, x: Any, positions: Any = None) -> Any:
    """The rotary embedding before: half-width tables, four products and a concatenation per call."""
    import torch

    if not hasattr(self, "half_tables"):  # the old buffers: contiguous half-width tables, built once
        half = self.cos.size(-1) // 2
        self.half_tables = (self.cos[..., :half].contiguous(), self.sin[..., half:].contiguous())
    cos, sin = self.half_tables
    if positions is None:
        t = x.size(-2)
        cos, sin = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    else:
        cos, sin = cos[positions].to(x.dtype)[:, None], sin[positions].to(x.dtype)[:, None]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def build(batch_size: int) -> tuple[Any, Any, Any, dict[str, Any]]:
    """The model with LoRA, the configured SFT objective, its AdamW and one collated batch."""
    import torch

    from lightning_llm.finetune import LoRA
    from lightning_llm.models import GPT, ModelConfig
    from lightning_llm.objectives import ObjectiveContext, SupervisedFineTuning

    torch.manual_seed(0)
    model = LoRA(rank=8, alpha=16, dropout=0.05, target_modules=["*attn.qkv", "*attn.proj"]).apply(
        GPT(ModelConfig(**SHAPE))
    )
    model.train()
    objective = SupervisedFineTuning()
    objective.configure(ObjectiveContext(model=model, tokenizer=tokenizer_for(objective, SHAPE["vocab_size"])))
    generator = torch.Generator().manual_seed(0)
    low = objective.first_regular_id

    def ids(n: int) -> list[int]:
        return torch.randint(low, SHAPE["vocab_size"], (n,), generator=generator).tolist()

    prompts = torch.linspace(220, 250, batch_size).long().tolist()
    responses = torch.linspace(8, 24, batch_size).long().flip(0).tolist()
    batch = objective.collate(
        [{"prompt_ids": ids(p), "response_ids": ids(r)} for p, r in zip(prompts, responses, strict=True)]
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, objective, optimizer, batch


def memory_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: resident now, VmHWM: the peak since the last reset)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:"))


def step(variant: str, model: Any, objective: Any, optimizer: Any, batch: dict[str, Any]) -> tuple[float, float]:
    """One training step of `variant`: its seconds and its peak RSS above the resident size before it (GB)."""
    from lightning_llm.models.blocks import RotaryEmbedding
    from lightning_llm.objectives.base import token_cross_entropy

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS restarts from the resident size now
    resident = memory_kb("VmRSS")
    new_rope = RotaryEmbedding.forward
    start = time.perf_counter()
    if variant != "after":
        RotaryEmbedding.forward = old_rope
    try:
        if variant == "before":
            token_cross_entropy(model(batch["input_ids"]), batch["labels"]).backward()
        else:
            objective.forward(model, batch).loss.backward()
    finally:
        RotaryEmbedding.forward = new_rope
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return seconds, (memory_kb("VmHWM") - resident) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (one step of each variant)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    model, objective, optimizer, batch = build(args.batch)
    tokens = objective.tokens_read(batch)
    scored = int((batch["labels"] != -100).sum())
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    peaks: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds + 1):
        for variant in VARIANTS:
            elapsed, peak = step(variant, model, objective, optimizer, batch)
            if round_:  # the first round warms up
                seconds[variant].append(elapsed)
                peaks[variant].append(peak)
    rows = []
    for variant in VARIANTS:
        median = statistics.median(seconds[variant])
        rows.append(
            {
                "variant": variant,
                "step s (median)": round(median, 2),
                "tokens/s": round(tokens / median, 1),
                "step peak RSS GB": round(statistics.median(peaks[variant]), 2),
            }
        )
    ref = rows[0]["step s (median)"]
    for row in rows:
        row["step vs before"] = f"{row['step s (median)'] / ref:.2f}x"
    print(
        f"{args.batch} rows, {tokens} tokens read ({scored} labelled), {args.rounds} timed rounds each, "
        f"load {load_average()}"
    )
    print(markdown_table(rows, ["variant", "step s (median)", "step vs before", "tokens/s", "step peak RSS GB"]))


if __name__ == "__main__":
    main()
