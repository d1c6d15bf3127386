"""The objective interface: how packed token blocks become inputs, labels and a loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

IGNORE_INDEX = -100


@dataclass
class ObjectiveOutput:
    """What one step of an objective produces."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    num_tokens: int  # tokens the model read in this batch


class Objective:
    """Base class: one datamodule serves every objective; each decides collation, labels and loss."""

    #: Model families this objective can train (checked at start-up).
    model_families: tuple[str, ...] = ()
    #: Special tokens the tokenizer must provide for this objective.
    special_tokens: tuple[str, ...] = ()

    def block_layout(self, block_size: int) -> tuple[int, int]:
        """(length, stride) of the packed windows one example is cut from, for a context of `block_size`."""
        return block_size, block_size

    def collate(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn a list of packed blocks into a batch."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """Run the model on a batch and compute the loss."""
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        """Validation metrics, updated with (logits, labels)."""
        return MetricCollection({})


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not IGNORE_INDEX."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
