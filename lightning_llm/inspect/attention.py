"""Attention probabilities, recomputed beside `scaled_dot_product_attention` (which never returns them), and
per-head scores: entropy, attention to the first token, previous-token and induction scores.

A forward hook on every `blocks.Attention` recomputes q and k from the module's own input and weights (head
split, rotary positions, scale, the additive mask it was given, or causality) and keeps softmax(q k^T scale +
mask). Run the model in eval mode: attention dropout is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from lightning_llm.inspect.prompts import forward
from lightning_llm.models import LanguageModel
from lightning_llm.models.blocks import Attention
from lightning_llm.tokenizers import Tokenizer


@dataclass
class AttentionMap:
    """One attention module's probabilities (batch, heads, queries, keys) in one forward pass."""

    name: str  # "layer 0"; encoder-decoders: "encoder 0", "decoder 0", "decoder 0 cross"
    cross: bool
    causal: bool
    probs: torch.Tensor


@dataclass
class HeadScore:
    """A head's averages over query positions (and prompts); None where the score does not apply."""

    layer: str
    head: int
    entropy: float | None  # nats
    first_token: float | None  # attention on position 0
    previous_token: float | None  # mean probability on position i-1 (self-attention)
    induction: float | None  # on a repeated random sequence (decoders' self-attention)


def _split_heads(x: torch.Tensor, n: int, head_dim: int) -> torch.Tensor:
    return x.view(x.size(0), x.size(1), n, head_dim).transpose(1, 2)


@torch.no_grad()
def attention_probs(
    attn: Attention,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    memory: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T scale + mask) of `attn` for its input `x` (`memory` for cross-attention, `positions` for
    rotary embeddings): (batch, heads, queries, keys), float32, as its `scaled_dot_product_attention` call weighs
    the values. Calls without a key/value cache only (a whole sequence at once)."""
    q_dim, kv_dim = attn.n_head * attn.head_dim, attn.n_kv_head * attn.head_dim
    if attn.cross:
        q, k = attn.q(x), attn.kv(memory)[..., :kv_dim]
    else:
        q, k = attn.qkv(x)[..., : q_dim + kv_dim].split([q_dim, kv_dim], dim=-1)
    q, k = _split_heads(q, attn.n_head, attn.head_dim), _split_heads(k, attn.n_kv_head, attn.head_dim)
    if attn.rope is not None:
        q, k = attn.rope(q, positions), attn.rope(k, positions)
    k = k.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)  # grouped-query: a key head serves a group
    scale = attn.scale if attn.scale is not None else 1 / math.sqrt(attn.head_dim)
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask.to(q.dtype).float()
    elif attn.causal:
        t, s = scores.shape[-2:]
        visible = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril(diagonal=s - t)
        scores = scores.masked_fill(~visible, float("-inf"))
    return scores.softmax(dim=-1)


def attention_modules(model: LanguageModel) -> list[tuple[str, Attention]]:
    """Every attention module of the model's layer stacks (also inside a wrapper such as an adapter), named as
    `AttentionMap.name`."""
    stacks = model.layer_stacks()
    prefixes = ["encoder", "decoder"] if len(stacks) == 2 else ["layer"]
    found = []
    for prefix, stack in zip(prefixes, stacks, strict=True):
        for i, block in enumerate(stack):
            for suffix, sub in (("", block.attn), (" cross", getattr(block, "cross_attn", None))):
                if sub is not None:
                    found.append((f"{prefix} {i}{suffix}", next(m for m in sub.modules() if isinstance(m, Attention))))
    return found


@contextmanager
def record_attention(model: LanguageModel) -> Iterator[list[AttentionMap]]:
    """Within the block, every forward pass appends each attention module's `AttentionMap` (probabilities on
    the CPU) to the yielded list, in execution order. Cached generation steps are not recorded."""
    maps: list[AttentionMap] = []

    def hook_for(name: str) -> Any:
        def hook(module: Attention, args: tuple, kwargs: dict[str, Any], output: torch.Tensor) -> None:
            inputs = dict(zip(("x", "attn_mask", "memory", "cache", "positions"), args, strict=False)) | kwargs
            if inputs.pop("cache", None) is not None:
                return
            probs = attention_probs(module, **inputs).cpu()
            maps.append(AttentionMap(name, module.cross, module.causal, probs))

        return hook

    handles = [
        module.register_forward_hook(hook_for(name), with_kwargs=True) for name, module in attention_modules(model)
    ]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


def repeated_tokens(
    model: LanguageModel, tokenizer: Tokenizer, length: int = 20, batch: int = 4, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """Induction probes: [bos] r r for random non-special tokens r of `length` (shortened to fit the context).
    Returns the ids (batch, time) and the length of r."""
    start = tokenizer.sequence_start
    length = min(length, (model.context_length - len(start)) // 2)
    special = {tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id}
    vocab = min(model.config.vocab_size, tokenizer.vocab_size)
    candidates = torch.tensor([i for i in range(vocab) if i not in special])
    generator = torch.Generator().manual_seed(seed)
    r = candidates[torch.randint(len(candidates), (batch, length), generator=generator)]
    return torch.cat((torch.tensor([start] * batch, dtype=torch.long).view(batch, -1), r, r), dim=1), length


def induction_scores(probs: torch.Tensor, length: int) -> torch.Tensor:
    """Per head: mean probability, over the second copy of a repeated sequence (ending the ids), that a query
    puts on the token after its previous occurrence (`length` positions back, plus one)."""
    t = probs.size(-1)
    queries = torch.arange(t - length, t)
    return probs[:, :, queries, queries - length + 1].mean(dim=(0, 2))


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def head_summary(
    model: LanguageModel, maps_per_prompt: list[list[AttentionMap]], tokenizer: Tokenizer, seed: int = 0
) -> list[HeadScore]:
    """Scores of every head, averaged over the prompts' maps (from `record_attention`, one prompt each); the
    induction score from a forward pass over `repeated_tokens` (decoder-only models)."""
    induction: dict[str, torch.Tensor] = {}
    if model.architecture == "decoder" and model.task_head is None:
        ids, length = repeated_tokens(model, tokenizer, seed=seed)
        with torch.no_grad(), record_attention(model) as maps:
            forward(model, ids.to(model.input_embeddings().weight.device))
        induction = {m.name: induction_scores(m.probs, length) for m in maps if m.causal}
    collected: dict[str, dict[str, list[torch.Tensor]]] = {}
    for m in (m for maps in maps_per_prompt for m in maps):
        p, scores = m.probs, collected.setdefault(m.name, {"entropy": [], "first_token": [], "previous_token": []})
        scores["entropy"].append(_entropy(p).mean((0, 2)))
        scores["first_token"].append(p[..., 0].mean((0, 2)))
        if not m.cross and p.size(-2) > 1:
            scores["previous_token"].append(p.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, 2)))
    rows = []
    for name in dict.fromkeys([*collected, *induction]):  # in execution order
        scores = {key: torch.stack(values).mean(0) for key, values in collected.get(name, {}).items() if values}
        n_heads = len(scores["entropy"]) if scores else len(induction[name])
        for h in range(n_heads):
            rows.append(
                HeadScore(
                    name,
                    h,
                    *(float(scores[key][h]) if key in scores else None for key in ("entropy", "first_token")),
                    float(scores["previous_token"][h]) if "previous_token" in scores else None,
                    float(induction[name][h]) if name in induction else None,
                )
            )
    return rows
