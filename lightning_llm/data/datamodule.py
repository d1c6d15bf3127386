"""One datamodule for every objective: load text, train/reuse the tokenizer, tokenize, pack, split."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_llm.data.canaries import check_canary_settings, insert_canaries, make_canaries
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.data.loading import (
    check_loader_settings,
    check_window_settings,
    load_rows,
    read_texts,
    select_columns,
    split_tail,
    split_train_val,
)
from lightning_llm.data.mixture import MixedRows, MixtureSampler, Source, collate_with_sources, parse_sources
from lightning_llm.data.pipeline import apply_pipeline, check_engine
from lightning_llm.data.sampling import (
    DocumentRows,
    PackedBlocks,
    RandomWindowSampler,
    WindowsAt,
    fixed_batches,
    train_loader,
)
from lightning_llm.data.shards import ShardStore, check_format
from lightning_llm.data.streamed import (
    check_streaming,
    first_characters,
    is_stream,
    split_stream,
    stream_columns,
    stream_key,
    take_documents,
)
from lightning_llm.data.text_files import count_documents, keep_text, releasing_pages, split_pieces
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


class TextDataModule(LLMDataModule):
    """Text from a local file/folder, a `datasets` name or an embedded corpus, packed for an objective."""

    def __init__(
        self,
        objective: Objective,
        tokenizer: dict[str, Any] | Tokenizer,
        path: str | None = "embedded:python_docs",
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
        sources: dict[str, dict[str, Any]] | None = None,
        canaries: dict[str, Any] | None = None,
        format: str = "memory",
        shard_dir: str | None = None,
        streaming: bool = False,
        pipeline: list[str | dict] | None = None,
        pipeline_settings: dict[str, dict] | None = None,
        pipeline_engine: str = "local",
        decontaminate_paths: list[str] | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str = ".cache/lightning-llm",
    ) -> None:
        check_loader_settings(batch_size, block_size, val_fraction, num_workers)
        super().__init__(objective, block_size, batch_size, num_workers)
        self.tokenizer_config = tokenizer if isinstance(tokenizer, Tokenizer) else dict(tokenizer)
        self.path, self.name, self.split, self.text_column = str(path), name, split, text_column
        self.sample_by = sample_by
        self.val_fraction, self.split_seed, self.max_documents = val_fraction, split_seed, max_documents
        self.check_settings({"holdout": holdout, "val_path": val_path, "sources": sources, "canaries": canaries})
        check_window_settings(windows, packing)
        objective.bind_packing(packing)
        self.holdout, self.val_path, self.windows, self.packing = holdout, val_path, windows, packing
        self.sources = parse_sources(sources) or [Source("", self.path)]
        self.pipeline, self.pipeline_settings = list(pipeline or []), dict(pipeline_settings or {})
        check_engine(pipeline_engine)
        self.pipeline_engine = pipeline_engine
        self.decontaminate_paths = list(decontaminate_paths or [])
        self.canaries = dict(canaries or {})
        self.num_proc = num_proc
        self.cache_dir = Path(cache_dir)
        check_format(format, packing, windows, shard_dir)
        check_streaming(streaming, format, holdout, self.pipeline, self.canaries)
        self.streaming = streaming
        self.shards = (
            ShardStore(shard_dir, self.cache_dir, self.source_names, num_proc or os.cpu_count() or 1, num_workers)
            if format == "shards"
            else None
        )
        self._tokens: dict[str, torch.Tensor] = {}  # per split: every source's documents, joined by eos
        self._spans: dict[str, list[tuple[int, int]]] = {}  # per split: where each source lies in _tokens
        self._val_batches: list[dict[str, torch.Tensor]] | None = None
        self._prepared = False

    @classmethod
    def examples_of(cls, settings: Mapping[str, Any]) -> str:
        """Packed text, whatever the settings."""
        return "text"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """`data.holdout`, `data.val_path` beside a mixture, and `data.canaries`."""
        holdout = settings.get("holdout", "documents")
        if holdout not in ("documents", "tail"):
            raise ConfigError(f"data.holdout={holdout!r} is unknown: use documents or tail")
        if len(settings.get("sources") or {}) > 1 and settings.get("val_path"):
            raise ConfigError("data.val_path does not apply to data.sources: each source holds out its val_fraction")
        canaries = dict(settings.get("canaries") or {})
        if canaries.get("n"):
            made = {k: canaries[k] for k in ("n", "repeats", "template", "length", "alphabet")}
            check_canary_settings(**made, key="data.canaries")

    @property
    def mixed(self) -> bool:
        """Whether training draws from several sources by weight (`data.sources`)."""
        return len(self.sources) > 1

    @property
    def source_names(self) -> list[str]:
        return [source.name for source in self.sources]

    # -- loading -----------------------------------------------------------------------------
    def _load_texts(self, path: str, key: str, options: dict[str, Any] | None = None):
        settings = {"name": self.name, "split": self.split, "text_column": self.text_column}
        settings |= {"sample_by": self.sample_by, **(options or {})}
        in_pieces = self.shards is not None
        ds = load_rows(
            path, settings["name"], settings["split"], self.cache_dir, settings["sample_by"], in_pieces, self.streaming
        )
        column = settings["text_column"]
        if is_stream(ds) and next(iter(ds.take(1)), None) is None:
            raise ConfigError(f"{key}={path!r} has no rows: the corpus is empty")
        pieces = [name for name in ("ends_document", "document") if name in stream_columns(ds)]
        ds = select_columns(
            ds, {"text": column} | {name: name for name in pieces}, path, key.replace(".path", ".text_column")
        )
        if not pieces:  # text read in pieces has no blank rows
            ds = ds.filter(keep_text, batched=True)
        if is_stream(ds):
            ds._fingerprint = stream_key(path, settings)
        elif len(ds) == 0:
            raise ConfigError(f"{key}={path!r} has no text in column {column!r}: the corpus is empty")
        return ds

    def _load_raw(self, source: Source):
        ds = self._load_texts(source.path, source.key, source.options)
        if self.max_documents and is_stream(ds):
            ds = take_documents(ds, self.max_documents, source.key)
        elif self.max_documents:
            ds = ds.select(range(min(self.max_documents, len(ds))))
        if self.pipeline:
            eval_texts = [t for path in self.decontaminate_paths for t in read_texts(path)]
            ds, report = apply_pipeline(
                ds,
                self.pipeline,
                self.pipeline_settings,
                num_proc=self.num_proc,
                decontaminate_against=eval_texts,
                engine=self.pipeline_engine,
            )
            self.stats.setdefault("pipeline", {})[source.name] = report
            if len(ds) == 0:
                raise ConfigError(f"data.pipeline removed every document of {source.path!r}: relax its settings")
        return ds

    # -- Lightning hooks ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Load, split, train or reuse the tokenizer, tokenize and pack. Cached; safe to call twice."""
        if self._prepared:
            return
        parts = {source.name: self._split(self._load_raw(source), source) for source in self.sources}
        if self.canaries.get("n"):
            parts = self._plant_canaries(parts)
        train = datasets.concatenate_datasets([part[0] for part in parts.values()])
        if not self.mixed and "pipeline" in self.stats:
            self.stats["pipeline"] = self.stats["pipeline"][""]
        if is_stream(train):  # the tokenizer trains on the stream's opening (a sample would read all of it)
            fingerprint = hashlib.sha256("-".join(part[0]._fingerprint for part in parts.values()).encode())
            fingerprint, cap = fingerprint.hexdigest()[:16], self._tokenizer_characters()
            texts = first_characters((row["text"] for row in train), cap)
        else:
            self.train_texts = train["text"]
            fingerprint, texts = train._fingerprint, releasing_pages(train["text"])
        self.tokenizer, self.tokenizer_path, self.tokenizer_trained = resolve_tokenizer(
            self.tokenizer_config, texts, fingerprint, self.objective, self.cache_dir
        )
        self.objective.bind_tokenizer(self.tokenizer)
        tokenizer_key = hashlib.sha256(self.tokenizer.to_bytes()).hexdigest()[:16]
        self.stats["format"] = "shards" if self.shards is not None else "memory"
        if self.shards is not None:
            cleaning = json.dumps([self.pipeline, self.pipeline_settings], sort_keys=True)
            self.shards.build(parts, self.tokenizer, tokenizer_key, cleaning)
            self.stats["shards"] = self.shards.location
        per_source: dict[str, dict[str, Any]] = {}
        for index, split in enumerate(("train", "val")):
            streams = []
            for name, part in parts.items():
                counts = per_source.setdefault(name, {"documents": {}, "characters": {}, "tokens": {}})
                if self.shards is not None:  # counted while the shards were written
                    for key, value in self.shards.counts[name, split].items():
                        counts[key][split] = value
                    counts["tokens"][split] = self.shards.tokens[name, split]
                    continue
                counts["documents"][split] = count_documents(part[index])
                counts["characters"][split] = int(sum(len(t) for t in part[index]["text"]))
                streams.append(self._tokenize(part[index], tokenizer_key))
                counts["tokens"][split] = len(streams[-1])
            if streams:
                ends = np.cumsum([len(t) for t in streams]).tolist()
                self._spans[split] = list(zip([0, *ends[:-1]], ends, strict=True))
                self._tokens[split] = streams[0] if len(streams) == 1 else torch.cat(streams)
        for key in ("documents", "characters", "tokens"):
            self.stats[key] = {split: sum(c[key][split] for c in per_source.values()) for split in ("train", "val")}
        if self.mixed:
            self.stats["sources"] = per_source
        self.stats["blocks"] = self._block_counts()
        self.stats["vocab_size"] = self.tokenizer.vocab_size
        self.stats["chars_per_token"] = round(
            self.stats["characters"]["train"] / max(1, self.stats["tokens"]["train"]), 3
        )
        self._check_blocks(per_source)
        self._prepared = True

    def _tokenizer_characters(self) -> int:
        """How much text a tokenizer trained here reads (`tokenizer.input_characters`)."""
        config = self.tokenizer_config if isinstance(self.tokenizer_config, dict) else {}
        return int(config.get("input_characters") or 50_000_000)

    def _plant_canaries(self, parts: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
        """Insert `data.canaries` into the first source's training documents (never into validation), with a
        fixed fingerprint so the tokenizer and token caches still find their entries."""
        c = self.canaries
        made = make_canaries(c["n"], c["repeats"], c["seed"], c["template"], c["length"], c["alphabet"])
        name, (train, val) = next(iter(parts.items()))
        texts = insert_canaries(list(train["text"]), made, seed=c["seed"])
        key = hashlib.sha256(f"{train._fingerprint}-canaries-{json.dumps(c, sort_keys=True)}".encode()).hexdigest()
        train = train.map(lambda row, i: {"text": texts[i]}, with_indices=True, new_fingerprint=key[:32])
        self.stats["canaries"] = {"n": c["n"], "repeats": c["repeats"], "source": name or self.path}
        return {**parts, name: (train, val)}

    def _block_counts(self) -> dict[str, int]:
        """Training and validation examples (blocks, or rows of one document) per split."""
        if self.shards is not None:
            length, _ = self.objective.block_layout(self.block_size)
            return {split: self.shards.blocks(split, length) for split in ("train", "val")}
        return {split: len(self._dataset(split)) for split in ("train", "val")}

    def _check_blocks(self, per_source: dict[str, dict[str, Any]]) -> None:
        """Every split of every source must hold at least one block."""
        length, _ = self.objective.block_layout(self.block_size)
        for split in ("train", "val"):
            if self.shards is not None:
                counts = [counts["tokens"][split] // length for counts in per_source.values()]
            else:
                counts = [len(rows) for rows in self._source_rows(split)]
            for source, blocks in zip(self.sources, counts, strict=True):
                if blocks == 0:
                    tokens = per_source[source.name]["tokens"][split]
                    raise ConfigError(
                        f"data.block_size={self.block_size} is longer than the {tokens} tokens of the {split} split "
                        f"of {source.path!r}: lower data.block_size or add text"
                    )

    def _split(self, ds, source: Source):
        """(train, val): a separate validation file, the contiguous tail, or held-out documents."""
        if is_stream(ds):  # held-out documents by a seeded hash, or a validation stream
            if self.val_path:
                return ds, self._load_texts(self.val_path, "data.val_path")
            return split_stream(ds, self.val_fraction, self.split_seed, ds._fingerprint)
        if "ends_document" in ds.column_names:  # text read in pieces (shards): split without reordering them
            return split_pieces(ds, self.holdout, self.val_fraction, self.split_seed, source.path)
        if self.val_path:
            return ds, self._load_texts(self.val_path, "data.val_path")
        if self.holdout == "tail":
            return split_tail(ds, self.val_fraction, source.path)
        return split_train_val(ds, self.val_fraction, self.split_seed, source.path)

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
        self.stats["blocks"] = self._block_counts()

    def _rows(self, tokens: torch.Tensor) -> PackedBlocks | DocumentRows:
        """Packed windows on the grid, or (data.packing=pad) one document per row."""
        length, stride = self.objective.block_layout(self.block_size)
        if self.packing == "pad":
            return DocumentRows(tokens, self.tokenizer.eos_id, length, stride)
        return PackedBlocks(tokens, length, stride)

    def _source_rows(self, split: str) -> list[PackedBlocks | DocumentRows]:
        return [self._rows(self._tokens[split][start:end]) for start, end in self._spans[split]]

    def _dataset(self, split: str) -> PackedBlocks | DocumentRows | MixedRows:
        """One source's rows, or every source's (a mixture: items are (row, source index))."""
        parts = self._source_rows(split)
        return MixedRows(parts) if self.mixed else parts[0]

    def train_examples(self) -> PackedBlocks | DocumentRows | MixedRows:
        return self._dataset("train")

    def _train_loader(self) -> DataLoader:
        """Shuffled packed windows: on the fixed grid, or (data.windows=random) at random offsets, as many per
        epoch as the grid has; a mixture draws each row's source by weight."""
        seed = torch.initial_seed() % 2**31
        if self.shards is not None:
            length, _ = self.objective.block_layout(self.block_size)
            weights = [source.weight for source in self.sources]
            collate = collate_with_sources(self.objective.collate) if self.mixed else self.objective.collate
            return self.shards.train_loader(length, self.batch_size, collate, seed, weights)
        grid = len(self._dataset("train"))
        if self.mixed:
            length, _ = self.objective.block_layout(self.block_size)
            parts = self._source_rows("train")
            if self.windows == "random":
                parts = [WindowsAt(self._tokens["train"][a:b], length) for a, b in self._spans["train"]]
            weights = [source.weight for source in self.sources]
            sampler = MixtureSampler([len(part) for part in parts], weights, seed, num_examples=grid)
            return train_loader(self, MixedRows(parts), collate_with_sources(self.objective.collate), sampler)
        if self.windows == "grid":
            return train_loader(self, self._dataset("train"), self.objective.collate)
        length, _ = self.objective.block_layout(self.block_size)
        tokens = self._tokens["train"]
        sampler = RandomWindowSampler(len(tokens), length, grid, seed)
        return train_loader(self, WindowsAt(tokens, length), self.objective.collate, sampler)

    def val_dataloader(self) -> DataLoader:
        """Validation batches are collated once under a fixed seed, so random masks or spans are the same
        at every evaluation and val losses compare across steps and runs. A mixture validates each source on
        its own batches (they carry `source_ids`: `val/<source>/loss`), taken in turns so that a
        `limit_val_batches` still sees every source. Shards stream their validation blocks instead."""
        if self.shards is not None:
            length, _ = self.objective.block_layout(self.block_size)
            return self.shards.val_loader(length, self.batch_size, self.objective.collate, self.split_seed)
        if self._val_batches is None:
            per_source = []
            for index, rows in enumerate(self._source_rows("val")):
                batches = fixed_batches(rows, self.objective.collate, self.batch_size, self.split_seed)
                if self.mixed:
                    for batch in batches:
                        batch["source_ids"] = torch.full((len(batch["input_ids"]),), index)
                per_source.append(batches)
            turns = itertools.zip_longest(*per_source)
            self._val_batches = [batch for turn in turns for batch in turn if batch is not None]
        return DataLoader(self._val_batches, batch_size=None, shuffle=False)
