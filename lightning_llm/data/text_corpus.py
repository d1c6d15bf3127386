"""The corpus of a packed-text run: sources -> cleaned documents, split into train and validation, with statistics.

One job: read each source (`data.path`, or every `data.sources` entry), keep its text column, take its first
`data.max_documents`, clean it (`data.pipeline`), hold out validation documents (`splits`), and plant canaries in
the first source's training documents. The documents stay where they were read: an Arrow table (memory-mapped),
or a stream (`data.streaming`) that is never stored. What it produces is keyed, before anything loads, by
`TextCorpus.keys`: the caches after it (tokenizer, tokens, shards) are named by them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from lightning_llm.data.canaries import insert_canaries, make_canaries
from lightning_llm.data.fingerprint import fingerprint, source_key
from lightning_llm.data.loading import load_rows, read_texts, select_columns
from lightning_llm.data.mixture import Source
from lightning_llm.data.pipeline import apply_pipeline
from lightning_llm.data.splits import split_documents, split_stream, split_tail
from lightning_llm.data.streamed import is_stream, stream_columns, take_documents
from lightning_llm.data.text_files import count_documents, keep_text
from lightning_llm.errors import ConfigError

SPLITS = ("train", "val")


@dataclass
class Documents:
    """One source's documents, split: Arrow tables or streams with a `text` column (and, read in pieces,
    `ends_document`), and the cache key of each split."""

    train: Any
    val: Any
    keys: dict[str, str]

    def part(self, split: str) -> Any:
        return self.train if split == "train" else self.val


@dataclass
class CorpusSettings:
    """How documents are read, cleaned and held out (the `data.*` keys of the same names)."""

    name: str | None = None
    split: str = "train"
    text_column: str = "text"
    sample_by: str = "document"
    max_documents: int | None = None
    holdout: str = "documents"
    val_fraction: float = 0.05
    split_seed: int = 1234
    val_path: str | None = None
    pipeline: tuple = ()
    pipeline_settings: dict | None = None
    pipeline_engine: str = "local"
    decontaminate_paths: tuple = ()
    canaries: dict | None = None
    streaming: bool = False
    in_pieces: bool = False  # text files read a block at a time (the shard path): any file size
    num_proc: int | None = None


def statistics(ds) -> dict[str, int]:
    """Documents and characters of one split held as an Arrow table."""
    return {"documents": count_documents(ds), "characters": int(sum(len(t) for t in ds["text"]))}


class TextCorpus:
    """The sources' documents, cleaned and split (`load`), and the keys that name them (`keys`)."""

    def __init__(self, sources: list[Source], settings: CorpusSettings, cache_dir: str) -> None:
        self.sources, self.settings, self.cache_dir = sources, settings, cache_dir

    def _reading(self, source: Source | None) -> dict[str, Any]:
        s = self.settings
        reading = {"name": s.name, "split": s.split, "text_column": s.text_column, "sample_by": s.sample_by}
        return reading | (source.options if source else {})

    @cached_property
    def _readings(self) -> dict[str, list[Any]]:
        """Per source, what its documents as read (before cleaning) depend on: its identity, how it is read and
        its first data.max_documents."""
        s = self.settings
        readings = {}
        for source in self.sources:
            identity = source_key(source.path, self._reading(source), self.cache_dir)
            readings[source.name] = [identity, s.streaming, s.in_pieces, s.max_documents]
        return readings

    def read_key(self, source: Source) -> str:
        """The key of a source's documents as read, before cleaning (what the pipeline's caches start from)."""
        return fingerprint(self._readings[source.name])

    @cached_property
    def keys(self) -> dict[str, dict[str, str]]:
        """Per source, the key of its training and validation documents: its identity, and everything that
        shaped them (reading, first documents, cleaning, holdout, canaries), computed without loading it."""
        s = self.settings
        cleaning = [list(s.pipeline), s.pipeline_settings or {}, [source_key(p, {}) for p in s.decontaminate_paths]]
        holdout = [s.holdout, s.val_fraction, s.split_seed, s.val_path and source_key(s.val_path, self._reading(None))]
        keys = {}
        for index, source in enumerate(self.sources):
            canaries = s.canaries if index == 0 and (s.canaries or {}).get("n") else None
            key = fingerprint(self._readings[source.name], cleaning, holdout, canaries)
            keys[source.name] = {split: fingerprint(key, split) for split in SPLITS}
        return keys

    @property
    def key(self) -> str:
        """The key of the whole corpus (every source, both splits)."""
        return fingerprint(self.keys)

    def read(self, path: str, key: str, options: dict[str, Any] | None = None):
        """One source's rows, a `text` column (and `ends_document`, `document` for text read in pieces)."""
        s = self.settings
        reading = {**self._reading(None), **(options or {})}
        ds = load_rows(path, reading["name"], reading["split"], self.cache_dir, reading["sample_by"], s.in_pieces,
                       s.streaming)  # fmt: skip
        if is_stream(ds) and next(iter(ds.take(1)), None) is None:
            raise ConfigError(f"{key}={path!r} has no rows: the corpus is empty")
        pieces = [name for name in ("ends_document", "document") if name in stream_columns(ds)]
        columns = {"text": reading["text_column"]} | {name: name for name in pieces}
        ds = select_columns(ds, columns, path, key.replace(".path", ".text_column"))
        if not pieces:  # text read in pieces has no blank rows
            ds = ds.filter(keep_text, batched=True)
        if not is_stream(ds) and len(ds) == 0:
            raise ConfigError(f"{key}={path!r} has no text in column {reading['text_column']!r}: the corpus is empty")
        return ds

    def _cleaned(self, source: Source, reports: dict[str, Any]):
        s = self.settings
        ds = self.read(source.path, source.key, source.options)
        if s.max_documents and is_stream(ds):
            ds = take_documents(ds, s.max_documents, source.key)
        elif s.max_documents:
            ds = ds.select(range(min(s.max_documents, len(ds))))
        if s.pipeline:
            eval_texts = [t for path in s.decontaminate_paths for t in read_texts(path)]
            ds, reports[source.name] = apply_pipeline(ds, list(s.pipeline), dict(s.pipeline_settings or {}),
                num_proc=s.num_proc, decontaminate_against=eval_texts, engine=s.pipeline_engine,
                key=self.read_key(source))  # fmt: skip
            if len(ds) == 0:
                raise ConfigError(f"data.pipeline removed every document of {source.path!r}: relax its settings")
        return ds

    def _split(self, ds, source: Source) -> tuple[Any, Any]:
        """(train, val): a separate validation file, the contiguous tail, or held-out documents."""
        s = self.settings
        if s.val_path:
            return ds, self.read(s.val_path, "data.val_path")
        if is_stream(ds):
            return split_stream(ds, s.val_fraction, s.split_seed)
        if s.holdout == "tail":
            return split_tail(ds, s.val_fraction, source.path)
        return split_documents(ds, s.val_fraction, s.split_seed, source.path)

    def load(self) -> tuple[dict[str, Documents], dict[str, Any]]:
        """Every source's documents, cleaned and split, and what was done to them (results.json's `pipeline`,
        `canaries`): a source's own report, or for a mixture every source's by name."""
        reports: dict[str, Any] = {}
        documents = {}
        for source in self.sources:
            train, val = self._split(self._cleaned(source, reports), source)
            documents[source.name] = Documents(train, val, self.keys[source.name])
        stats: dict[str, Any] = {}
        if reports:
            stats["pipeline"] = reports if len(self.sources) > 1 else reports[self.sources[0].name]
        if (self.settings.canaries or {}).get("n"):
            stats["canaries"] = self._plant_canaries(documents)
        return documents, stats

    def _plant_canaries(self, documents: dict[str, Documents]) -> dict[str, Any]:
        """Insert `data.canaries` into the first source's training documents (never into validation)."""
        c = self.settings.canaries
        made = make_canaries(c["n"], c["repeats"], c["seed"], c["template"], c["length"], c["alphabet"])
        first = self.sources[0]
        part = documents[first.name]
        texts = insert_canaries(list(part.train["text"]), made, seed=c["seed"])
        key = fingerprint(part.keys["train"], "canaries", json.dumps(c, sort_keys=True))
        part.train = part.train.map(lambda row, i: {"text": texts[i]}, with_indices=True, new_fingerprint=key)
        return {"n": c["n"], "repeats": c["repeats"], "source": first.name or first.path}

    def train_texts(self) -> Sequence[str]:
        """The training documents of every source (for eval tasks that read them); none for a stream."""
        if self.settings.streaming:
            return []
        documents, _ = self.load()
        parts = [d.train["text"] for d in documents.values()]
        return parts[0] if len(parts) == 1 else [t for part in parts for t in part]
