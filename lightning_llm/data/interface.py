"""The one interface every datamodule of a run implements (`data._target_`): what the recipe, DP-SGD, evaluation
and the objectives use of it, declared once instead of looked up attribute by attribute."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_llm.models import LanguageModel
from lightning_llm.objectives import Objective, ObjectiveContext
from lightning_llm.tokenizers import Tokenizer


class LLMDataModule(pl.LightningDataModule, ABC):
    """A datamodule that yields one kind of example (`examples_of`, one of `objectives.EXAMPLES`) for its
    objective, with the tokenizer it trained or was given.

    After `prepare_data` and `setup` (the recipe calls both; Lightning's contract: the first only writes caches, the
    second builds the state on every process; a datamodule may do both in `prepare_data`), it has `tokenizer`,
    `tokenizer_path` (None for a given tokenizer), `tokenizer_trained`, `stats` (results.json's `data`) and
    `train_texts` (the training documents, for memorization and held-out checks). It never configures the
    objective: the recipe does, once, from `objective_context(model)`, before the loaders collate. The recipe may set
    `wrap_train_loader` (DP-SGD's Poisson batches) to replace how training batches are drawn."""

    def __init__(self, objective: Objective, block_size: int, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.objective = objective
        self.block_size, self.batch_size, self.num_workers = block_size, batch_size, num_workers
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_path: Path | None = None
        self.tokenizer_trained: bool | None = None
        self.stats: dict[str, Any] = {}
        self.train_texts: Sequence[str] = []
        self.packing: str | None = None  # how documents share a row (packed text); None: the objective's default
        self.labels: list[str] | None = None  # a labelled task's classes
        self.wrap_train_loader: Callable[[DataLoader], DataLoader] | None = None

    def objective_context(self, model: LanguageModel | None) -> ObjectiveContext:
        """What the objective is configured with from this data (after `setup`) and `model`."""
        labels = tuple(self.labels or ())
        return ObjectiveContext(model=model, tokenizer=self.tokenizer, packing=self.packing, labels=labels)

    @classmethod
    @abstractmethod
    def examples_of(cls, settings: Mapping[str, Any]) -> str:
        """The kind of examples (a key of `objectives.EXAMPLES`) a datamodule with these settings (its data
        config) yields: known before anything loads, so that an objective that cannot train on them is refused."""

    @classmethod
    @abstractmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """A one-line ConfigError for settings (its data config) it cannot take, before anything loads; the
        constructor checks the same."""

    @abstractmethod
    def prepare_data(self) -> None:
        """Load, split, train or reuse the tokenizer, tokenize. Cached; safe to call twice."""

    @abstractmethod
    def fit_context(self, model: LanguageModel) -> None:
        """Make the examples fit the model's usable context (a prompt-tuning prefix takes some of it)."""

    @abstractmethod
    def train_examples(self) -> Dataset:
        """The training split, one example per index: what an epoch draws and DP-SGD's Poisson batches sample."""

    def val_examples(self) -> Dataset:
        """The validation split, one example per index (data of examples, not of packed text)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no validation examples")

    def rows_per_batch(self, tokens_per_row: int) -> int:
        """How many rows of `tokens_per_row` tokens one of its batches holds (data.batch_size, or fewer under a
        bound on a batch's tokens): what a probe beside the run (forgetting) reads at once."""
        return self.batch_size

    def sample_prompts(self, count: int) -> list[str]:
        """Up to `count` held-out prompts in the task's own format (as its training rows render them), for the
        samples a run writes; none of its own (text to continue): the sample callback's prompt."""
        return []

    @abstractmethod
    def _train_loader(self) -> DataLoader:
        """The shuffled training batches, before `wrap_train_loader`."""

    @property
    def source_names(self) -> list[str]:
        """The sources training draws from (a mixture's names; one unnamed source otherwise)."""
        return [""]

    @property
    def train_rows(self) -> int:
        """How many examples the training split has (what one epoch draws)."""
        return len(self.train_examples())

    def first_train_rows(self, rows: int) -> dict[str, torch.Tensor]:
        """The first `rows` training examples, collated as a training batch (for checks before training)."""
        examples = self.train_examples()
        return self.objective.collate([examples[i] for i in range(min(rows, len(examples)))])

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    def train_dataloader(self) -> DataLoader:
        """The training batches; `wrap_train_loader` (set by the recipe) may replace how they are drawn."""
        loader = self._train_loader()
        return self.wrap_train_loader(loader) if self.wrap_train_loader is not None else loader
