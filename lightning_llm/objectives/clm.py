"""Causal language modelling: predict every next token."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import Perplexity

from lightning_llm.objectives.base import IGNORE_INDEX, Objective, ObjectiveOutput, token_cross_entropy
from lightning_llm.objectives.packing import PACKINGS, document_layout, model_inputs, pad_documents


class CausalLM(Objective):
    """Next-token prediction on packed blocks; a block of T+1 tokens gives T inputs and T labels.

    Windows overlap by one token, so every token of the stream is a label exactly once. With document masks
    (`doc_mask`) or one document per row (`pad`) no label is predicted across a document boundary: an eos input
    has no label.
    """

    architectures = ("decoder",)
    packings = PACKINGS

    def block_layout(self, block_size: int) -> tuple[int, int]:
        return block_size + 1, block_size

    def collate(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        if self.packing == "pad":  # right padding: causal attention never lets a real token see the pads after it
            tokens, real = pad_documents(blocks, tok.pad_id)
            labels = tokens[:, 1:].masked_fill(real[:, 1:] == 0, IGNORE_INDEX)
            return {"input_ids": tokens[:, :-1], "labels": labels}
        tokens = torch.stack(blocks).long()
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        if self.packing == "concat":
            return {"input_ids": inputs, "labels": labels}
        document_ids, position_ids = document_layout(inputs, tok.eos_id)
        labels = labels.masked_fill(inputs == tok.eos_id, IGNORE_INDEX)
        return {"input_ids": inputs, "labels": labels, "document_ids": document_ids, "position_ids": position_ids}

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        logits = model(batch["input_ids"], **model_inputs(batch))
        loss = token_cross_entropy(logits, batch["labels"], self.per_row_loss)
        return ObjectiveOutput(loss, logits, batch["labels"], batch["input_ids"].numel())

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({"perplexity": Perplexity(ignore_index=IGNORE_INDEX)})

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        tok = self.tokenizer
        device = next(model.parameters()).device
        prompt_ids = (tok.sequence_start + tok.encode(prompt)) or [tok.eos_id]
        ids = torch.tensor([prompt_ids], device=device)
        out = model.generate(ids, max_new_tokens, eos_id=tok.eos_id, **sampling)
        return tok.decode(out[0, len(tok.sequence_start) :].tolist())
