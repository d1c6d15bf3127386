"""What the datamodules of examples (supervised pairs, conversations, classes, preference pairs) share: their
training and validation batches, by rows (`data.batch_size`) or bounded by tokens (`data.max_tokens`: rows of
similar length together, each batch padded to its longest row), and held-out prompts for the run's samples.

`data.max_tokens=auto` (the default) bounds batches at AUTO_MAX_TOKENS when fine-tuning an imported model
(`model.pretrained`), whose rows may be as long as its whole context (8,192 tokens for a 135M model), and keeps
batches of `data.batch_size` rows otherwise; a number bounds any run, null never."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from lightning_llm.data.fingerprint import fingerprint, source_key
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.data.sampling import TokenBudgetSampler, fixed_batches, sorted_token_batches, train_loader
from lightning_llm.errors import ConfigError

log = logging.getLogger(__name__)

#: data.max_tokens=auto when fine-tuning an imported model: padded tokens per batch (a 135M model's LoRA step at
#: this size peaks at 3.5 GB of memory, 5.8 GB at 2048; bench/finetune_135m.py)
AUTO_MAX_TOKENS = 1024
#: held-out prompts kept for the run's samples
SAMPLE_PROMPTS = 8


def check_max_tokens(value: Any) -> None:
    """data.max_tokens is a positive number of tokens, auto or null."""
    if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return
    raise ConfigError(
        f"data.max_tokens={value!r} must be a positive number of tokens per batch, auto (a bound when fine-tuning an "
        "imported model) or null (batches of data.batch_size rows)"
    )


def resolve_max_tokens(data: Mapping[str, Any], imported: bool) -> dict[str, Any]:
    """The `max_tokens` a datamodule of these settings is built with (none for data without the key): auto is
    AUTO_MAX_TOKENS when fine-tuning an imported model, else no bound."""
    if "max_tokens" not in data:
        return {}
    value = data.get("max_tokens")
    check_max_tokens(value)
    if value == "auto":
        return {"max_tokens": AUTO_MAX_TOKENS if imported else None}
    return {"max_tokens": value}


def table_key(path: str, name: str | None, split: str, cache_dir: Path) -> str:
    """The key of a table as `load_rows` reads it for a task of examples: data.path (its files' sizes and times, or
    its Hub commit), data.name and data.split."""
    return source_key(path, {"name": name, "split": split, "read": "rows"}, cache_dir)


def list_lengths(part, column: str) -> np.ndarray:
    """Each row's number of ids in a list column of a `datasets` table (without reading the ids into Python)."""
    return pc.list_value_length(part.with_format("arrow")[column]).to_numpy(zero_copy_only=False).astype(np.int64)


