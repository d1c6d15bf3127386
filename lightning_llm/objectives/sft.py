"""Supervised fine-tuning on (prompt, response) pairs: loss on the response tokens only.

A decoder (GPT) reads `<s> prompt response </s>` and predicts the response; an encoder-decoder (T5) encodes
the prompt and its decoder writes the response. A rendered conversation (chat data) is read whole by a decoder,
which predicts the assistant's turns only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.text import Perplexity

from lightning_llm.objectives.base import IGNORE_INDEX, Objective, ObjectiveOutput, token_cross_entropy
from lightning_llm.tokenizers import pad_rows


class SupervisedFineTuning(Objective):
    """Instruction tuning / seq2seq: examples carry `prompt_ids` and `response_ids`."""

    architectures = ("decoder", "encoder-decoder")
    examples = "pairs"

    @property
    def seq2seq(self) -> bool:
        """Whether the prompt goes to an encoder and the response to a decoder."""
        return self.model.architecture == "encoder-decoder"

    def collate(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        if "chat_ids" in examples[0]:
            return self.collate_conversations(examples)
        if self.seq2seq:
            prompts = [ex["prompt_ids"][: self.max_length - 1] + [tok.eos_id] for ex in examples]
            responses = [ex["response_ids"][: self.max_length - 1] + [tok.eos_id] for ex in examples]
            input_ids = pad_rows(prompts, tok.pad_id)
            return {
                "input_ids": input_ids,
                "attention_mask": (input_ids != tok.pad_id).long(),
                "decoder_input_ids": pad_rows([[tok.pad_id] + r[:-1] for r in responses], tok.pad_id),
                "labels": pad_rows(responses, IGNORE_INDEX),
            }
        inputs, labels = [], []
        for ex in examples:
            response = ex["response_ids"][: self.max_length - 1] + [tok.eos_id]
            prompt = [*tok.sequence_start, *ex["prompt_ids"]][-(self.max_length + 1 - len(response)) :]  # its end
            sequence = prompt + response
            inputs.append(sequence[:-1])
            labels.append([IGNORE_INDEX] * (len(prompt) - 1) + response)
        # right padding: causal attention never lets a real token see the pads after it
        return {"input_ids": pad_rows(inputs, tok.pad_id), "labels": pad_rows(labels, IGNORE_INDEX)}

    def collate_conversations(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Rendered conversations (`chat_ids`, `chat_trained`: whether each token is the assistant's): `<s>
        conversation </s>`, cut to the context; the assistant's tokens and the closing eos are the labels."""
        tok = self.tokenizer
        inputs, labels = [], []
        for ex in examples:
            ids = [*tok.sequence_start, *ex["chat_ids"], tok.eos_id][: self.max_length + 1]
            trained = [False] * len(tok.sequence_start) + [bool(k) for k in ex["chat_trained"]] + [True]
            inputs.append(ids[:-1])
            labels.append([t if k else IGNORE_INDEX for t, k in zip(ids[1:], trained[1:], strict=False)])
        return {"input_ids": pad_rows(inputs, tok.pad_id), "labels": pad_rows(labels, IGNORE_INDEX)}

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits for a collated batch (the decoder's, for a seq2seq model)."""
        if self.seq2seq:
            return model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"])
        return model(batch["input_ids"])

    def tokens_read(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the model reads for a collated batch (a seq2seq model: the prompts and the responses)."""
        if self.seq2seq:
            return int(batch["attention_mask"].sum().item() + (batch["labels"] != IGNORE_INDEX).sum().item())
        return batch["input_ids"].numel()

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        if self.seq2seq or self.per_row_loss:  # DP-SGD's per-row gradients want batch-first logits
            logits = self.logits(model, batch)
            loss = token_cross_entropy(logits, batch["labels"], self.per_row_loss)
            return ObjectiveOutput(loss, logits, batch["labels"], self.tokens_read(batch))
        return self.scored_output(model, batch)

    def scored_output(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """A decoder's loss from the logits of the labelled positions only (the responses): a model that selects
        them (`LanguageModel.selects_logits`) runs its LM head there alone; from any other (a wrapper) they are
        picked out of its full logits. The logits and labels come back as one row (1, scored, vocab), (1, scored),
        so the metrics score the same tokens as from the whole batch."""
        labels = batch["labels"]
        scored = labels != IGNORE_INDEX
        if getattr(model, "selects_logits", False):
            logits = model(batch["input_ids"], logits_at=scored)
        else:
            logits = self.logits(model, batch)
        if logits.dim() == 3:  # the hint was not taken
            logits = logits[scored]
        targets = labels[scored]
        loss = token_cross_entropy(logits, targets)
        return ObjectiveOutput(loss, logits[None], targets[None], self.tokens_read(batch), rows=labels.size(0))

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({"perplexity": Perplexity(ignore_index=IGNORE_INDEX)})

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        tok = self.tokenizer
        device = next(model.parameters()).device
        if self.seq2seq:
            ids = torch.tensor([[*tok.encode(prompt), tok.eos_id]], device=device)
            out = model.generate(ids, max_new_tokens, decoder_start_id=tok.pad_id, eos_id=tok.eos_id, **sampling)
            return tok.decode(out[0].tolist())
        ids = torch.tensor([(tok.sequence_start + tok.encode(prompt)) or [tok.eos_id]], device=device)
        out = model.generate(ids, max_new_tokens, eos_id=tok.eos_id, **sampling)
        return tok.decode(out[0, ids.size(1) :].tolist())
