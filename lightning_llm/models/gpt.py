"""GPT: a decoder-only transformer (GPT-2 by default; RoPE/RMSNorm/SwiGLU/GQA make it Llama-like)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.models.blocks import Block, ModelConfig, RotaryEmbedding, build_norm, init_weights


class GPT(nn.Module):
    """Token ids (batch, time) -> next-token logits (batch, time, vocab)."""

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = config = config or ModelConfig.from_kwargs(kwargs)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.positions == "learned" else None
        rope = (
            RotaryEmbedding(config.head_dim, config.block_size, config.rope_base)
            if config.positions == "rope"
            else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, causal=True, rope=rope) for _ in range(config.n_layer))
        self.norm_f = build_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_weights(self, config.n_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameter count (tied weights once); optionally without the embedding tables, as MFU wants."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6N for the weights plus 12·L·d·T for attention (PaLM appendix B)."""
        c = self.config
        return 6 * self.num_parameters(exclude_embeddings=True) + 12 * c.n_layer * c.n_embd * seq_len

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence length {t} exceeds model.block_size={self.config.block_size}")
        x = self.wte(input_ids)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(t, device=input_ids.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample continuations of `input_ids` (batch, time); temperature 0 decodes greedily."""
        for _ in range(max_new_tokens):
            logits = self(input_ids[:, -self.config.block_size :])[:, -1, :].float()
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)
            input_ids = torch.cat((input_ids, next_id), dim=1)
            if eos_id is not None and bool((next_id == eos_id).all()):
                break
        return input_ids


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
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the token crossing top_p
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
