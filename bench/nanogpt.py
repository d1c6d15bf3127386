"""Our whole run against a lean reference written to nanoGPT's recipe (`python -m bench.nanogpt`).

Both train the CPU "baby GPT" (4x4x128, block 64, batch 12, 2000 iterations, characters) on the embedded pydoc
topics as one stream, its last 10% held out: the reference loop (bench/nanogpt_reference.py) and our CLI
(`python train.py experiment=char_pydoc data=text data.path=train.txt data.val_path=heldout.txt`), as separate
processes, alternating, one seed per round. Reported: wall time of the whole process, time to the first step,
held-out loss per character (both models scored by the same function on the same held-out text), and the
achieved training GFLOP/s (the same FLOPs per token, 6N plus attention, for both; over training time, validation
excluded for ours, everything after the first step for the reference) against torch.matmul peaks of this machine
measured in the same run (fp32, what both train in, and bf16).

Also the time to the reference's quality: ours keeps the checkpoint of every validation (every 250 steps); each is
scored like the final models, and the first whose held-out loss is at or below the reference's final one in the
same round is reported with its step and the seconds from our process start to that checkpoint's write.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


def write_corpus(folder: Path) -> tuple[Path, Path]:
    """The pydoc topics as one stream; the last 10% (cut at a line break) held out."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(text[:cut])
    (folder / "heldout.txt").write_text(text[cut:])
    return folder / "train.txt", folder / "heldout.txt"


def heldout_loss(logits_of, ids: torch.Tensor, known: torch.Tensor, block: int = 64) -> float:
    """Mean next-character loss over the held-out stream in windows of `block` (contexts 1..block), counting only
    characters the training text has (both models saw the same alphabet)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block):
            window = ids[start : start + block + 1]
            if len(window) < 2:
                break
            losses = F.cross_entropy(logits_of(window[None, :-1])[0].float(), window[1:], reduction="none")
            keep = known[start + 1 : start + len(window)]
            total, count = total + float(losses[keep].sum()), count + int(keep.sum())
    return total / count


def score_reference(run: Path, heldout: str) -> float:
    sys.path.insert(0, str(ROOT))
    from bench.nanogpt_reference import BabyGPT

    saved = torch.load(run / "model.pt", weights_only=True)
    index = {c: i for i, c in enumerate(saved["chars"])}
    model = BabyGPT(len(saved["chars"])).eval()
    model.load_state_dict(saved["state_dict"])
    ids = torch.tensor([index.get(c, 0) for c in heldout])
    return heldout_loss(model, ids, torch.tensor([c in index for c in heldout]))


def score_ours(run: Path, heldout: str) -> float:
    from lightning_llm.inference import load_for_inference

    model, tokenizer = load_for_inference(str(run))
    ids = torch.tensor(tokenizer.encode(heldout))
    return heldout_loss(model, ids, ids != tokenizer.unk_id)


def time_to_loss(run: Path, started: float, heldout: str, target: float) -> tuple[int, float] | None:
    """(step, seconds from `started`) of the first checkpoint in `run` scoring at or below `target`, if any."""
    checkpoints = sorted((run / "checkpoints").glob("step*.ckpt"))
    for checkpoint in checkpoints:  # step-numbered names sort by step
        if score_ours(checkpoint, heldout) <= target:
            return int(checkpoint.name[4:10]), checkpoint.stat().st_mtime - started
    return None


def flops_per_token(vocab_size: int) -> int:
    """The training FLOPs per token of the baby GPT (both implementations are this shape)."""
    from lightning_llm.models import GPT

    model = GPT(vocab_size=vocab_size, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
    return int(model.flops_per_token(64))


def matmul_peaks() -> dict[str, float]:
    """This machine's torch.matmul FLOP/s (2 threads, as both runs) in fp32 and bf16."""
    from lightning_llm.training.peaks import measure_matmul_flops

    torch.set_num_threads(2)
    return {dtype: measure_matmul_flops(dtype) for dtype in ("fp32", "bf16")}


