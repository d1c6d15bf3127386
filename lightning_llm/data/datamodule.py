"""One datamodule for every objective: load text, train/reuse the tokenizer, tokenize, pack, split."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_llm.data.loading import (
    check_loader_settings,
    check_window_settings,
    load_rows,
    read_texts,
    select_columns,
    split_tail,
    split_train_val,
)
from lightning_llm.data.pipeline import apply_pipeline
from lightning_llm.data.sampling import (
    DocumentRows,
    PackedBlocks,
    RandomWindowSampler,
    WindowsAt,
    fixed_batches,
    train_loader,
)
from lightning_llm.errors import ConfigError
from lightning_llm.log import get_logger
from lightning_llm.models import LanguageModel
from lightning_llm.objectives import Objective
from lightning_llm.tokenizers import Tokenizer, train_or_load_tokenizer

log = get_logger(__name__)


def resolve_tokenizer(
    tokenizer: dict[str, Any] | Tokenizer,
    texts: list[str],
    fingerprint: str,
    objective: Objective,
    cache_dir: Path,
) -> tuple[Tokenizer, Path | None, bool]:
    """A given tokenizer (e.g. a pretrained checkpoint's), or one trained on `texts` (cached by config and data).

    Returns the tokenizer, its file and whether it was trained now.
    """
    if isinstance(tokenizer, Tokenizer):
        missing = [t for t in objective.special_tokens if not tokenizer.has_token(t)]
        if missing:
            raise ConfigError(f"the pretrained tokenizer lacks the objective's special token {missing[0]!r}")
        return tokenizer, None, False
    return train_or_load_tokenizer(
        texts=texts,
        special_tokens=tuple(objective.special_tokens),
        data_fingerprint=fingerprint,
        cache_dir=cache_dir,
        **tokenizer,
    )


class TextDataModule(pl.LightningDataModule):
    """Text from a local file/folder, a `datasets` name or an embedded corpus, packed for an objective."""

    def __init__(
        self,
        objective: Objective,
        tokenizer: dict[str, Any] | Tokenizer,
        path: str = "embedded:python_docs",
        name: str | None = None,
        split: str = "train",
        text_column: str = "text",
        sample_by: str = "document",
        block_size: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        split_seed: int = 1234,
        holdout: str = "documents",
        val_path: str | None = None,
        windows: str = "grid",
        packing: str = "concat",
        max_documents: int | None = None,
        pipeline: list[str | dict] | None = None,
        pipeline_settings: dict[str, dict] | None = None,
        decontaminate_paths: list[str] | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str = ".cache/lightning-llm",
    ) -> None:
        super().__init__()
        check_loader_settings(batch_size, block_size, val_fraction, num_workers)
        self.objective = objective
        self.tokenizer_config = tokenizer if isinstance(tokenizer, Tokenizer) else dict(tokenizer)
        self.path, self.name, self.split, self.text_column = str(path), name, split, text_column
        self.sample_by = sample_by
        self.block_size, self.batch_size = block_size, batch_size
        self.val_fraction, self.split_seed, self.max_documents = val_fraction, split_seed, max_documents
        if holdout not in ("documents", "tail"):
            raise ConfigError(f"data.holdout={holdout!r} is unknown: use documents or tail")
        check_window_settings(windows, packing)
        objective.bind_packing(packing)
        self.holdout, self.val_path, self.windows, self.packing = holdout, val_path, windows, packing
        self.pipeline, self.pipeline_settings = list(pipeline or []), dict(pipeline_settings or {})
        self.decontaminate_paths = list(decontaminate_paths or [])
        self.num_workers, self.num_proc = num_workers, num_proc
        self.cache_dir = Path(cache_dir)
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_path: Path | None = None
        self.tokenizer_trained: bool | None = None
        self.stats: dict[str, Any] = {}
        self._tokens: dict[str, torch.Tensor] = {}
        self._val_batches: list[dict[str, torch.Tensor]] | None = None
        self.train_texts: list[str] = []  # the training documents (for memorization tests)

    # -- loading -----------------------------------------------------------------------------
    def _load_texts(self, path: str, key: str):
        ds = load_rows(path, self.name, self.split, self.cache_dir, self.sample_by)
        ds = select_columns(ds, {"text": self.text_column}, path, key_prefix="data.text_column")
        ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
        if len(ds) == 0:
            raise ConfigError(f"{key}={path!r} has no text in column {self.text_column!r}: the corpus is empty")
        return ds

    def _load_raw(self):
        ds = self._load_texts(self.path, "data.path")
        if self.max_documents:
            ds = ds.select(range(min(self.max_documents, len(ds))))
        if self.pipeline:
            eval_texts = [t for path in self.decontaminate_paths for t in read_texts(path)]
            ds, self.stats["pipeline"] = apply_pipeline(
                ds, self.pipeline, self.pipeline_settings, num_proc=self.num_proc, decontaminate_against=eval_texts
            )
            if len(ds) == 0:
                raise ConfigError(f"data.pipeline removed every document of {self.path!r}: relax its settings")
        return ds

    # -- Lightning hooks ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Load, split, train or reuse the tokenizer, tokenize and pack. Cached; safe to call twice."""
        if self._tokens:
            return
        train, val = self._split(self._load_raw())
        self.train_texts = list(train["text"])

        self.tokenizer, self.tokenizer_path, self.tokenizer_trained = resolve_tokenizer(
            self.tokenizer_config, train["text"], train._fingerprint, self.objective, self.cache_dir
        )
        self.objective.bind_tokenizer(self.tokenizer)
        self.stats.update(documents={"train": len(train), "val": len(val)}, tokens={}, blocks={})
        self.stats["characters"] = {
            name: int(sum(len(t) for t in part["text"])) for name, part in (("train", train), ("val", val))
        }
        tokenizer_key = hashlib.sha256(self.tokenizer.to_bytes()).hexdigest()[:16]
        for name, part in (("train", train), ("val", val)):
            tokens = self._tokenize(part, tokenizer_key)
            self._tokens[name] = tokens
            self.stats["tokens"][name] = len(tokens)
            self.stats["blocks"][name] = len(self._dataset(name))
        self.stats["vocab_size"] = self.tokenizer.vocab_size
        self.stats["chars_per_token"] = round(
            self.stats["characters"]["train"] / max(1, self.stats["tokens"]["train"]), 3
        )
        if self.stats["blocks"]["val"] == 0 or self.stats["blocks"]["train"] == 0:
            raise ConfigError(
                f"data.block_size={self.block_size} is longer than the {min(self.stats['tokens'].values())} tokens "
                f"of the smallest split of {self.path!r}: lower data.block_size or add text"
            )

    def _split(self, ds):
        """(train, val): a separate validation file, the contiguous tail, or held-out documents."""
        if self.val_path:
            return ds, self._load_texts(self.val_path, "data.val_path")
        if self.holdout == "tail":
            return split_tail(ds, self.val_fraction, self.path)
        return split_train_val(ds, self.val_fraction, self.split_seed, self.path)

    def _tokenize(self, part, tokenizer_key: str) -> torch.Tensor:
        """Tokenize with `datasets.map` (cached by fingerprint); join documents with eos, in order."""
        tokenizer = self.tokenizer
        eos = tokenizer.eos_id

        def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
            return {"input_ids": [ids + [eos] for ids in tokenizer.encode_batch(batch["text"])]}

        fingerprint = hashlib.sha256(f"{part._fingerprint}-{tokenizer_key}".encode()).hexdigest()[:32]
        tokenized = part.map(
            encode,
            batched=True,
            remove_columns=part.column_names,
            new_fingerprint=fingerprint,
            num_proc=self.num_proc,
            desc="tokenize",
        )
        dtype = np.int32 if tokenizer.vocab_size >= 2**15 else np.int16
        arrays = tokenized.with_format("numpy")["input_ids"]
        return torch.from_numpy(np.concatenate(list(arrays)).astype(dtype))

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    def fit_context(self, model: LanguageModel) -> None:
        """Packed blocks must fit the model's context once a prefix (prompt tuning) has taken its positions.

        A block as long as the model's context (the default) shrinks by the prefix, and says so; a shorter block
        chosen explicitly that still does not fit is an error naming the size that would."""
        usable, block = model.context_length, self.block_size
        if block <= usable:
            return
        if block != model.config.block_size:
            raise ConfigError(
                f"data.block_size={block} plus {model.prefix_length} prefix tokens exceeds model.block_size="
                f"{model.config.block_size}: set data.block_size={usable}"
            )
        log.info(
            "data.block_size %d -> %d: the prefix (prompt tuning) takes %d positions", block, usable, block - usable
        )
        self.block_size = usable
        self.stats["blocks"] = {name: len(self._dataset(name)) for name in self._tokens}

    def _dataset(self, split: str) -> PackedBlocks | DocumentRows:
        """Packed windows on the grid, or (data.packing=pad) one document per row."""
        length, stride = self.objective.block_layout(self.block_size)
        if self.packing == "pad":
            return DocumentRows(self._tokens[split], self.tokenizer.eos_id, length, stride)
        return PackedBlocks(self._tokens[split], length, stride)

    def train_dataloader(self) -> DataLoader:
        """Shuffled packed windows: on the fixed grid, or (data.windows=random) at random offsets, as many per
        epoch as the grid has."""
        if self.windows == "grid":
            return train_loader(self, self._dataset("train"), self.objective.collate)
        length, _ = self.objective.block_layout(self.block_size)
        tokens = self._tokens["train"]
        sampler = RandomWindowSampler(len(tokens), length, len(self._dataset("train")), torch.initial_seed() % 2**31)
        return train_loader(self, WindowsAt(tokens, length), self.objective.collate, sampler)

    def val_dataloader(self) -> DataLoader:
        """Validation batches are collated once under a fixed seed, so random masks or spans are the same
        at every evaluation and val losses compare across steps and runs."""
        if self._val_batches is None:
            self._val_batches = fixed_batches(
                self._dataset("val"), self.objective.collate, self.batch_size, self.split_seed
            )
        return DataLoader(self._val_batches, batch_size=None, shuffle=False)
