"""Rows that are streamed, never stored (`data.streaming=true`, with `data.format=shards`).

A Hub dataset (when online) or local files are read with `datasets`' streaming mode: rows arrive as an
`IterableDataset` and go straight into the token shards, so no copy of the text is kept on disk or in memory.
The rest of the shards path is the same as for a stored corpus. What a stream cannot give is refused up front:
a contiguous tail (`data.holdout=tail` needs the corpus's length), cleaning (dedup needs the whole corpus),
canaries. Validation is held out by document, by a seeded hash of each document (its first piece), so it needs
no index and every worker of a sharded stream agrees on it; the tokenizer trains on the first
`tokenizer.input_characters` characters of the training stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.log import get_logger

log = get_logger(__name__)


def check_streaming(streaming: bool, format: str, holdout: str, pipeline: list, canaries: dict[str, Any]) -> None:
    """What `data.streaming` needs and refuses, in one line before anything loads."""
    if not streaming:
        return
    if format != "shards":
        raise ConfigError("data.streaming=true writes token shards as it reads: set data.format=shards with it")
    if holdout == "tail":
        raise ConfigError(
            "data.holdout=tail needs the corpus's length, which a stream does not have: use data.holdout=documents "
            "or a validation file (data.val_path) with data.streaming"
        )
    if pipeline:
        raise ConfigError(
            "data.pipeline needs the whole corpus at once (dedup compares every document): clean without "
            "data.streaming, or drop data.pipeline"
        )
    if canaries.get("n"):
        raise ConfigError("data.canaries are planted into stored documents: drop data.streaming or data.canaries")


def first_characters(texts: Iterable[str], characters: int) -> Iterator[str]:
    """The texts of a stream until about `characters` characters have passed (what a tokenizer trains on)."""
    seen = 0
    for text in texts:
        yield text
        seen += len(text)
        if seen >= characters:
            return


def is_stream(ds) -> bool:
    """Whether `ds` is a streamed `datasets.IterableDataset` (it has no length)."""
    return not hasattr(ds, "__len__")


def stream_columns(ds) -> list[str]:
    """A dataset's columns; a stream whose features are not known up front shows them in its first row."""
    if ds.column_names is not None:
        return list(ds.column_names)
    first = next(iter(ds.take(1)), None)
    return list(first) if first else []


def take_documents(ds, documents: int, key: str):
    """The first `documents` rows of a stream of whole documents (JSON, CSV, Parquet rows; a Hub dataset)."""
    if "ends_document" in stream_columns(ds):
        raise ConfigError(
            f"data.max_documents with data.streaming counts rows of whole documents, and {key} is text read in "
            "pieces: give fewer files, or drop data.max_documents"
        )
    return ds.take(documents)
