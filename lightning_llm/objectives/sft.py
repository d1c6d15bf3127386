"""Supervised fine-tuning on (prompt, response) pairs: loss on the response tokens only.

A decoder (GPT) reads `<s> prompt response </s>` and predicts the response; an encoder-decoder (T5) encodes
the prompt and its decoder writes the response.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import Perplexity

from lightning_llm.objectives.base import IGNORE_INDEX, Objective, ObjectiveOutput, token_cross_entropy


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad lists of ids into a (batch, longest) tensor."""
    width = max(map(len, rows))
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)


class SupervisedFineTuning(Objective):
    """Instruction tuning / seq2seq: examples carry `prompt_ids` and `response_ids`."""

    model_families = ("gpt", "t5")

    def __init__(self) -> None:
        super().__init__()
        self.family, self.model = "gpt", None

    def prepare_model(self, model: nn.Module) -> None:
        self.family, self.model = model.family, model

    @property
    def max_length(self) -> int:
        """The model's context less any prefix a fine-tuning method prepends (prompt tuning)."""
        return self.model.config.block_size - getattr(self.model.prefix, "length", 0)

    def collate(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        if self.family == "t5":
            prompts = [ex["prompt_ids"][: self.max_length - 1] + [tok.eos_id] for ex in examples]
            responses = [ex["response_ids"][: self.max_length - 1] + [tok.eos_id] for ex in examples]
            input_ids = pad(prompts, tok.pad_id)
            return {
                "input_ids": input_ids,
                "attention_mask": (input_ids != tok.pad_id).long(),
                "decoder_input_ids": pad([[tok.pad_id] + r[:-1] for r in responses], tok.pad_id),
                "labels": pad(responses, IGNORE_INDEX),
            }
        inputs, labels = [], []
        for ex in examples:
            response = ex["response_ids"][: self.max_length - 1] + [tok.eos_id]
            prompt = [tok.bos_id, *ex["prompt_ids"]][-(self.max_length + 1 - len(response)) :]  # keep its end
            sequence = prompt + response
            inputs.append(sequence[:-1])
            labels.append([IGNORE_INDEX] * (len(prompt) - 1) + response)
        # right padding: causal attention never lets a real token see the pads after it
        return {"input_ids": pad(inputs, tok.pad_id), "labels": pad(labels, IGNORE_INDEX)}

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        if self.family == "t5":
            logits = model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"])
            tokens = batch["attention_mask"].sum().item() + (batch["labels"] != IGNORE_INDEX).sum().item()
        else:
            logits = model(batch["input_ids"])
            tokens = batch["input_ids"].numel()
        return ObjectiveOutput(token_cross_entropy(logits, batch["labels"]), logits, batch["labels"], int(tokens))

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({"perplexity": Perplexity(ignore_index=IGNORE_INDEX)})

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        tok = self.tokenizer
        device = next(model.parameters()).device
        if self.family == "t5":
            ids = torch.tensor([[*tok.encode(prompt), tok.eos_id]], device=device)
            out = model.generate(ids, max_new_tokens, decoder_start_id=tok.pad_id, eos_id=tok.eos_id, **sampling)
            return tok.decode(out[0].tolist())
        ids = torch.tensor([[tok.bos_id, *tok.encode(prompt)]], device=device)
        out = model.generate(ids, max_new_tokens, eos_id=tok.eos_id, **sampling)
        return tok.decode(out[0, ids.size(1) :].tolist())
