"""LoRA fine-tuning of a real-shaped 135M model as a new user runs it (`python -m bench.finetune_135m`).

A Hugging Face Llama folder of SmolLM2-135M's architecture (30 layers, 576 wide, 9 heads over 3 key/value heads,
context 8,192, 49,152-token vocabulary, tied embeddings; random weights: timing and memory only) with a byte-level
BPE tokenizer of that size trained on the standard library's sources and SmolLM2's ChatML template, built once under
--folder. Then the issue-34 command, each variant as its own `train.py` process:

    python train.py model=llama model.pretrained=<folder> objective=sft data=stdlib_summaries finetune=lora \
        trainer.max_steps=20

Reported per variant: the process's wall time and each phase's share (start-up: imports, data, model; the
validation before fit and the final one; the forgetting probe before and after; fit: the 20 steps and the samples),
its peak resident memory (the child's own `ru_maxrss`, from wait4) and fit's tokens/s. Phase times come from the
run's results.json (fit, probe, start-up) and its validation lines, which state their seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["objective=sft", "data=stdlib_summaries", "finetune=lora", "trainer.max_steps=20"]
#: variant -> (overrides, whether it starts with an empty start-point cache): the defaults (every validation over
#: the held-out split's first 4 batches) as a first run and as a rerun that reads the starting point's numbers; the
#: validations over the whole split; batches of 16 rows whatever their tokens
VARIANTS = {
    "defaults, first run": ([], True),
    "defaults, a rerun (start point cached)": ([], False),
    "whole-split validations (trainer.limit_val_batches=1.0)": (["trainer.limit_val_batches=1.0"], True),
    "rows only (data.max_tokens=null)": (["data.max_tokens=null"], True),
}
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
    "rope_theta": 100000.0,
}
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def stdlib_texts(limit: int = 12_000_000) -> list[str]:
    """The standard library's Python sources, up to `limit` characters (what the tokenizer is trained on)."""
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or total > limit:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
    return texts


def build_folder(folder: Path) -> Path:
    """The Hugging Face folder of SmolLM2-135M's shape (random weights), built once."""
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    import torch
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(stdlib_texts(), vocab_size=SMOLLM2_135M["vocab_size"], special_tokens=SPECIAL)
    missing = SMOLLM2_135M["vocab_size"] - bpe.get_vocab_size()
    if missing > 0:  # the corpus ran out of merges: unused tokens fill the vocabulary to the embedding's size
        bpe.add_tokens([f"<|unused{i}|>" for i in range(missing)])
    bpe.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
              "unk_token": "<|endoftext|>", "chat_template": CHATML}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    llama = transformers.LlamaConfig(**SMOLLM2_135M, bos_token_id=1, eos_token_id=2)
    transformers.LlamaForCausalLM(llama).save_pretrained(folder)
    return folder


def run(folder: Path, overrides: list[str], out: Path, cache: Path) -> dict:
    """One `train.py` process with its own cache folder: its results, peak RSS and when each log line arrived."""
    command = [sys.executable, "train.py", *COMMAND, f"model.pretrained={folder}", *overrides,
               f"hydra.run.dir={out}", "overwrite=true"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["LIGHTNING_LLM_CACHE"] = str(cache)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = [(time.perf_counter() - started, line.rstrip()) for line in proc.stdout]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"{' '.join(overrides) or 'defaults'} failed:\n{tail}")
    (out / "bench_lines.txt").write_text("\n".join(f"{t:8.2f} {text}" for t, text in lines))
    results = json.loads((out / "results.json").read_text())
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "results": results, "lines": lines}


def validation_seconds(lines: list[tuple[float, str]], step: int) -> float:
    """How long the validation at `step` took: the seconds its summary line states (a tree before they were
    stated: from the line before its first line to its summary line)."""
    mine = [i for i, (_, text) in enumerate(lines) if f"validation at step {step} |" in text]
    if not mine:
        return 0.0
    first, last = mine[0], next((i for i in mine if re.search(r"\| val/loss ", lines[i][1])), mine[-1])
    stated = re.search(r"\| ([0-9.]+) s$", lines[last][1])
    return float(stated[1]) if stated else lines[last][0] - lines[max(0, first - 1)][0]


def phases(measured: dict) -> dict[str, float]:
    """Seconds per phase of one run."""
    results, lines = measured["results"], measured["lines"]
    steps = int(results.get("steps") or 0)
    forgetting = results.get("forgetting") or {}
    probe = {k: float((forgetting.get(k) or {}).get("seconds") or 0.0) for k in ("before", "after")}
    val_before, val_after = validation_seconds(lines, 0), validation_seconds(lines, steps)
    startup = float(results.get("startup_seconds") or 0.0) - probe["before"] - val_before
    fit = float(results.get("fit_seconds") or 0.0)
    return {
        "startup": startup,
        "validation": val_before + val_after,
        "probe": probe["before"] + probe["after"],
        "fit": fit,
        "other": measured["wall"] - startup - val_before - val_after - probe["before"] - probe["after"] - fit,
    }


def table(rows: dict[str, dict]) -> str:
    head = "| variant | wall s | start-up | validation | probe | fit | other | probe+val | peak RSS MiB | tokens/s |"
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, measured in rows.items():
        p, wall = phases(measured), measured["wall"]
        share = {k: f"{v:.0f} ({v / wall:.0%})" for k, v in p.items()}
        out.append(
            f"| {name} | {wall:.0f} | {share['startup']} | {share['validation']} | {share['probe']} | {share['fit']} | "
            f"{share['other']} | {(p['validation'] + p['probe']) / wall:.1%} | {measured['rss_mib']:,.0f} | "
            f"{measured['results'].get('tokens_per_s')} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.finetune_135m", description=__doc__)
    p.add_argument("--folder", type=Path, default=ROOT / "logs" / "bench" / "smollm2-135m-shape")
    p.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "finetune_135m")
    p.add_argument("--only", choices=list(VARIANTS), action="append", help="run only these variants")
    args = p.parse_args(argv)
    folder = build_folder(args.folder)
    rows = {}
    cache = args.out / "cache"  # tokenizer and token caches stay warm across variants; start points as the variant says
    for i, name in enumerate(args.only or VARIANTS):
        overrides, fresh = VARIANTS[name]
        if fresh:
            shutil.rmtree(cache / "start-points", ignore_errors=True)
        rows[name] = run(folder, overrides, args.out / f"variant{i}", cache)
        print(table(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
