"""Fine-tuning methods on a ~100M-parameter GPT on CPU: trainable parameters, peak memory and step time.

    python -m bench.finetune [--quick] [--warmup N] [--steps N] [--threads N] [--malloc-mmap-threshold BYTES]

Model: `lightning_llm.models.GPT` with 12 layers, 12 heads, 768 wide, context 256, vocabulary 16384
(97,835,520 parameters, random init). Methods: full, freeze (last 2 layers), lora (rank 8, alpha 16), qlora
(rank 8, NF4 base), adapter (size 32), prompt (20 virtual tokens).

Each method runs in its own subprocess (`--worker METHOD`), because peak resident memory (`ru_maxrss`) is per
process: build the model, apply the method, AdamW over `lightning_llm.training.optim.parameter_groups` (frozen weights
are skipped), warm-up steps, then timed causal-LM steps (forward + cross-entropy + backward + optimizer step +
zero_grad) on random tokens, batch 4 x 256. Workers import only torch and the model, finetune and optim modules
(not Lightning or torchmetrics), so the RSS they share is mostly torch's own. Prompt tuning reads 256 - 20 tokens so
that, with its 20 virtual tokens, every method runs 256 positions through the model. --quick: a 4-layer,
256-wide model, batch 2 x 64, a smoke check of the code path, not a measurement.

`--malloc-mmap-threshold BYTES` sets glibc's MALLOC_MMAP_THRESHOLD_ in the workers: allocations of at least
that size are mmapped and handed back to the OS when freed, so the peak RSS follows live memory rather than
what glibc's heap keeps (by default the peak RSS of some methods still grows from step to step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.common import BUSY_CORES, ROOT, load_average, span, stamp

METHODS: dict[str, str] = {
    "full": "Full()",
    "freeze": 'Freeze(layers="last:2")',
    "lora": "LoRA(rank=8, alpha=16)",
    "qlora": "QLoRA(rank=8)",
    "adapter": "Adapter(size=32)",
    "prompt": "PromptTuning(num_virtual_tokens=20)",
}
SHAPE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 256, "vocab_size": 16384}
QUICK_SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 64, "vocab_size": 4096}
# targets from the issue
LORA_MAX_TRAINABLE_PERCENT = 1.0
QLORA_MAX_MEMORY_RATIO = 0.45
LORA_MAX_TIME_RATIO = 1.0


@dataclass
class Plan:
    """What one worker runs."""

    shape: dict[str, int]
    batch: int
    warmup: int
    steps: int
    threads: int = 2
    timeout_s: float = 600.0


FULL_PLAN = Plan(SHAPE, batch=4, warmup=1, steps=3)
QUICK_PLAN = Plan(QUICK_SHAPE, batch=2, warmup=1, steps=2, timeout_s=60.0)


def peak_rss_mb() -> float:
    """This process' peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """This process' resident memory now (/proc/self/statm; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


@dataclass
class WorkerResult:
    """What a worker measured (MB are MiB)."""

    method: str
    total: int
    trainable: int
    trainable_percent: float
    rss_imported_mb: float  # RSS after imports, before the model exists
    built_peak_mb: float  # peak RSS once the model is built: the baseline
    applied_rss_mb: float  # RSS right after the method is applied
    applied_peak_mb: float
    peak_mb: float  # peak RSS at the end
    end_rss_mb: float  # RSS at the end
    apply_s: float
    tokens_in: int  # tokens per row the model reads (prompt tuning: fewer, its virtual tokens fill the rest)
    linears: dict[str, int]  # module types of the linear layers inside the transformer blocks
    frozen_with_grad: int  # frozen parameters that got a gradient (must be 0)
    trainable_without_grad: int  # trainable parameters that got no gradient
    seconds: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # cores other processes used during each timed step


def make_method(name: str) -> Any:
    """The fine-tuning method object for a METHODS name (as its spec there says)."""
    from lightning_llm.finetune import Adapter, Freeze, Full, LoRA, PromptTuning, QLoRA

    factories = {
        "full": lambda: Full(),
        "freeze": lambda: Freeze(layers="last:2"),
        "lora": lambda: LoRA(rank=8, alpha=16),
        "qlora": lambda: QLoRA(rank=8),
        "adapter": lambda: Adapter(size=32),
        "prompt": lambda: PromptTuning(num_virtual_tokens=20),
    }
    return factories[name]()


def worker(method: str, plan: Plan) -> WorkerResult:
    """Build, apply, train: everything the parent reports on, measured inside this process."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(plan.threads)
    from lightning_llm.finetune import count_parameters
    from lightning_llm.models import GPT
    from lightning_llm.training.optim import parameter_groups

    torch.manual_seed(0)
    rss_imported = current_rss_mb()
    model = GPT(**plan.shape)
    built_peak = peak_rss_mb()
    start = time.perf_counter()
    model = make_method(method).apply(model)
    apply_s = time.perf_counter() - start
    applied_rss, applied_peak = current_rss_mb(), peak_rss_mb()
    counts = count_parameters(model)
    linears: dict[str, int] = {}
    for name, module in model.named_modules():
        if name.startswith("blocks.") and "Linear" in type(module).__name__:
            if type(module).__name__ == "LoRALinear":
                continue  # its base is counted
            linears[type(module).__name__] = linears.get(type(module).__name__, 0) + 1
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-4, weight_decay=0.1)
    tokens_in = model.context_length
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, plan.shape["vocab_size"], (plan.batch, tokens_in + 1), generator=generator)
    inputs, labels = tokens[:, :-1], tokens[:, 1:]  # as the CLM objective collates a block

    def loss() -> torch.Tensor:
        logits = model(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())

    def step() -> None:
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # one step by hand first, to check which parameters get gradients
    loss().backward()
    params = list(model.parameters())
    frozen_with_grad = sum(p.grad is not None for p in params if not p.requires_grad)
    trainable_without_grad = sum(p.grad is None for p in params if p.requires_grad)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for _ in range(plan.warmup - 1):
        step()
    seconds, others = [], []
    for _ in range(plan.steps):
        before = stamp()
        step()
        sample = span(before, stamp())
        seconds.append(sample.seconds)
        others.append(sample.others)
    return WorkerResult(
        method=method,
        total=int(counts["total"]),
        trainable=int(counts["trainable"]),
        trainable_percent=float(counts["trainable_percent"]),
        rss_imported_mb=rss_imported,
        built_peak_mb=built_peak,
        applied_rss_mb=applied_rss,
        applied_peak_mb=applied_peak,
        peak_mb=peak_rss_mb(),
        end_rss_mb=current_rss_mb(),
        apply_s=apply_s,
        tokens_in=tokens_in,
        linears=linears,
        frozen_with_grad=frozen_with_grad,
        trainable_without_grad=trainable_without_grad,
        seconds=seconds,
        others=others,
    )


def run_worker(method: str, plan: Plan, mmap_threshold: int | None) -> WorkerResult:
    """Run `worker(method, plan)` in a fresh interpreter and read its result line."""
    env = dict(os.environ)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    cmd = [sys.executable, "-m", "bench.finetune", "--worker", method, "--plan", json.dumps(asdict(plan))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=plan.timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return WorkerResult(**json.loads(line[len("RESULT ") :]))
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    raise RuntimeError(f"worker {method!r} failed (exit {proc.returncode}):\n{tail}")


def rows_from(results: list[WorkerResult]) -> list[dict[str, Any]]:
    """One table row per method, with ratios against full fine-tuning."""
    full = next((r for r in results if r.method == "full"), None)
    rows = []
    for r in results:
        ms = statistics.median(r.seconds) * 1e3
        delta = r.peak_mb - r.built_peak_mb
        row: dict[str, Any] = {
            "method": r.method,
            "spec": METHODS[r.method],
            "total params": r.total,
            "trainable": r.trainable,
            "trainable %": r.trainable_percent,
            "peak RSS MB": round(r.peak_mb),
            "built-model peak MB": round(r.built_peak_mb),
            "increase MB": round(delta),
            "ms/step": round(ms, 1),
            "ms min-max": f"{min(r.seconds) * 1e3:.0f}-{max(r.seconds) * 1e3:.0f}",
            "others' load": round(statistics.mean(r.others), 2) if r.others else None,
            "RSS at end MB": round(r.end_rss_mb),
            "apply peak MB": round(r.applied_peak_mb),
            "block linears": ", ".join(f"{n} {k}" for k, n in sorted(r.linears.items())),
            "grad check": "ok" if r.frozen_with_grad == 0 and r.trainable_without_grad == 0 else "MISMATCH",
            "tokens/row": r.tokens_in,
        }
        if full is not None:
            full_ms = statistics.median(full.seconds) * 1e3
            row["memory ratio"] = round(r.peak_mb / full.peak_mb, 3)
            row["increase ratio"] = round(delta / (full.peak_mb - full.built_peak_mb), 3)
            row["time ratio"] = round(ms / full_ms, 3)
        rows.append(row)
    return rows


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """(method, target, measured, passed) for each target of the issue that the rows allow to check."""
    by = {r["method"]: r for r in rows}
    checks = []
    if "lora" in by:
        pct = by["lora"]["trainable %"]
        ok = pct < LORA_MAX_TRAINABLE_PERCENT
        checks.append(("lora", f"LoRA trainable < {LORA_MAX_TRAINABLE_PERCENT:g}% of parameters", f"{pct:.3f}%", ok))
    if "qlora" in by and "memory ratio" in by["qlora"]:
        ratio, inc = by["qlora"]["memory ratio"], by["qlora"]["increase ratio"]
        checks.append(
            (
                "qlora",
                f"QLoRA peak memory <= {QLORA_MAX_MEMORY_RATIO:.0%} of full's",
                f"{ratio:.1%} of peak RSS ({inc:.1%} of the increase over the built model)",
                ratio <= QLORA_MAX_MEMORY_RATIO,
            )
        )
    if "lora" in by and "time ratio" in by["lora"]:
        ratio = by["lora"]["time ratio"]
        ok = ratio <= LORA_MAX_TIME_RATIO
        checks.append(("lora", "LoRA step time <= full's", f"{ratio:.3f}x full's median", ok))
    return checks


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of `columns` (text left-aligned, numbers right-aligned, thousands separated)."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), int | float) for row in rows if row.get(c) is not None) for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


COLUMNS = [
    "method",
    "trainable",
    "trainable %",
    "peak RSS MB",
    "increase MB",
    "memory ratio",
    "increase ratio",
    "ms/step",
    "ms min-max",
    "time ratio",
    "others' load",
]
DETAIL_COLUMNS = [
    "method",
    "spec",
    "total params",
    "built-model peak MB",
    "apply peak MB",
    "RSS at end MB",
    "block linears",
    "grad check",
    "tokens/row",
]


def main(
    quick: bool = False,
    warmup: int | None = None,
    steps: int | None = None,
    threads: int = 2,
    mmap_threshold: int | None = None,
    methods: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run every method in its own subprocess, print the tables and the targets, return the rows."""
    plan = QUICK_PLAN if quick else FULL_PLAN
    plan = Plan(
        plan.shape,
        plan.batch,
        warmup if warmup is not None else plan.warmup,
        steps if steps is not None else plan.steps,
        threads,
        plan.timeout_s,
    )
    shape = ", ".join(f"{k}={v}" for k, v in plan.shape.items())
    malloc = f", MALLOC_MMAP_THRESHOLD_={mmap_threshold}" if mmap_threshold is not None else ""
    print(
        f"[bench] fine-tuning methods: GPT({shape}), batch {plan.batch} x {plan.shape['block_size']}, "
        f"{plan.warmup} warm-up + {plan.steps} timed steps, {plan.threads} threads{malloc}",
        flush=True,
    )
    started, load_start = time.perf_counter(), load_average()
    results = []
    for method in methods or list(METHODS):
        t0 = time.perf_counter()
        result = run_worker(method, plan, mmap_threshold)
        results.append(result)
        print(
            f"[bench]   {method}: {time.perf_counter() - t0:.0f} s, peak RSS {result.peak_mb:.0f} MB, "
            f"median step {statistics.median(result.seconds) * 1e3:.0f} ms",
            flush=True,
        )
    rows = rows_from(results)
    checks = targets(rows)
    for row in rows:
        mine = [f"{name}: {'PASS' if ok else 'FAIL'}" for method, name, _, ok in checks if method == row["method"]]
        row["targets"] = "; ".join(mine) or None
    print()
    print(markdown_table(rows, COLUMNS))
    print()
    print(markdown_table(rows, DETAIL_COLUMNS))
    print()
    for _, name, measured, ok in checks:
        print(f"- target {name}: {measured}: {'PASS' if ok else 'FAIL'}")
    if quick:
        print("- quick: a 4.2M-parameter model, a smoke check; the targets are meant for the ~100M model")
    print(
        "- peak RSS: ru_maxrss of the method's own process (MiB); increase: over the peak once the model was built; "
        "ratios against full; others' load: cores other processes used during the timed steps (mean)"
    )
    loads = [row["others' load"] for row in rows if row["others' load"] is not None]
    if loads and max(loads) - min(loads) > BUSY_CORES:
        print(
            f"- [noisy] other processes used {min(loads):.2f} to {max(loads):.2f} cores during different methods' "
            "steps: the time ratios compare a busier CPU with a quieter one; rerun on a quieter machine"
        )
    print(f"- load average (1/5/15 min) at start / end: {load_start} | {load_average()}")
    print(f"- wall time: {time.perf_counter() - started:.0f} s")
    return rows


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.finetune", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small model and batch: a smoke check")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per method (default 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per method (default 3; quick 2)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads per worker (default 2)")
    p.add_argument("--malloc-mmap-threshold", type=int, default=None, help="MALLOC_MMAP_THRESHOLD_ for workers")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), help="a subset of the methods (keep full)")
    p.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = worker(args.worker, Plan(**json.loads(args.plan)))
        print("RESULT " + json.dumps(asdict(result)), flush=True)
        return 0
    main(args.quick, args.warmup, args.steps, args.threads, args.malloc_mmap_threshold, args.methods)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
