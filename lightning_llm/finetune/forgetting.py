"""Catastrophic forgetting: the base objective's validation loss, measured before and after fine-tuning."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lightning_llm.data.datamodule import TextDataModule
from lightning_llm.data.tokenizer import Tokenizer
from lightning_llm.objectives import CausalLM, MaskedLM, Objective, SpanCorruption

BASE_OBJECTIVES: dict[str, type[Objective]] = {"gpt": CausalLM, "bert": MaskedLM, "t5": SpanCorruption}


class ForgettingProbe:
    """Validation batches of the family's pretraining objective on a corpus, tokenized with the model's
    tokenizer; `measure(model)` gives the mean loss and perplexity over them."""

    def __init__(
        self,
        family: str,
        tokenizer: Tokenizer,
        path: str,
        block_size: int,
        batch_size: int,
        max_batches: int,
        cache_dir: str | Path,
    ) -> None:
        self.objective = BASE_OBJECTIVES[family]()
        data = TextDataModule(
            self.objective, tokenizer, path=path, block_size=block_size, batch_size=batch_size, cache_dir=str(cache_dir)
        )
        data.prepare_data()
        self.batches = list(data.val_dataloader())[:max_batches]

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        losses = [
            self.objective.forward(model, {k: v.to(device) for k, v in batch.items()}).loss.item()
            for batch in self.batches
        ]
        model.train(was_training)
        loss = sum(losses) / len(losses)
        return {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 3)}
