"""The objective interface: how packed token blocks become inputs, labels and a loss."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.tokenizers import Tokenizer

IGNORE_INDEX = -100

#: The kinds of examples a datamodule yields (`LLMDataModule.examples_of`) and an objective trains on
#: (`Objective.examples`); a run whose two differ is refused before anything loads.
EXAMPLES = {
    "text": "packed blocks of text",
    "pairs": "(prompt, response) pairs",
    "labelled": "(text, class) examples",
    "preferences": "(prompt, chosen, rejected) triples",
    "judged": "(prompt, completion, desirable or not) examples",
}


@dataclass
class ObjectiveOutput:
    """What one step of an objective produces (logits and labels as the objective's metrics take them)."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    num_tokens: int  # tokens the model read in this batch
    #: Further scalars of the step, logged as `train/<name>` and `val/<name>` (e.g. `rewards/margins`)
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Rows of the batch, each step's weight in an epoch's mean (None: the labels' first dimension; an objective
    #: that returns only the scored positions, as one row, says how many rows they came from)
    rows: int | None = None

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = self.labels.size(0)


@dataclass(frozen=True, kw_only=True)
class ObjectiveContext:
    """What an objective is configured with, once (`Objective.configure`), from what the data and the model provide:
    the model (built, its weights not loaded yet: a task head attaches now), the tokenizer the data was tokenized
    with, how documents share a row (`data.packing`; None: the objective's default) and a labelled task's classes
    (a head of that many outputs; none: the model's own head serves, as when evaluating a fine-tuned one). A tool
    that only collates (a test, a benchmark) may leave the model out; an estimate that never collates, the
    tokenizer."""

    model: LanguageModel | None = None
    tokenizer: Tokenizer | None = None
    packing: str | None = None
    labels: tuple[str, ...] = ()


class Objective:
    """Base class: one datamodule serves every objective; each decides collation, labels and loss.

    An objective is configured once, by `configure(ObjectiveContext(...))` (the recipe's `setup_model`), before it
    collates or computes anything; the datamodule only reads what it declares (`special_tokens`, `block_layout`)
    and calls `collate` from its loaders."""

    #: Model architectures this objective can train (`LanguageModel.architecture`; checked at start-up).
    architectures: tuple[str, ...] = ()
    #: The examples it collates (a key of EXAMPLES).
    examples: str = "text"
    #: How documents may share a row (`data.packing`, see `objectives.packing`); the first is the default.
    packings: tuple[str, ...] = ("concat",)

    def __init__(self) -> None:
        self._context: ObjectiveContext | None = None
        # DP-SGD sets it: the loss is the mean over rows of each row's own mean, so that no row's gradient depends
        # on the other rows of its batch (a mean over all tokens weighs a row by its share of them)
        self.per_row_loss = False

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Tokens the tokenizer must reserve for this objective (after pad, unk, bos, eos)."""
        return ()

    def configure(self, context: ObjectiveContext) -> None:
        """Take the model, tokenizer, packing and labels, once; a subclass extends it (to attach a task head)."""
        name = type(self).__name__
        if self._context is not None:
            raise RuntimeError(f"objective {name} is configured already: configure it once, with everything")
        packing = context.packing or self.packings[0]
        if packing not in self.packings:
            allowed = list(self.packings)
            raise ConfigError(f"data.packing={packing!r} does not fit objective {name}: use one of {allowed}")
        self._context = replace(context, packing=packing)

    @property
    def context(self) -> ObjectiveContext:
        """What `configure` was given (its packing resolved to the objective's default when none was)."""
        if self._context is None:
            raise RuntimeError(
                f"objective {type(self).__name__} is not configured: call objective.configure(ObjectiveContext(model="
                "..., tokenizer=..., packing=..., labels=...)) before it collates (the recipe does, in setup_model)"
            )
        return self._context

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the data it collates (`ObjectiveContext.tokenizer`)."""
        if self.context.tokenizer is None:
            raise RuntimeError(f"objective {type(self).__name__} was configured without a tokenizer")
        return self.context.tokenizer

    @property
    def model(self) -> LanguageModel:
        """The model it trains (`ObjectiveContext.model`)."""
        if self.context.model is None:
            raise RuntimeError(f"objective {type(self).__name__} was configured without a model")
        return self.context.model

    @property
    def packing(self) -> str:
        """How documents share a row (`data.packing`)."""
        return self.context.packing

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

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the objective's own state (e.g. GRPO's sampler RNG); tensors and plain data."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` from a checkpoint (before the first step of a resumed run)."""

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        """Show what the model learned on `prompt` (a continuation, filled masks or spans)."""
        raise NotImplementedError


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, per_row: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not IGNORE_INDEX (`per_row`: see `row_mean`)."""
    if not per_row:
        return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
    flat = labels.flatten()
    scored = flat != IGNORE_INDEX
    losses = F.cross_entropy(logits.flatten(0, -2)[scored].float(), flat[scored], reduction="none")
    row_of = torch.arange(labels.size(0), device=labels.device).repeat_interleave(flat.numel() // labels.size(0))
    return row_mean(losses, row_of[scored], labels.size(0))


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's summed log-probability of its labelled tokens, and how many there are (positions whose label is
    IGNORE_INDEX count neither)."""
    flat = logits.flatten(0, -2).float()
    token = -F.cross_entropy(flat, labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    scored = labels != IGNORE_INDEX
    return token.view_as(labels).sum(-1), scored.sum(-1)


def row_mean(losses: torch.Tensor, row_of: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The mean over `num_rows` rows of each row's mean loss (`row_of`: each loss's row; a row without any counts
    0), what DP-SGD's per-row clipping assumes a batch's loss to be."""
    sums = losses.new_zeros(num_rows).index_add(0, row_of, losses)
    return (sums / torch.bincount(row_of, minlength=num_rows).clamp(min=1)).mean()
