"""A parallel-block decoder (GPT-J / PaLM style: attention and MLP read the same normed input and add to the
residual together), built from the shared blocks only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.tensor.parallel import SequenceParallel

from lightning_llm.models import LanguageModel, ModelConfig
from lightning_llm.models.blocks import (
    MLP,
    Attention,
    RotaryEmbedding,
    attention_bias,
    build_norm,
    init_weights,
    prepend_prefix,
    run_block,
)
from lightning_llm.models.generation import generate_tokens
from lightning_llm.models.parallel import (
    TensorParallelPlan,
    attention_plan,
    mlp_plan,
    stack_boundaries,
    vocabulary_columns,
    vocabulary_rows,
)


class ParallelBlock(nn.Module):
    def __init__(self, config: ModelConfig, rope: RotaryEmbedding) -> None:
        super().__init__()
        self.norm = build_norm(config)
        self.attn = Attention(config, causal=True, rope=rope)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        return x + self.attn(h, attn_mask) + self.mlp(h)


class ParallelDecoder(LanguageModel):
    """Token ids -> next-token logits through parallel blocks with rotary positions."""

    family = "toy"
    architecture = "decoder"
    defaults = dict(positions="rope", norm="rmsnorm", bias=False)

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        c = self.config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        rope = RotaryEmbedding(c.head_dim, c.block_size, c.rope_base)
        self.layers = nn.ModuleList(ParallelBlock(c, rope) for _ in range(c.n_layer))
        self.norm_f = build_norm(c)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        init_weights(self, c.n_layer)

    def layer_stacks(self) -> list[nn.ModuleList]:
        return [self.layers]

    def tensor_parallel_plan(self, sequence_parallel: bool) -> TensorParallelPlan:
        """What a family adds for trainer=tp: how its modules split, from the shared blocks' plans (attention
        heads and MLP units split, the norm on sequence shards) and the vocabulary-split embedding and head. It
        has no `pipeline_stages`, so trainer=pp refuses it in one line."""
        plan = {"wte": vocabulary_rows(), "lm_head": vocabulary_columns()}
        for i in range(len(self.layers)):
            plan.update(attention_plan(f"layers.{i}.attn", self.config, sequence_parallel))
            plan.update(mlp_plan(f"layers.{i}.mlp", self.config, sequence_parallel))
            if sequence_parallel:
                plan[f"layers.{i}.norm"] = SequenceParallel()
        return {**plan, **(stack_boundaries("layers", len(self.layers)) if sequence_parallel else {})}

    def classification_features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return hidden[torch.arange(hidden.size(0)), attention_mask.sum(dim=1) - 1]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x, attention_mask, n_prefix = prepend_prefix(self.prefix, self.wte(input_ids), attention_mask)
        t = x.size(1)
        mask = None if attention_mask is None else attention_bias(attention_mask, causal=True, q_len=t, k_len=t)
        for layer in self.layers:
            x = run_block(layer, self.activation_checkpointing, x, mask)
        return self.norm_f(x[:, n_prefix:])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.encode(input_ids, attention_mask))

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None = None, **sampling: Any
    ) -> torch.Tensor:
        """Without a cache; left padding is masked (rotary attention does not see the shift)."""
        window, prompt_mask = self.context_length, attention_mask

        def next_logits(ids: torch.Tensor) -> torch.Tensor:
            if prompt_mask is None:
                return self(ids[:, -window:])[:, -1]
            mask = torch.cat((prompt_mask, prompt_mask.new_ones(ids.size(0), ids.size(1) - prompt_mask.size(1))), 1)
            return self(ids[:, -window:], mask[:, -window:])[:, -1]

        return generate_tokens(next_logits, input_ids, max_new_tokens, **sampling)
