"""T5: an encoder-decoder with relative position bias, cross-attention and a generating decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.models.base import LanguageModel
from lightning_llm.models.blocks import (
    Block,
    ModelConfig,
    RelativePositionBias,
    attention_bias,
    build_norm,
    dropout,
    init_weights,
    prepend_prefix,
    run_block,
)
from lightning_llm.models.cache import KVCache
from lightning_llm.models.generation import decode

if TYPE_CHECKING:
    from lightning_llm.models.parallel import TensorParallelPlan


class T5(LanguageModel):
    """(encoder ids, decoder ids) -> decoder logits (batch, target time, vocab).

    The relative position bias is computed once per stack (in its first layer, as T5 does) and shared.
    """

    family = "t5"
    architecture = "encoder-decoder"
    defaults = dict(norm="rmsnorm", norm_eps=1e-6, positions="relative", activation="relu", attn_scale=1.0, bias=False)

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        config = self.config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.encoder_bias = RelativePositionBias(config, bidirectional=True)
        self.decoder_bias = RelativePositionBias(config, bidirectional=False)
        self.encoder = nn.ModuleList(Block(config, causal=False) for _ in range(config.n_layer))
        self.decoder = nn.ModuleList(Block(config, causal=True, cross=True) for _ in range(config.n_decoder_layer))
        self.encoder_norm, self.decoder_norm = build_norm(config), build_norm(config)
        self.drop = dropout(config.dropout)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_weights(self, config.n_layer + config.n_decoder_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def layer_stacks(self) -> list[nn.ModuleList]:
        return [self.encoder, self.decoder]

    def tensor_parallel_plan(self, sequence_parallel: bool) -> TensorParallelPlan:
        """Embedding and LM head by vocabulary; both stacks' heads (cross-attention too) and MLPs split; each
        relative position bias keeps its ranks' heads' columns."""
        from lightning_llm.models.parallel import head_columns, stack_plan, vocabulary_columns, vocabulary_rows

        return {
            "wte": vocabulary_rows(),
            "encoder_bias.embedding": head_columns(),
            "decoder_bias.embedding": head_columns(),
            **stack_plan("encoder", self.encoder, self.config, sequence_parallel),
            **stack_plan("decoder", self.decoder, self.config, sequence_parallel),
            "lm_head": vocabulary_columns(),
        }

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder hidden states (batch, time, n_embd); `attention_mask` 1 = real token, 0 = padding.

        With a prefix (prompt tuning) the states include the prefix positions, which the decoder attends to.
        """
        x, attention_mask, _ = prepend_prefix(self.prefix, self.wte(input_ids), attention_mask)
        t = x.size(1)
        mask = attention_bias(
            attention_mask, causal=False, q_len=t, k_len=t, bias=self.encoder_bias(t, t, rows=x.size(0))
        )
        x = self.drop(x)
        for block in self.encoder:
            x = run_block(block, self.activation_checkpointing, x, mask)
        return self.drop(self.encoder_norm(x))

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Decoder logits given the encoder output `memory` and the encoder's padding mask; with a `cache`, only
        the new decoder tokens are read (cross-attention keys/values come from `memory` once)."""
        t, s, past = decoder_input_ids.size(1), memory.size(1), cache.length if cache is not None else 0
        if attention_mask is not None and attention_mask.size(1) < s:  # memory has prefix positions first
            attention_mask = F.pad(attention_mask, (s - attention_mask.size(1), 0), value=1)
        bias = self.decoder_bias(t, past + t, q_offset=past, rows=decoder_input_ids.size(0))
        self_mask = attention_bias(None, causal=True, q_len=t, k_len=past + t, bias=bias)
        cross_mask = None if attention_mask is None else attention_bias(attention_mask, False, t, s)
        x = self.drop(self.wte(decoder_input_ids))
        for i, block in enumerate(self.decoder):
            layer_cache = (cache.layer(i), cache.layer(i, cross=True)) if cache is not None else None
            x = run_block(block, self.activation_checkpointing, x, self_mask, memory, cross_mask, cache=layer_cache)
        if cache is not None:
            cache.length += t
        x = self.drop(self.decoder_norm(x))
        if self.config.tie_embeddings:
            x = x * self.config.n_embd**-0.5  # T5 rescales before a tied output projection
        return self.lm_head(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
        decoder_start_id: int = 0,
        use_cache: bool = True,
        **sampling: Any,
    ) -> torch.Tensor:
        """Encode once, then sample decoder tokens (returned without the start token); `sampling` as GPT's."""
        memory = self.encode(input_ids, attention_mask)
        start = torch.full((input_ids.size(0), 1), decoder_start_id, dtype=torch.long, device=input_ids.device)
        state = {"ids": start}
        cache = KVCache() if use_cache else None

        def step(next_ids: torch.Tensor) -> torch.Tensor:
            state["ids"] = torch.cat((state["ids"], next_ids), dim=1)
            if cache is not None:
                return self.decode(next_ids, memory, attention_mask, cache)[:, -1]
            return self.decode(state["ids"], memory, attention_mask)[:, -1]

        first = self.decode(start, memory, attention_mask, cache)[:, -1]
        return decode(step, first, start, max_new_tokens, **sampling)
