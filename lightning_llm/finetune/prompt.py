"""Prompt tuning (Lester et al. 2021): n trainable virtual-token embeddings prepended to the input;
every model weight stays frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lightning_llm.finetune.base import FinetuneMethod, freeze_all_but_task_head
from lightning_llm.models import LanguageModel


class VirtualTokens(nn.Module):
    """Prepends `embeddings` (n, dim) to every sequence of token embeddings (batch, time, dim)."""

    def __init__(self, embeddings: torch.Tensor) -> None:
        super().__init__()
        self.embeddings = nn.Parameter(embeddings)
        self.enabled = True  # off: nothing prepended (FinetuneMethod.disabled)

    @property
    def length(self) -> int:
        return self.embeddings.size(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return torch.cat((self.embeddings.to(x.dtype).expand(x.size(0), -1, -1), x), dim=1)


@dataclass
class PromptTuning(FinetuneMethod):
    """`num_virtual_tokens` embeddings, initialised from randomly chosen vocabulary embeddings, are all that
    trains; the model's prefix seam prepends them and drops their outputs."""

    name: ClassVar[str] = "prompt"
    saves_trainable_only: ClassVar[bool] = True
    mergeable: ClassVar[bool] = False
    added: ClassVar[type[nn.Module]] = VirtualTokens
    prepends_tokens: ClassVar[bool] = True
    num_virtual_tokens: int = 20
    init_seed: int = 0

    def apply(self, model: LanguageModel) -> LanguageModel:
        freeze_all_but_task_head(model)
        vocab = model.input_embeddings().weight
        generator = torch.Generator().manual_seed(self.init_seed)
        ids = torch.randint(4, vocab.size(0), (self.num_virtual_tokens,), generator=generator)
        model.attach_prefix(VirtualTokens(vocab.detach()[ids.to(vocab.device)].clone()))
        return model
