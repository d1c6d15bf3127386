"""Prompt tuning (Lester et al. 2021): n trainable virtual-token embeddings prepended to the input;
every model weight stays frozen."""

from __future__ import annotations

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import FinetuneMethod, freeze_all_but_task_head


class VirtualTokens(nn.Module):
    """Prepends `embeddings` (n, dim) to every sequence of token embeddings (batch, time, dim)."""

    def __init__(self, embeddings: torch.Tensor) -> None:
        super().__init__()
        self.embeddings = nn.Parameter(embeddings)

    @property
    def length(self) -> int:
        return self.embeddings.size(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.embeddings.to(x.dtype).expand(x.size(0), -1, -1), x), dim=1)


class PromptTuning(FinetuneMethod):
    """`num_virtual_tokens` embeddings, initialised from randomly chosen vocabulary embeddings, are all that
    trains; the model's prefix seam (`model.prefix`) prepends them and drops their outputs."""

    name = "prompt"
    saves_trainable_only = True

    def __init__(self, num_virtual_tokens: int = 20, init_seed: int = 0) -> None:
        self.num_virtual_tokens, self.init_seed = num_virtual_tokens, init_seed

    def apply(self, model: nn.Module) -> nn.Module:
        if not hasattr(model, "prefix"):
            raise ConfigError(f"finetune=prompt needs a model with a prefix seam; {type(model).__name__} has none")
        freeze_all_but_task_head(model)
        vocab = model.wte.weight
        generator = torch.Generator().manual_seed(self.init_seed)
        ids = torch.randint(4, vocab.size(0), (self.num_virtual_tokens,), generator=generator)
        model.prefix = VirtualTokens(vocab.detach()[ids.to(vocab.device)].clone())
        return model
