"""Tensor, pipeline and 2D parallelism against one device: `python -m bench.parallel`.

A GPT of 12 layers x 1024 (16 heads, vocabulary 4096, untied head) trains a few AdamW steps with gradient
clipping in each layout, one process per rank over gloo, 1 thread each (`--device cuda`: one GPU per rank over
NCCL, peak memory from torch.cuda.max_memory_allocated): one device, tensor
parallel 2 (+ sequence parallel), pipeline parallel 2 (1F1B and GPipe, 4 microbatches) and 2D (FSDP 2 x TP 2).
The model is built on the meta device and each rank materializes only its own shard or stage, as a sharded run
does, so per rank:

- held: the bytes of weights, gradients and AdamW state that rank holds (its DTensor shards, its stage);
- peak: the process's peak resident memory (torch's own ~0.3 GB included; on GPUs the device's peak
  allocation), and its growth over the steps;
- step: the median wall time of a training step (the slowest rank's), after a warm-up step;

each against one device, and the pipeline's bubble, (p - 1) / (m + p - 1) of each step (both schedules: 1F1B
keeps fewer microbatches' activations, not less idle time). Each layout runs in a fresh process, one after
another. `--layers`, `--width`, `--batch`, `--seq`, `--steps` change the shape.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from bench.common import ROOT

#: layout -> (label, tensor, pipeline, data, schedule)
LAYOUTS = {
    "one": ("one device", 1, 1, 1, ""),
    "tp": ("TP=2", 2, 1, 1, ""),
    "pp-1f1b": ("PP=2 1F1B", 1, 2, 1, "1f1b"),
    "pp-gpipe": ("PP=2 GPipe", 1, 2, 1, "gpipe"),
    "2d": ("2D: FSDP 2 x TP 2", 2, 1, 2, ""),
}
MICROBATCHES = 4


def build(args: argparse.Namespace, device: str) -> nn.Module:
    from lightning_llm.models import GPT

    with torch.device(device):
        return GPT(
            vocab_size=4096,
            block_size=args.seq,
            n_layer=args.layers,
            n_head=16,
            n_embd=args.width,
            tie_embeddings=False,
        )


def materialize(model: nn.Module, held: set[int] | None, device: torch.device) -> None:
    """Give the parameters this rank holds (`held`: ids of a pipeline stage's; None: every parameter, its
    DTensor shards through `to_empty`, as FSDP2 wants) memory and small random values."""
    from torch.distributed.tensor import DTensor

    if held is None:
        model.to_empty(device=device)
        with torch.no_grad():
            for param in model.parameters():
                (param.to_local() if isinstance(param, DTensor) else param).normal_(0, 0.02)
        return
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if id(param) in held:
                value = torch.empty_like(param, device=device).normal_(0, 0.02)
                setattr(module, name, nn.Parameter(value, requires_grad=param.requires_grad))


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of weights, gradients and optimizer state on this rank (local shards; meta parameters hold none)."""
    from torch.distributed.tensor import DTensor

    def size(t: torch.Tensor) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return 0 if t.is_meta else t.numel() * t.element_size()

    total = 0
    for param in model.parameters():
        total += size(param) + (size(param.grad) if param.grad is not None else 0)
        total += sum(size(v) for v in optimizer.state.get(param, {}).values() if isinstance(v, torch.Tensor) and v.ndim)
    return total


def rank_main(rank: int, world: int, port: int, name: str, args: argparse.Namespace, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from lightning_llm.models.parallel import apply_tensor_parallel
    from lightning_llm.training.parallel import MESH_DIMENSIONS, clip_gradients, gradient_norm
    from lightning_llm.training.pipeline import Pipeline

    torch.set_num_threads(1)
    _, tensor, pipeline, data, schedule = LAYOUTS[name]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device(args.device, rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    mesh = init_device_mesh(device.type, (pipeline, data, tensor), mesh_dim_names=MESH_DIMENSIONS)
    model, stages = build(args, "meta"), None
    if pipeline > 1:
        stages = Pipeline(model, mesh["pipeline_parallel"], MICROBATCHES, schedule, device)
    if tensor > 1:
        apply_tensor_parallel(model, mesh["tensor_parallel"], sequence_parallel=True)
    if data > 1:
        for block in model.blocks:
            fully_shard(block, mesh=mesh["data_parallel"])
        fully_shard(model, mesh=mesh["data_parallel"])
    materialize(model, None if stages is None else {id(p) for p in stages.stage_module.parameters()}, device)
    params = [p for p in model.parameters() if not p.is_meta]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(rank // tensor)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    times = []
    for _ in range(args.steps + 1):
        ids = torch.randint(0, 4096, (args.batch, args.seq + 1), generator=generator).to(device)
        batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
        dist.barrier()
        started = time.perf_counter()
        if stages is not None:
            stages.run(batch, train=True)
        else:
            logits = model(batch["input_ids"])
            F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten()).backward()
        clip_gradients(params, 1.0, gradient_norm(params, mesh["pipeline_parallel"] if stages else None))
        optimizer.step()
        optimizer.zero_grad()
        dist.barrier()
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    growth = peak - before * 1024
    if device.type == "cuda":  # the device's own peak, not the host process's
        peak, growth = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_allocated(device) - allocated
    record = {"held": held_bytes(model, optimizer), "peak_rss": peak, "growth": growth}
    record["step"] = statistics.median(times[1:])
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def run_layout(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One layout in this process: its ranks spawned, their records read back."""
    _, tensor, pipeline, data, _ = LAYOUTS[name]
    world = tensor * pipeline * data
    with socket.socket() as probe, tempfile.TemporaryDirectory() as out:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        mp.spawn(rank_main, args=(world, port, name, args, out), nprocs=world)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    one = results["one"][0]
    lines = [
        "| layout | ranks | held per rank (weights+grads+AdamW) | vs one device | peak per rank | growth over "
        "the steps | step | vs one device | bubble |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ranks in results.items():
        pipeline = LAYOUTS[name][2]
        held = max(r["held"] for r in ranks)
        step = max(r["step"] for r in ranks)
        bubble = (pipeline - 1) / (MICROBATCHES + pipeline - 1) if pipeline > 1 else 0.0
        lines.append(
            f"| {LAYOUTS[name][0]} | {len(ranks)} | {held / 2**20:,.0f} MiB | {held / one['held']:.2f} "
            f"| {max(r['peak_rss'] for r in ranks) / 2**20:,.0f} MiB "
            f"| {max(r['growth'] for r in ranks) / 2**20:,.0f} MiB "
            f"| {step:.2f} s | {step / one['step']:.2f} | {bubble:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), help="run one layout here and print its records")
    args = parser.parse_args()
    if args.layout:
        print(json.dumps(run_layout(args.layout, args)))
        return
    passed = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("layout", "layouts")]
    results = {}
    for name in ["one", *(n for n in args.layouts.split(",") if n != "one")]:  # a fresh process each: its own peak
        done = subprocess.run(
            [sys.executable, "-m", "bench.parallel", *passed, "--layout", name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: done", file=sys.stderr)
    print(
        f"GPT {args.layers} x {args.width}, batch {args.batch} x {args.seq}, {args.steps} steps, {MICROBATCHES} "
        f"microbatches under PP, torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    print(table(results))


if __name__ == "__main__":
    main()
