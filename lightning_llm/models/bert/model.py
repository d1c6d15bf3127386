"""BERT: a bidirectional encoder with a masked-LM head tied to the input embeddings and a pooled output."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_llm.models.base import LanguageModel
from lightning_llm.models.blocks import (
    ACTIVATIONS,
    Block,
    ModelConfig,
    attention_bias,
    build_norm,
    dropout,
    init_weights,
    prefix_documents,
    prepend_prefix,
    run_block,
)
from lightning_llm.models.pipeline import cut_stages

if TYPE_CHECKING:
    from lightning_llm.models.parallel import TensorParallelPlan


class BERT(LanguageModel):
    """Token ids (batch, time) -> masked-LM logits (batch, time, vocab); `encode` gives hidden states."""

    family = "bert"
    architecture = "encoder"
    document_masks = True
    defaults = dict(norm_position="post", activation="gelu", n_token_types=2, embed_norm=True, norm_eps=1e-12)

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        config = self.config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.wtte = nn.Embedding(config.n_token_types, config.n_embd) if config.n_token_types else None
        self.embed_norm = build_norm(config) if config.embed_norm else None
        self.drop = dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, causal=False) for _ in range(config.n_layer))
        self.norm_f = build_norm(config) if config.norm_position == "pre" else None
        # masked-LM head: transform, then a decoder tied to the token embeddings (plus its own bias)
        self.mlm_dense = nn.Linear(config.n_embd, config.n_embd)
        self.mlm_norm = build_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=True)
        self.pooler = nn.Linear(config.n_embd, config.n_embd)
        init_weights(self, config.n_layer)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def layer_stacks(self) -> list[nn.ModuleList]:
        return [self.blocks]

    def tensor_parallel_plan(self, sequence_parallel: bool) -> TensorParallelPlan:
        """Embedding and (tied) MLM decoder by vocabulary, every block's heads and MLP split; the position and
        segment tables, the MLM transform and the pooler are small and stay whole on every rank."""
        from lightning_llm.models.parallel import stack_plan, vocabulary_columns, vocabulary_rows

        blocks = stack_plan("blocks", self.blocks, self.config, sequence_parallel)
        return {"wte": vocabulary_rows(), **blocks, "lm_head": vocabulary_columns()}

    def pipeline_stages(self, n: int) -> list[nn.Module]:
        """Token, segment and position embeddings (and their norm) open the first stage; the MLM head closes the
        last, over every position (untied: a tied pair would sit on two devices)."""

        def embed(input_ids: torch.Tensor) -> torch.Tensor:
            x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.size(1), device=input_ids.device))
            if self.wtte is not None:
                x = x + self.wtte(torch.zeros_like(input_ids))
            return self.drop(x if self.embed_norm is None else self.embed_norm(x))

        def head(hidden: torch.Tensor) -> torch.Tensor:
            return self.mlm_logits(hidden if self.norm_f is None else self.norm_f(hidden))

        embeddings = [self.wte, self.wpe, self.wtte, self.embed_norm]
        heads = [self.norm_f, self.mlm_dense, self.mlm_norm, self.lm_head]
        return cut_stages(self.blocks, n, embed, embeddings, head, heads, self.activation_checkpointing)

    def classification_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled [CLS] state, as BERT's classification heads read it."""
        return self.pool(hidden)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (batch, time, n_embd); `attention_mask` 1 = real token, 0 = padding. Packed rows
        pass `document_ids` (attention stays within a document) and `position_ids` (restarting per document)."""
        x = self.wte(input_ids)
        if self.wtte is not None:
            x = x + self.wtte(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        x, attention_mask, n_prefix = prepend_prefix(self.prefix, x, attention_mask)
        t = x.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence length {t} exceeds model.block_size={self.config.block_size}")
        x = x + self.wpe(self.positions(position_ids, 0, t, n_prefix, x.size(0), x.device))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)
        documents = prefix_documents(document_ids, n_prefix)
        mask = attention_bias(attention_mask, causal=False, q_len=t, k_len=t, document_ids=documents)
        for block in self.blocks:
            x = run_block(block, self.activation_checkpointing, x, mask)
        x = x[:, n_prefix:]
        return x if self.norm_f is None else self.norm_f(x)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for hidden states (any leading shape): pass only masked positions to save work."""
        h = self.mlm_norm(ACTIVATIONS[self.config.activation](self.mlm_dense(hidden)))
        return self.lm_head(h)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooled sequence representation for classification heads: tanh(W h[CLS])."""
        return torch.tanh(self.pooler(hidden[:, 0]))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.mlm_logits(self.encode(input_ids, attention_mask, token_type_ids, position_ids, document_ids))
