"""Masked language modelling (BERT): predict 15% of tokens from both sides."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import IGNORE_INDEX, Objective, ObjectiveOutput, row_mean
from lightning_llm.objectives.packing import PACKINGS, document_layout, model_inputs, pad_documents
from lightning_llm.tokenizers import MASK_TOKEN


class MaskedLM(Objective):
    """BERT masking: pick `mask_prob` of the non-special tokens; of those, 80% become <mask>, 10% a random
    token, 10% stay. The loss covers the picked positions only. Blocks are framed as <s> ... </s>."""

    architectures = ("encoder",)
    packings = PACKINGS

    def __init__(self, mask_prob: float = 0.15, replace_mask: float = 0.8, replace_random: float = 0.1) -> None:
        super().__init__()
        if not 0 < mask_prob <= 1:
            raise ConfigError(f"objective.mask_prob={mask_prob} must be in (0, 1]")
        if min(replace_mask, replace_random) < 0 or replace_mask + replace_random > 1:
            raise ConfigError(
                f"objective.replace_mask={replace_mask} and objective.replace_random={replace_random} are shares of "
                "the picked tokens: each 0 or more, together at most 1"
            )
        self.mask_prob, self.replace_mask, self.replace_random = mask_prob, replace_mask, replace_random

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return (MASK_TOKEN,)

    @cached_property
    def special_ids(self) -> torch.Tensor:
        """The ids masking never picks: the tokenizer's special ones."""
        tok = self.tokenizer
        ids = {tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.token_to_id(MASK_TOKEN)}
        return torch.tensor(sorted(i for i in ids if i is not None))

    def block_layout(self, block_size: int) -> tuple[int, int]:
        return block_size - 2, block_size - 2

    def mask(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) for a batch of token ids; labels are IGNORE_INDEX where nothing was picked."""
        tok = self.tokenizer
        special = torch.isin(tokens, self.special_ids)
        picked = (torch.rand(tokens.shape) < self.mask_prob) & ~special
        labels = torch.where(picked, tokens, IGNORE_INDEX)
        decision = torch.rand(tokens.shape)
        to_mask = picked & (decision < self.replace_mask)
        to_random = picked & (decision >= self.replace_mask) & (decision < self.replace_mask + self.replace_random)
        inputs = tokens.masked_fill(to_mask, tok.token_to_id(MASK_TOKEN))
        random_ids = torch.randint(self.first_regular_id, tok.vocab_size, tokens.shape)
        return torch.where(to_random, random_ids, inputs), labels

    def collate(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Frame each block as <s> ... </s>; `doc_mask` adds document ids and positions, `pad` right-pads
        (pads are special, so never masked) with an attention mask."""
        tok = self.tokenizer
        framed = [torch.cat((torch.tensor([tok.bos_id]), block.long(), torch.tensor([tok.eos_id]))) for block in blocks]
        if self.packing == "pad":
            tokens, real = pad_documents(framed, tok.pad_id)
            inputs, labels = self.mask(tokens)
            return {"input_ids": inputs, "labels": labels, "attention_mask": real}
        inputs, labels = self.mask(torch.stack(framed))
        batch = {"input_ids": inputs, "labels": labels}
        if self.packing == "doc_mask":
            batch["document_ids"], batch["position_ids"] = document_layout(torch.stack(framed), tok.eos_id)
        return batch

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        hidden = model.encode(batch["input_ids"], **model_inputs(batch))
        picked = batch["labels"] != IGNORE_INDEX
        logits = model.mlm_logits(hidden[picked])  # the vocabulary projection only where it is scored
        labels = batch["labels"][picked]
        if self.per_row_loss:
            losses = F.cross_entropy(logits.float(), labels, reduction="none")
            loss = row_mean(losses, picked.nonzero()[:, 0], len(picked))
        else:
            loss = F.cross_entropy(logits.float(), labels)
        return ObjectiveOutput(loss, logits, labels, batch["input_ids"].numel())

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({"accuracy": MulticlassAccuracy(num_classes=vocab_size, average="micro")})

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        """Fill `<mask>` tokens in the prompt (or 3 appended ones) with the model's top choice."""
        tok = self.tokenizer
        mask_id = tok.token_to_id(MASK_TOKEN)
        ids = tok.encode(prompt)
        if mask_id not in ids:
            ids += [mask_id] * 3
        device = next(model.parameters()).device
        inputs = torch.tensor([[tok.bos_id, *ids, tok.eos_id]], device=device)
        with torch.no_grad():
            predicted = model(inputs).argmax(-1)
        filled = torch.where(inputs == mask_id, predicted, inputs)
        return tok.decode(filled[0, 1:-1].tolist())
