"""Two gloo processes split a llama-nano (grouped-query heads, RoPE, SwiGLU) by tensor and sequence parallel and
compare one forward and backward with one process's: `python tests/tensor_parallel_check.py` prints the largest
differences of logits and gradients and exits 1 above 1e-5 (tests/test_parallel.py runs it in its own process)."""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from lightning_llm.models import GPT
from lightning_llm.models.parallel import apply_tensor_parallel, canonical_rows

LLAMA = dict(
    vocab_size=96,
    block_size=32,
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    n_embd=32,
    activation="silu",
    gated=True,
    norm="rmsnorm",
    positions="rope",
    bias=False,
    tie_embeddings=False,
)


def largest_differences(rank: int, world: int, port: int) -> tuple[float, float]:
    """Rank `rank`'s largest differences of the logits and gradients from one process's."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    split = GPT(**LLAMA)
    torch.manual_seed(0)
    whole = GPT(**LLAMA)
    packed = apply_tensor_parallel(split, init_device_mesh("cpu", (world,)), sequence_parallel=True)
    ids = torch.randint(0, 96, (3, 13))  # 13 tokens: uneven sequence shards
    logits, expected = split(ids), whole(ids)
    logits.pow(2).mean().backward()
    expected.pow(2).mean().backward()
    reference = dict(whole.named_parameters())
    grads = 0.0
    for name, param in split.named_parameters():
        grad = param.grad.full_tensor() if isinstance(param.grad, DTensor) else param.grad
        grad = canonical_rows(grad, *packed[name]) if name in packed else grad
        grads = max(grads, (grad - reference[name].grad).abs().max().item())
    dist.destroy_process_group()
    return (logits - expected).abs().max().item(), grads


def main() -> int:
    with socket.socket() as probe:  # a free port for the process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    other = mp.get_context("spawn").Process(target=largest_differences, args=(1, 2, port))
    other.start()  # rank 1 in a process of its own, rank 0 here
    logits, grads = largest_differences(0, 2, port)
    other.join(timeout=120)
    print(f"logits {logits:.3g} gradients {grads:.3g}")
    return 0 if other.exitcode == 0 and max(logits, grads) <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
