"""The objective interface: how packed token blocks become inputs, labels and a loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.tokenizers import Tokenizer

IGNORE_INDEX = -100


@dataclass
class ObjectiveOutput:
    """What one step of an objective produces (logits and labels as the objective's metrics take them)."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    num_tokens: int  # tokens the model read in this batch


class Objective:
    """Base class: one datamodule serves every objective; each decides collation, labels and loss."""

    #: Model architectures this objective can train (`LanguageModel.architecture`; checked at start-up).
    architectures: tuple[str, ...] = ()
    #: How documents may share a row (`data.packing`, see `objectives.packing`); the first is the default.
    packings: tuple[str, ...] = ("concat",)

    def __init__(self) -> None:
        self.tokenizer: Tokenizer | None = None
        self.model: LanguageModel | None = None
        self.packing = self.packings[0]

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Tokens the tokenizer must reserve for this objective (after pad, unk, bos, eos)."""
        return ()

    def bind_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Called once the tokenizer exists, so collation can use its special ids."""
        self.tokenizer = tokenizer

    def bind_packing(self, packing: str) -> None:
        """Called by the datamodule with `data.packing`, so collation lays documents out that way."""
        if packing not in self.packings:
            name, allowed = type(self).__name__, list(self.packings)
            raise ConfigError(f"data.packing={packing!r} does not fit objective {name}: use one of {allowed}")
        self.packing = packing

    def bind_labels(self, labels: list[str] | None) -> None:
        """Called by a supervised datamodule with the task's class names (None for generation tasks)."""

    def prepare_model(self, model: LanguageModel) -> None:
        """Called once the model exists, before weights load: e.g. attach a task head."""
        self.model = model

    @property
    def max_length(self) -> int:
        """The tokens one example may hold: the model's context less any prefix (prompt tuning) it has."""
        return self.model.context_length

    @property
    def first_regular_id(self) -> int:
        """The lowest id of an ordinary (non-special) token."""
        return 4 + len(self.special_tokens)

    def block_layout(self, block_size: int) -> tuple[int, int]:
        """(length, stride) of the packed windows one example is cut from, for a context of `block_size`."""
        return block_size, block_size

    def collate(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn a list of packed blocks into a batch (random choices use torch's global RNG)."""
        raise NotImplementedError

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        """Run the model on a batch and compute the loss."""
        raise NotImplementedError

    def metrics(self, vocab_size: int) -> MetricCollection:
        """Validation metrics, updated with (logits, labels) from `forward`."""
        return MetricCollection({})

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        """Show what the model learned on `prompt` (a continuation, filled masks or spans)."""
        raise NotImplementedError


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not IGNORE_INDEX."""
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