class ExampleDataModule(LLMDataModule):
    """A datamodule of examples kept in `_examples` ("train", "val": tokenized `datasets` tables), batched by rows or
    by tokens; subclasses say how long a row is once collated (`row_lengths`) and how many rows of the model an
    example makes (`copies`: two for a preference pair)."""

    copies = 1

    def __init__(
        self,
        objective,
        block_size: int,
        batch_size: int,
        num_workers: int,
        max_tokens: Any,
        split: tuple[float, int, int | None],
        cache_dir: str,
    ) -> None:
        check_max_tokens(max_tokens)
        super().__init__(objective, block_size, batch_size, num_workers)
        self.val_fraction, self.split_seed, self.max_examples = split  # the split's settings; examples kept
        self.cache_dir = Path(cache_dir)
        self.max_tokens: int | None = None if max_tokens == "auto" else max_tokens
        self._examples: dict[str, Any] = {}
        self._lengths: dict[str, np.ndarray] = {}
        self._val_batches: list | None = None
        self._sample_prompts: list[str] = []

    def first_examples(self, ds, key: str) -> tuple[Any, str]:
        """The first data.max_examples rows of `ds` (keyed `key`; all of them without a limit), and their key."""
        if not self.max_examples:
            return ds, key
        key = fingerprint(key, "first", self.max_examples)
        return ds.select(range(min(self.max_examples, len(ds))), new_fingerprint=key), key

    def split_keys(self, key: str) -> dict[str, str]:
        """The key of each part ("train", "val") of the split of the rows keyed `key`: data.val_fraction and
        data.split_seed choose its rows."""
        split = fingerprint(key, "split", self.val_fraction, self.split_seed)
        return {part: fingerprint(split, part) for part in ("train", "val")}

    def row_lengths(self, part) -> np.ndarray:
        """The tokens each example's longest row of the model holds once collated (before the context's cut)."""
        raise NotImplementedError

    def lengths(self, split: str) -> np.ndarray:
        """Each example's row length in a split, at most the context."""
        if split not in self._lengths:
            start = len(getattr(self.tokenizer, "sequence_start", []) or [])
            self._lengths[split] = np.minimum(self.row_lengths(self._examples[split]) + start + 1, self.block_size)
        return self._lengths[split]

    def describe_batches(self) -> None:
        """One log line: how batches are made, and the rows' lengths they are made of."""
        lengths = self.lengths("train")
        if not len(lengths):
            return
        low, median, high = (int(v) for v in np.percentile(lengths, [0, 50, 100]))
        self.stats["row_tokens"] = {"min": low, "median": median, "max": high}
        if self.max_tokens:
            log.info(
                "batches: up to %d rows of similar length and at most %d padded tokens each (data.batch_size, "
                "data.max_tokens; auto: %d when fine-tuning an imported model); rows %d-%d tokens, median %d",
                self.batch_size, self.max_tokens, AUTO_MAX_TOKENS, low, high, median,
            )  # fmt: skip
        elif high * self.batch_size * self.copies > AUTO_MAX_TOKENS:
            log.info(
                "batches: %d rows each, padded to their longest (rows %d-%d tokens, median %d): data.max_tokens=N "
                "bounds their tokens", self.batch_size, low, high, median,
            )  # fmt: skip

    def batch_shape(self) -> tuple[int, int]:
        """(rows, tokens per row) of the largest padded training batch an epoch makes: what a step's memory and
        compute follow (estimate=true)."""
        lengths = self.lengths("train")
        if self.max_tokens:
            sampler = TokenBudgetSampler(lengths, self.max_tokens, self.batch_size, 0, self.copies)
            batches = sampler.epoch_batches()
        else:
            starts = range(0, len(lengths), self.batch_size)
            batches = [list(range(i, min(i + self.batch_size, len(lengths)))) for i in starts]
        rows, longest = max(((len(b), int(lengths[b].max())) for b in batches), key=lambda s: s[0] * s[1])
        return rows * self.copies, longest

    def rows_per_batch(self, tokens_per_row: int) -> int:
        if not self.max_tokens:
            return self.batch_size
        return max(1, min(self.batch_size, self.max_tokens // max(1, tokens_per_row)))

    def keep_sample_prompts(self, prompts: list[str]) -> None:
        """The validation split's first prompts, as the training rows render them."""
        self._sample_prompts = [p for p in prompts[:SAMPLE_PROMPTS] if p]

    def sample_prompts(self, count: int) -> list[str]:
        return self._sample_prompts[:count]

    def train_examples(self):
        return self._examples["train"]

    def val_examples(self):
        """The validation split, one example per index."""
        return self._examples["val"]

    def _train_loader(self) -> DataLoader:
        sampler = None
        if self.max_tokens:
            seed = torch.initial_seed() % 2**31
            sampler = TokenBudgetSampler(self.lengths("train"), self.max_tokens, self.batch_size, seed, self.copies)
        return train_loader(self, self._examples["train"], self.objective.collate, sampler)

    def val_dataloader(self) -> DataLoader:
        if self._val_batches is None:
            val = self._examples["val"]
            rows = None
            if self.max_tokens:
                rows = sorted_token_batches(
                    self.lengths("val"), self.max_tokens, self.batch_size, self.split_seed, self.copies
                )
            self._val_batches = fixed_batches(val, self.objective.collate, self.batch_size, self.split_seed, rows)
        return DataLoader(self._val_batches, batch_size=None, shuffle=False)
