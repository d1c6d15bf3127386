"""`python -m bench [--quick] [--threads N] [--budget S] [--only step|lightning] [--profile] [--output PATH]`.

Part 1: a training step of our GPT vs HF GPT-2 of the same shape. Part 2: Lightning's per-step overhead over a
bare loop. Prints a table and writes it, with the machine and date, to logs/bench/results.md (untracked: copy
the figures worth keeping into bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "offline",
}.items():
    os.environ.setdefault(_key, _value)

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    MIN_CLEAN,
    ROOT,
    Row,
    busy_threshold,
    compose_config,
    load_average,
    machine,
    set_threads,
    settle,
    table,
)

# (warmup, measured) steps per model for part 1; (steps, rounds) per variant for part 2. About 2.5 minutes in all
# on an idle 2-core machine; on a busy one, each part stops early past its share of --budget.
FULL = {"default": (5, 20), "~10M": (2, 14), "lightning": (18, 4)}
QUICK = {"default": (2, 4), "~10M": (1, 3), "lightning": (8, 1)}
SHARE = {"default": 0.15, "~10M": 0.35, "lightning": 0.4}  # of --budget; the rest is start-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="few steps: a smoke check, not a measurement")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: 2)")
    p.add_argument(
        "--budget", type=float, default=300.0, help="seconds: each part stops early past its share (default: 300)"
    )
    p.add_argument("--only", choices=("step", "lightning"), help="run one part: model step vs HF, or Lightning")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler tables (default model)")
    p.add_argument("--output", type=Path, default=ROOT / "logs" / "bench" / "results.md", help="markdown results file")
    return p.parse_args(argv)


def summary(rows: list[Row]) -> list[str]:
    """One line per comparison, in words; flags comparisons whose two estimates disagree (a busy CPU)."""
    lines = []
    for r in rows:
        if r.reference or r.ratio is None:
            continue
        paired = f", median of paired ratios {r.paired:.3f}x" if r.paired is not None else ""
        reasons = []
        if r.paired is not None and abs(r.paired - r.ratio) > 0.03:
            reasons.append("the two estimates differ by more than 3 points")
        if r.quiet < MIN_CLEAN:
            reasons.append("too few quiet steps")
        flag = f" [noisy: {'; '.join(reasons)}: rerun on a quieter CPU]" if reasons else ""
        if r.group.startswith("step"):
            lines.append(f"{r.group}: HF ({r.note}) / ours: ratio of medians {r.ratio:.3f}x{paired}{flag}")
        else:
            best = r.paired if r.paired is not None else r.ratio
            lines.append(
                f"{r.group}: {r.variant} overhead {(best - 1) * 100:+.1f}% (paired; ratio of medians "
                f"{(r.ratio - 1) * 100:+.1f}%; target < 5%){flag}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    plan = QUICK if args.quick else FULL
    started, load_start = time.perf_counter(), load_average()
    rows: list[Row] = []
    facts: dict[str, str] = {}

    if args.only in (None, "step"):
        from bench.hf_compare import TEN_M, compare, default_shape

        cfg = compose_config()
        for shape in (default_shape(cfg), TEN_M):
            warmup, steps = plan[shape.name]
            print(f"[bench] model step, {shape.name}: {shape.describe()}; {warmup} warmup + {steps} steps", flush=True)
            # HF's fused tanh GELU as well, on the small model only (cheap): it shows what gelu_new costs
            extra = ("gelu_pytorch_tanh",) if shape.name == "default" else ()
            budget = SHARE[shape.name] * args.budget
            new_rows, new_facts = compare(cfg, shape, warmup, steps, extra_activations=extra, budget_s=budget)
            rows += new_rows
            facts.update(new_facts)
        if args.profile:
            from bench.hf_compare import profile

            print(profile(cfg, default_shape(cfg)))

    if args.only in (None, "lightning"):
        from bench.overhead import measure

        steps, rounds = plan["lightning"]
        print(f"[bench] Lightning overhead: {rounds} rounds x {steps} steps x 4 variants", flush=True)
        new_rows, new_facts = measure(steps, rounds, budget_s=SHARE["lightning"] * args.budget)
        rows += new_rows
        facts.update(new_facts)

    settle(rows)
    info = machine()
    info["threads"] = str(torch.get_num_threads())
    info["load average at start / end"] = f"{load_start} | {load_average()}"
    info["wall time"] = f"{time.perf_counter() - started:.0f} s"
    legend = (
        f"quiet/steps: steps during which other processes used at most {busy_threshold():.2f} cores on average "
        "(from /proc/stat: the cores our threads leave free plus a margin); "
        f"when every row of a benchmark has {MIN_CLEAN} or more, only those enter its statistics. "
        "time / reference: ratio of median step times (< 1: faster than the reference). paired ratio: median of "
        "the ratios of measurements taken next to each other (adjacent steps; for rounds, the round medians), "
        "the estimate to trust on a busy CPU."
    )
    text = "\n".join(
        [
            table(rows),
            "",
            legend,
            "",
            *(f"- {line}" for line in summary(rows)),
            "",
            *(f"- {k}: {v}" for k, v in facts.items()),
        ]
    )
    print()
    print(text)
    header = [
        "# Benchmark results",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{' '.join(['python -m bench', *(sys.argv[1:] if argv is None else argv)])}`",
        f"- mode: {'quick (smoke check, not a measurement)' if args.quick else 'full'}",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join([*header, text, ""]), encoding="utf-8")
    print(f"\n[bench] wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
