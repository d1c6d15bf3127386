"""GPT: a decoder-only transformer (GPT-2 by default; RoPE/RMSNorm/SwiGLU/GQA make it Llama-like)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_llm.models.base import LanguageModel
from lightning_llm.models.blocks import (
    Block,
    ModelConfig,
    RotaryEmbedding,
    attention_bias,
    build_norm,
    init_weights,
    prepend_prefix,
    run_block,
)
from lightning_llm.models.generation import generate_tokens


class GPT(LanguageModel):
    """Token ids (batch, time) -> next-token logits (batch, time, vocab)."""

    family = "gpt"
    architecture = "decoder"

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        config = self.config
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

    def layer_stacks(self) -> list[nn.ModuleList]:
        return [self.blocks]

    def classification_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last real token's state: it has read the whole sequence."""
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final (normalised) hidden states (batch, time, n_embd); `attention_mask` 1 = real token."""
        x, attention_mask, n_prefix = prepend_prefix(self.prefix, self.wte(input_ids), attention_mask)
        t = x.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence length {t} exceeds model.block_size={self.config.block_size}")
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(t, device=input_ids.device))
        x = self.drop(x)
        mask = None if attention_mask is None else attention_bias(attention_mask, causal=True, q_len=t, k_len=t)
        for block in self.blocks:
            x = run_block(block, self.activation_checkpointing, x, mask)
        return self.norm_f(x[:, n_prefix:])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits for every position; pass `attention_mask` only for padded batches."""
        return self.lm_head(self.encode(input_ids, attention_mask))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **sampling: Any) -> torch.Tensor:
        """Sample continuations of `input_ids` (batch, time): temperature (0 = greedy), top_k, top_p,
        eos_id, generator."""
        window = self.context_length
        return generate_tokens(lambda ids: self(ids[:, -window:])[:, -1], input_ids, max_new_tokens, **sampling)
