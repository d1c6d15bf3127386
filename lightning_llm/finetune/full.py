"""Full fine-tuning: every weight trains."""

from __future__ import annotations

from torch import nn

from lightning_llm.finetune.base import FinetuneMethod


class Full(FinetuneMethod):
    """Every weight of the pretrained model (and any task head) trains."""

    name = "full"

    def apply(self, model: nn.Module) -> nn.Module:
        for param in model.parameters():
            param.requires_grad = True
        return model
