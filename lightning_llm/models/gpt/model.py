"""GPT: a decoder-only transformer (GPT-2 by default; RoPE/RMSNorm/SwiGLU/GQA make it Llama-like)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_llm.models.base import LanguageModel
from lightning_llm.models.blocks import (
    Block,
    ModelConfig,
    RotaryEmbedding,
    attention_bias,
    build_norm,
    dropout,
    init_weights,
    prefix_documents,
    prepend_prefix,
    run_block,
)
from lightning_llm.models.cache import KVCache
from lightning_llm.models.generation import decode, left_pad_positions
from lightning_llm.models.pipeline import cut_stages

if TYPE_CHECKING:
    from lightning_llm.models.parallel import TensorParallelPlan


class GPT(LanguageModel):
    """Token ids (batch, time) -> next-token logits (batch, time, vocab)."""

    family = "gpt"
    architecture = "decoder"
    document_masks = True
    selects_logits = True

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
        self.drop = dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, causal=True, rope=rope) for _ in range(config.n_layer))
        self.norm_f = build_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_weights(self, config.n_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def layer_stacks(self) -> list[nn.ModuleList]:
        return [self.blocks]

    def tensor_parallel_plan(self, sequence_parallel: bool) -> TensorParallelPlan:
        """Embedding and LM head by vocabulary (tied or not), every block's heads and MLP split."""
        from lightning_llm.models.parallel import stack_plan, vocabulary_columns, vocabulary_rows

        blocks = stack_plan("blocks", self.blocks, self.config, sequence_parallel)
        return {"wte": vocabulary_rows(), **blocks, "lm_head": vocabulary_columns()}

    def pipeline_stages(self, n: int) -> list[nn.Module]:
        """Token and position embeddings open the first stage, the final norm and the LM head close the last
        (untied: a tied pair would sit on two devices)."""

        def embed(input_ids: torch.Tensor) -> torch.Tensor:
            x = self.wte(input_ids)
            if self.wpe is not None:
                x = x + self.wpe(torch.arange(input_ids.size(1), device=input_ids.device))
            return self.drop(x)

        head = [self.norm_f, self.lm_head]
        return cut_stages(
            self.blocks,
            n,
            embed,
            [self.wte, self.wpe],
            lambda h: self.lm_head(self.norm_f(h)),
            head,
            self.activation_checkpointing,
        )

    def classification_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last real token's state: it has read the whole sequence."""
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final (normalised) hidden states (batch, time, n_embd); `attention_mask` 1 = real token. With a
        `cache` (generation) only the new tokens are read and their keys/values join the cache. Packed rows pass
        `document_ids` (attention stays within a document) and `position_ids` (restarting per document)."""
        batch, past = input_ids.size(0), cache.length if cache is not None else 0
        x, n_prefix = self.wte(input_ids), 0
        if past == 0:  # the prefix (prompt tuning) opens the sequence, once
            x, attention_mask, n_prefix = prepend_prefix(self.prefix, x, attention_mask)
        t = x.size(1)
        if past + t > self.config.block_size:
            raise ValueError(f"sequence length {past + t} exceeds model.block_size={self.config.block_size}")
        positions = self.positions(position_ids, past, t, n_prefix, batch, x.device)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        x = self.drop(x)
        if cache is not None:
            keys = cache.extend_mask(attention_mask, batch, t, x.device)
            if keys is None and past and t > 1:  # several new tokens after cached ones: causal by explicit mask
                keys = torch.ones(batch, past + t, dtype=torch.long, device=x.device)
            mask = None if keys is None else attention_bias(keys, causal=True, q_len=t, k_len=past + t)
        else:
            documents = prefix_documents(document_ids, n_prefix)
            mask = attention_bias(attention_mask, causal=True, q_len=t, k_len=t, document_ids=documents)
        rope_positions = positions if self.config.positions == "rope" and (position_ids is not None or past) else None
        for i, block in enumerate(self.blocks):
            layer_cache = (cache.layer(i), None) if cache is not None else None
            x = run_block(block, self.activation_checkpointing, x, mask, cache=layer_cache, positions=rope_positions)
        if cache is not None:
            cache.length += t
        return self.norm_f(x[:, n_prefix:])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every position (batch, time, vocab); pass `attention_mask` only for padded
        batches. `logits_at` (batch, time) bool: only the positions it marks, (marked, vocab), in row order (the
        LM head never runs on the others)."""
        hidden = self.encode(input_ids, attention_mask, cache, position_ids, document_ids)
        return self.lm_head(hidden if logits_at is None else hidden[logits_at])

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = True,
        **sampling: Any,
    ) -> torch.Tensor:
        """Continue `input_ids` (batch, time; left-padded rows with `attention_mask`): returns prompt + new tokens.

        `sampling`: temperature (0 = greedy), top_k, top_p, repetition_penalty, eos_id, generator, on_token. With
        the cache each new token costs one position; past the context it falls back to a sliding window, as the
        uncached path does throughout."""
        padded = attention_mask is not None and not bool(attention_mask.all())
        mask = attention_mask.long() if padded else torch.ones_like(input_ids)
        state = {"ids": input_ids, "mask": mask, "cache": KVCache() if use_cache else None}
        window = self.context_length

        def windowed() -> torch.Tensor:
            ids, keep = state["ids"][:, -window:], state["mask"][:, -window:]
            if not padded:
                return self(ids)[:, -1]
            return self(ids, keep, position_ids=left_pad_positions(keep))[:, -1]

        def step(next_ids: torch.Tensor) -> torch.Tensor:
            state["ids"] = torch.cat((state["ids"], next_ids), dim=1)
            state["mask"] = torch.cat((state["mask"], torch.ones_like(next_ids)), dim=1)
            cache = state["cache"]
            if cache is None or cache.length + 1 > self.config.block_size:
                state["cache"] = None
                return windowed()
            positions = left_pad_positions(state["mask"])[:, -1:] if padded else None
            return self(next_ids, torch.ones_like(next_ids) if padded else None, cache, positions)[:, -1]

        if state["cache"] is not None and self.prefix_length + input_ids.size(1) <= self.config.block_size:
            positions = left_pad_positions(mask) if padded else None
            first = self(input_ids, mask if padded else None, state["cache"], positions)[:, -1]
        else:
            state["cache"] = None
            first = windowed()
        new = decode(step, first, input_ids, max_new_tokens, **sampling)
        return torch.cat((input_ids, new), dim=1)