def run_process(command: list[str]) -> tuple[float, float]:
    """Run `command`; (its wall seconds, its start as a time.time() stamp, to compare with file times)."""
    started, stamp = time.perf_counter(), time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started, stamp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nanogpt", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "nanogpt")
    p.add_argument("--ours", nargs="*", default=[], help="extra overrides for our run (e.g. precision=32-true)")
    p.add_argument("--iters", type=int, default=2000, help="fewer for a quick check")
    p.add_argument("--reference-lr", type=float, default=1e-3, help="the reference's peak learning rate")
    args = p.parse_args(argv)
    train_file, heldout_file = write_corpus(args.out)
    heldout = heldout_file.read_text()
    rows: dict[str, list[dict]] = {"reference (nanoGPT recipe)": [], "ours (CLI)": []}
    for seed in range(1, args.rounds + 1):
        ref_dir = args.out / f"reference-{seed}"
        reference_cmd = [
            sys.executable,
            "-m",
            "bench.nanogpt_reference",
            str(train_file),
            str(heldout_file),
            str(ref_dir),
            str(seed),
            str(args.iters),
            str(args.reference_lr),
        ]
        wall, _ = run_process(reference_cmd)
        timing = json.loads((ref_dir / "timing.json").read_text())
        vocab = len(torch.load(ref_dir / "model.pt", weights_only=True)["chars"])
        tokens = args.iters * 12 * 64
        reference = {
            "wall": wall,
            "first_step": timing["first_step_s"],
            "heldout": score_reference(ref_dir, heldout),
            "flops_per_s": flops_per_token(vocab) * tokens / (timing["wall_s"] - timing["first_step_s"]),
        }
        rows["reference (nanoGPT recipe)"].append(reference)
        ours_dir = args.out / f"ours-{seed}"
        ours_cmd = [
            sys.executable,
            "train.py",
            "experiment=char_pydoc",
            "data=text",
            f"data.path={train_file}",
            f"data.val_path={heldout_file}",
            f"seed={seed}",
            f"trainer.max_steps={args.iters}",
            f"hydra.run.dir={ours_dir}",
            "overwrite=true",
            "callbacks.model_checkpoint.save_top_k=-1",  # every validation's checkpoint: the time to a loss
            *args.ours,
        ]
        wall, started = run_process(ours_cmd)
        results = json.loads((ours_dir / "results.json").read_text())
        rows["ours (CLI)"].append(
            {
                "wall": wall,
                "first_step": results.get("startup_seconds"),
                "heldout": score_ours(ours_dir, heldout),
                "flops_per_s": results["compute"]["achieved_flops_per_s"],
                "to_reference_loss": time_to_loss(ours_dir, started, heldout, reference["heldout"]),
            }
        )
        print(f"round {seed}: " + ", ".join(f"{k}: {v[-1]}" for k, v in rows.items()), file=sys.stderr)
    peaks = matmul_peaks()
    print(f"# Whole runs: nanoGPT's baby GPT recipe, {args.iters} iterations, {args.rounds} rounds (one seed each)\n")
    print(
        "| run | wall s (median) | to first step s (median) | held-out loss/char (mean) | per seed | "
        "train GFLOP/s (median) | of fp32 / bf16 matmul peak |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    reference_wall = statistics.median(r["wall"] for r in rows["reference (nanoGPT recipe)"])
    for name, results in rows.items():
        wall = statistics.median(r["wall"] for r in results)
        first = [r["first_step"] for r in results if r["first_step"] is not None]
        losses = [r["heldout"] for r in results]
        achieved = statistics.median(r["flops_per_s"] for r in results)
        print(
            f"| {name} | {wall:.1f} ({wall / reference_wall:.2f}x) | "
            f"{statistics.median(first) if first else float('nan'):.1f} | {statistics.mean(losses):.4f} | "
            f"{', '.join(f'{x:.4f}' for x in losses)} | {achieved / 1e9:.1f} | "
            f"{100 * achieved / peaks['fp32']:.1f}% / {100 * achieved / peaks['bf16']:.1f}% |"
        )
    fp32, bf16 = peaks["fp32"] / 1e9, peaks["bf16"] / 1e9
    print(f"\nmatmul peaks (torch.matmul, 2 threads): fp32 {fp32:.0f}, bf16 {bf16:.0f} GFLOP/s")
    reached = [r["to_reference_loss"] for r in rows["ours (CLI)"]]
    per_round = ", ".join(f"step {r[0]} at {r[1]:.1f} s" if r else "not reached" for r in reached)
    if all(reached):
        seconds = statistics.median(r[1] for r in reached)
        print(
            f"\nours reaches the reference's final held-out loss (same round) at {per_round}: median "
            f"{seconds:.1f} s ({seconds / reference_wall:.2f}x the reference's whole run)"
        )
    else:
        print(f"\nours against the reference's final held-out loss (same round): {per_round}")
    if args.ours:
        print(f"\nour overrides: {' '.join(args.ours)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
