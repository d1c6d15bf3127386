"""Sequence classification: a linear head on the model's classification features (an encoder's pooled output,
a decoder's last real token)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lightning_llm.objectives.base import Objective, ObjectiveContext, ObjectiveOutput
from lightning_llm.tokenizers import pad_rows


class SequenceClassification(Objective):
    """Examples carry `prompt_ids` and a class index `label`; cross-entropy over the classes."""

    architectures = ("encoder", "decoder")
    examples = "labelled"

    def configure(self, context: ObjectiveContext) -> None:
        """Attach a task head (`model.task_head`) of one output per class, which trains under every fine-tuning
        method; without labels the model's own head serves (evaluating a fine-tuned model)."""
        super().configure(context)
        if context.labels and context.model is not None:
            context.model.attach_task_head(len(context.labels))

    @property
    def labels(self) -> tuple[str, ...]:
        """The task's class names, in the order of the head's outputs."""
        return self.context.labels

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows = [[*tok.sequence_start, *ex["prompt_ids"][: self.max_length - 2], tok.eos_id] for ex in examples]
        input_ids = pad_rows(rows, tok.pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != tok.pad_id).long(),
            "labels": torch.tensor([ex["label"] for ex in examples], dtype=torch.long),
        }

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        mask = batch["attention_mask"]
        hidden = model.encode(batch["input_ids"], mask)
        logits = model.task_head(model.classification_features(hidden, mask))
        loss = F.cross_entropy(logits.float(), batch["labels"])
        return ObjectiveOutput(loss, logits, batch["labels"], int(mask.sum().item()))

    def metrics(self, vocab_size: int) -> MetricCollection:
        n = max(2, len(self.labels))
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes=n, average="micro"),
                "f1_macro": MulticlassF1Score(num_classes=n, average="macro"),
            }
        )

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        """The predicted class of `prompt`."""
        batch = self.collate([{"prompt_ids": self.tokenizer.encode(prompt), "label": 0}])
        device = next(model.parameters()).device
        with torch.no_grad():
            out = self.forward(model, {k: v.to(device) for k, v in batch.items()})
        return f"{prompt!r} -> {self.labels[int(out.logits.argmax(-1))]}"
