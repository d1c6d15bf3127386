"""Full fine-tuning: every weight trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_llm.finetune.base import FinetuneMethod
from lightning_llm.models import LanguageModel


@dataclass
class Full(FinetuneMethod):
    """Every weight of the pretrained model (and any task head) trains."""

    name: ClassVar[str] = "full"

    def apply(self, model: LanguageModel) -> LanguageModel:
        model.requires_grad_(True)
        return model
