"""Sampling: one token at a time from a model's next-token logits (greedy, temperature, top-k, top-p)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token id per row of `logits` (batch, vocab) with temperature, top-k and nucleus filtering."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop_sorted = probs.cumsum(dim=-1) - probs > top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


def generate_tokens(
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The sampling loop every decoder shares: append one sampled token at a time to `tokens`."""
    for _ in range(max_new_tokens):
        next_id = sample_next_token(next_logits(tokens).float(), temperature, top_k, top_p, generator)
        tokens = torch.cat((tokens, next_id), dim=1)
        if eos_id is not None and bool((next_id == eos_id).all()):
            break
    return tokens
