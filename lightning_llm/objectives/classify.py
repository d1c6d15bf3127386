"""Sequence classification: a linear head on BERT's pooled output or on GPT's last real token."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lightning_llm.finetune.base import TASK_HEAD
from lightning_llm.objectives.base import Objective, ObjectiveOutput
from lightning_llm.objectives.sft import pad


class SequenceClassification(Objective):
    """Examples carry `prompt_ids` and a class index `label`; cross-entropy over the classes."""

    model_families = ("bert", "gpt")

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self.family, self.model = "bert", None

    def bind_labels(self, labels: list[str] | None) -> None:
        self.labels = list(labels or [])

    def prepare_model(self, model: nn.Module) -> None:
        """Attach the task head (`model.task_head`), which trains under every fine-tuning method."""
        self.family, self.model = model.family, model
        if not self.labels:
            raise RuntimeError("bind_labels must run before prepare_model")
        head = nn.Linear(model.config.n_embd, len(self.labels))
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
        setattr(model, TASK_HEAD, head)

    @property
    def max_length(self) -> int:
        """The model's context less any prefix a fine-tuning method prepends (prompt tuning)."""
        return self.model.config.block_size - getattr(self.model.prefix, "length", 0)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        rows = [[tok.bos_id, *ex["prompt_ids"][: self.max_length - 2], tok.eos_id] for ex in examples]
        input_ids = pad(rows, tok.pad_id)
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != tok.pad_id).long(),
            "labels": torch.tensor([ex["label"] for ex in examples], dtype=torch.long),
        }

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        mask = batch["attention_mask"]
        hidden = model.encode(batch["input_ids"], mask)
        if self.family == "bert":
            features = model.pool(hidden)
        else:  # the last real token has read the whole sequence
            last = mask.sum(dim=1) - 1
            features = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        logits = getattr(model, TASK_HEAD)(features)
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
