"""Generation speed and quantized inference (`python -m bench.generation`).

1. Greedy generation, ours (KV cache) against transformers' `generate` on the same weights (GPT-2 and Llama
   shaped ~10M models, batch 1 and 8, 128 new tokens): both in this process, alternating round by round, medians
   of the rounds; and ours with the cache against ours without (256 new tokens).
2. The same trained model unquantized, int8 and NF4 (bitsandbytes): weights on disk and in memory, generation
   tokens/s, and held-out bits per byte on the embedded corpus's validation documents.

Prints markdown tables; `--quick` shrinks everything to check the script runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from bench.common import Row, Sample, machine, paired_ratio, settle, span, stamp, table

V = 4096


def hf_models() -> dict:
    import transformers

    return {
        "gpt2-10M": transformers.GPT2LMHeadModel(
            transformers.GPT2Config(vocab_size=V, n_positions=512, n_embd=256, n_layer=6, n_head=8)
        ),
        "llama-10M": transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                vocab_size=V,
                hidden_size=256,
                intermediate_size=704,
                num_hidden_layers=6,
                num_attention_heads=8,
                num_key_value_heads=2,
                max_position_embeddings=512,
                tie_word_embeddings=True,
            )
        ),
    }


def timed(fn) -> Sample:
    start = stamp()
    fn()
    return span(start, stamp())


def against_transformers(rounds: int, new_tokens: int, batches: tuple[int, ...]) -> list[Row]:
    """Ours (cache) vs transformers generate, and ours with vs without the cache, alternating per round."""
    from lightning_llm.interop import load_hf_model

    rows = []
    for name, hf in hf_models().items():
        hf.eval()
        with tempfile.TemporaryDirectory() as tmp:  # our model from the same weights, through the importer
            hf.save_pretrained(tmp)
            ours, _ = load_hf_model(tmp)
        for batch in batches:
            prompt = torch.randint(10, V, (batch, 16), generator=torch.Generator().manual_seed(0))
            runs = {
                "transformers generate": lambda p=prompt, m=hf: m.generate(
                    p, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
                ),
                "ours, KV cache": lambda p=prompt, m=ours: m.generate(p, new_tokens, temperature=0),
            }
            with torch.no_grad():
                assert torch.equal(runs["ours, KV cache"](), runs["transformers generate"]()), "same greedy tokens"
                samples: dict[str, list[Sample]] = {k: [] for k in runs}
                for _ in range(rounds):
                    for key, fn in runs.items():
                        samples[key].append(timed(fn))
            group = f"{name} greedy, batch {batch}, {new_tokens} new"
            rows.append(Row(group, "transformers generate", samples["transformers generate"], batch * new_tokens, True))
            ours_row = Row(group, "ours, KV cache", samples["ours, KV cache"], batch * new_tokens)
            ours_row.paired = paired_ratio(ours_row.samples, samples["transformers generate"])
            rows.append(ours_row)
    return rows


def cache_speedup(rounds: int, new_tokens: int) -> list[Row]:
    from lightning_llm.models import GPT

    torch.manual_seed(0)
    model = GPT(vocab_size=V, block_size=512, n_layer=6, n_head=8, n_embd=256).eval()
    prompt = torch.randint(10, V, (1, 16))
    runs = {
        "ours, no cache": lambda: model.generate(prompt, new_tokens, temperature=0, use_cache=False),
        "ours, KV cache": lambda: model.generate(prompt, new_tokens, temperature=0, use_cache=True),
    }
    samples: dict[str, list[Sample]] = {k: [] for k in runs}
    for _ in range(rounds):
        for key, fn in runs.items():
            samples[key].append(timed(fn))
    group = f"gpt 10M, batch 1, {new_tokens} new"
    cached = Row(group, "ours, KV cache", samples["ours, KV cache"], new_tokens)
    cached.paired = paired_ratio(cached.samples, samples["ours, no cache"])
    return [Row(group, "ours, no cache", samples["ours, no cache"], new_tokens, True), cached]


def quantization(steps: int, new_tokens: int, rounds: int) -> str:
    """Train the nano GPT briefly, then compare it unquantized, int8 and nf4."""
    import copy
    import tempfile
    from pathlib import Path

    from lightning_llm.eval import evaluate
    from lightning_llm.finetune.quantize import quantize_model, weight_bytes
    from lightning_llm.inference import TextGenerator, load_for_inference
    from lightning_llm.models.scoring import GenerationSettings
    from lightning_llm.recipe import train
    from tests.conftest import compose_config

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(
            compose_config(
                [f"trainer.max_steps={steps}", "logger=none", "callbacks=last_checkpoint"],
                run,
                Path(".cache/lightning-llm"),
            )
        )
        base, tokenizer = load_for_inference(str(run))
        suite = {
            "tasks": {
                "ppl": {
                    "_target_": "lightning_llm.eval.tasks.PerplexityTask",
                    "path": "embedded:python_docs",
                    "holdout_fraction": 0.05,
                    "limit": 40,
                }
            },
            "progress": False,
            "on_error": "raise",
            "cache_dir": ".cache/lightning-llm",
        }
        lines = [
            "| weights | on disk (MB) | in memory (MB) | generation tokens/s (batch 1) | held-out bits/byte |",
            "|---|---:|---:|---:|---:|",
        ]
        for scheme in ("none", "int8", "nf4"):
            model = quantize_model(copy.deepcopy(base), scheme)
            path = Path(tmp) / f"{scheme}.pt"
            torch.save(model.state_dict(), path)
            generator = TextGenerator(model, tokenizer)
            settings = GenerationSettings(max_new_tokens=new_tokens, temperature=0.0)
            speeds = []
            for _ in range(rounds):
                speeds.append(generator.complete(["The for statement"], settings)[0].tokens_per_s)
            bpb = evaluate(suite, model, tokenizer, Path(tmp), seed=0)["tasks"]["ppl"]["metrics"]["bits_per_byte"]
            speeds.sort()
            lines.append(
                f"| {scheme} | {path.stat().st_size / 1e6:.2f} | {weight_bytes(model) / 1e6:.2f} "
                f"| {speeds[len(speeds) // 2]:,.0f} | {bpb:.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generation", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the script, measures nothing")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, new, long, steps = (2, 8, 16, 5) if args.quick else (7, 128, 256, 400)
    started = time.perf_counter()
    rows = against_transformers(rounds, new, (1, 8)) + cache_speedup(rounds, long)
    settle(rows)
    print(f"# Generation ({machine().get('cpu', '')}, {args.threads} threads)\n")
    print(table(rows))
    print("\n# Quantized inference (the default nano GPT after a short pretraining)\n")
    print(quantization(steps, new, max(3, rounds // 2)))
    print(f"\n[bench.generation] {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
