"""The sampler of a packed-text run: rows from the token store, and the loaders that draw them.

Rows are windows of the objective's block layout: on a fixed grid, at random offsets (`data.windows=random`,
nanoGPT's sampler), or one document per row (`data.packing=pad`); `doc_mask` packing is the objective's collate
over grid windows. A mixture (`data.sources`) draws each training row's source by weight and validates each source
on its own batches. Shards stream their blocks through LitData instead. DP-SGD's Poisson batches replace the
training loader's draws (`LLMDataModule.wrap_train_loader`) over `examples("train")`.
"""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_llm.data.mixture import MixedRows, MixtureSampler, collate_with_sources
from lightning_llm.data.sampling import (
    DocumentRows,
    PackedBlocks,
    RandomWindowSampler,
    WindowsAt,
    fixed_batches,
    train_loader,
)
from lightning_llm.data.token_store import TokenStore
from lightning_llm.errors import ConfigError
from lightning_llm.objectives import Objective


class RowSampler:
    """Rows of `block_size` (the objective's layout of it) from a token store's sources, weighted by `weights`."""

    def __init__(
        self,
        store: TokenStore,
        objective: Objective,
        eos_id: int,
        weights: list[float],
        windows: str = "grid",
        packing: str = "concat",
        split_seed: int = 1234,
    ) -> None:
        self.store, self.objective, self.eos_id, self.weights = store, objective, eos_id, weights
        self.windows, self.packing, self.split_seed = windows, packing, split_seed
        self._val_batches: dict[tuple[int, int], list[dict[str, torch.Tensor]]] = {}

    @property
    def mixed(self) -> bool:
        return len(self.weights) > 1

    def _rows(self, tokens: torch.Tensor, block_size: int) -> PackedBlocks | DocumentRows:
        """Packed windows on the grid, or (data.packing=pad) one document per row."""
        length, stride = self.objective.block_layout(block_size)
        if self.packing == "pad":
            return DocumentRows(tokens, self.eos_id, length, stride)
        return PackedBlocks(tokens, length, stride)

    def source_rows(self, split: str, block_size: int) -> list[PackedBlocks | DocumentRows]:
        """Every source's rows of one split (tokens in memory)."""
        return [self._rows(tokens, block_size) for tokens in self.store.tokens[split]]

    def examples(self, split: str, block_size: int) -> Dataset:
        """One source's rows, or every source's (a mixture: items are (row, source index))."""
        parts = self.source_rows(split, block_size)
        return MixedRows(parts) if self.mixed else parts[0]

    def block_counts(self, block_size: int) -> dict[str, int]:
        """Training and validation examples (blocks, or rows of one document) per split."""
        if self.store.shards is not None:
            length, _ = self.objective.block_layout(block_size)
            return {split: self.store.shards.blocks(split, length) for split in ("train", "val")}
        return {split: len(self.examples(split, block_size)) for split in ("train", "val")}

    def check_blocks(self, block_size: int, paths: dict[str, str]) -> None:
        """Every split of every source (`paths`: name -> its path, for the message) holds at least one block."""
        length, _ = self.objective.block_layout(block_size)
        for split in ("train", "val"):
            if self.store.shards is not None:
                counts = [self.store.counts[name]["tokens"][split] // length for name in paths]
            else:
                counts = [len(rows) for rows in self.source_rows(split, block_size)]
            for (name, path), blocks in zip(paths.items(), counts, strict=True):
                if blocks == 0:
                    tokens = self.store.counts[name]["tokens"][split]
                    raise ConfigError(
                        f"data.block_size={block_size} is longer than the {tokens} tokens of the {split} split "
                        f"of {path!r}: lower data.block_size or add text"
                    )

    def train_loader(self, datamodule) -> DataLoader:
        """Shuffled rows: on the fixed grid, or (data.windows=random) at random offsets, as many per epoch as the
        grid has; a mixture draws each row's source by weight. `datamodule` gives the batch size, workers and
        the trainer (a resumed epoch continues where it stopped)."""
        seed = torch.initial_seed() % 2**31
        block_size = datamodule.block_size
        length, _ = self.objective.block_layout(block_size)
        collate = collate_with_sources(self.objective.collate) if self.mixed else self.objective.collate
        if self.store.shards is not None:
            return self.store.shards.train_loader(length, datamodule.batch_size, collate, seed, self.weights)
        grid = len(self.examples("train", block_size))
        parts = self.source_rows("train", block_size)
        if self.windows == "random":
            parts = [WindowsAt(tokens, length) for tokens in self.store.tokens["train"]]
        if self.mixed:
            sampler = MixtureSampler([len(part) for part in parts], self.weights, seed, num_examples=grid)
            return train_loader(datamodule, MixedRows(parts), collate, sampler)
        if self.windows == "grid":
            return train_loader(datamodule, parts[0], collate)
        sampler = RandomWindowSampler(len(self.store.tokens["train"][0]), length, grid, seed)
        return train_loader(datamodule, parts[0], collate, sampler)

    def val_loader(self, block_size: int, batch_size: int) -> DataLoader:
        """Validation batches are collated once under a fixed seed, so random masks or spans are the same at every
        evaluation and val losses compare across steps and runs. A mixture validates each source on its own
        batches (they carry `source_ids`: `val/<source>/loss`), taken in turns so that a `limit_val_batches` still
        sees every source. Shards stream their validation blocks instead."""
        if self.store.shards is not None:
            length, _ = self.objective.block_layout(block_size)
            return self.store.shards.val_loader(length, batch_size, self.objective.collate, self.split_seed)
        if (block_size, batch_size) not in self._val_batches:
            per_source = []
            for index, rows in enumerate(self.source_rows("val", block_size)):
                batches = fixed_batches(rows, self.objective.collate, batch_size, self.split_seed)
                if self.mixed:
                    for batch in batches:
                        batch["source_ids"] = torch.full((len(batch["input_ids"]),), index)
                per_source.append(batches)
            turns = itertools.zip_longest(*per_source)
            self._val_batches[block_size, batch_size] = [b for turn in turns for b in turn if b is not None]
        return DataLoader(self._val_batches[block_size, batch_size], batch_size=None, shuffle=False)
