"""Sampling: one token at a time from a model's next-token logits (greedy, temperature, top-k, top-p, a
repetition penalty), per-row end of sequence, and a callback per step for streaming."""

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


def penalize_repeats(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (as transformers applies it): the logit of every token already in `history`
    is divided by `penalty` when positive and multiplied by it when negative."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, history)
    return logits.scatter(1, history, torch.where(seen < 0, seen * penalty, seen / penalty))


def decode(
    step: Callable[[torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    history: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """The loop every generating model shares: sample from `logits` (batch, vocab), hand the tokens to `step`,
    which returns the next logits. A row that has produced `eos_id` keeps producing it; the loop ends when every
    row has, or when `should_stop()` says so (e.g. every row reached a stop string). `on_token` sees each step's
    tokens (streaming). Returns the new tokens (batch, new)."""
    finished = torch.zeros(logits.size(0), dtype=torch.bool, device=logits.device)
    new: list[torch.Tensor] = []
    for i in range(max_new_tokens):
        logits = penalize_repeats(logits.float(), history, repetition_penalty)
        next_ids = sample_next_token(logits, temperature, top_k, top_p, generator)
        if eos_id is not None:
            next_ids = next_ids.masked_fill(finished[:, None], eos_id)
            finished |= next_ids[:, 0] == eos_id
        new.append(next_ids)
        history = torch.cat((history, next_ids), dim=1)
        if on_token is not None:
            on_token(next_ids)
        if bool(finished.all()) or i == max_new_tokens - 1 or (should_stop is not None and should_stop()):
            break
        logits = step(next_ids)
    return torch.cat(new, dim=1) if new else history[:, :0]


def generate_tokens(
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    max_new_tokens: int,
    **sampling: object,
) -> torch.Tensor:
    """Generation without a cache: `next_logits(all tokens so far)` each step; returns prompt + new tokens."""
    state = {"tokens": tokens}

    def step(next_ids: torch.Tensor) -> torch.Tensor:
        state["tokens"] = torch.cat((state["tokens"], next_ids), dim=1)
        return next_logits(state["tokens"])

    return torch.cat((tokens, decode(step, next_logits(tokens), tokens, max_new_tokens, **sampling)), dim=1)


def left_pad_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of left-padded rows: each row's real tokens count from 0 (padding gets 0 and is masked)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
