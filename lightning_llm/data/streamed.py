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

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from lightning_llm.data.corpus import is_embedded
from lightning_llm.errors import ConfigError
from lightning_llm.hub import dataset_revision
from lightning_llm.log import get_logger

log = get_logger(__name__)

_HASH_SPACE = 2**64


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


def stream_key(path: str, settings: dict[str, Any]) -> str:
    """What identifies a streamed corpus for the caches (there is no Arrow fingerprint): its path and reading
    settings; for local files their sizes and modification times, for a Hub dataset the commit the Hub reports
    (a dataset that moved on is new data: new shards, never the old ones)."""
    identity: dict[str, Any] = {"path": path, "settings": settings, "files": []}
    if os.path.exists(path):
        files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names] if os.path.isdir(path) else [path]
        identity["files"] = sorted([f, os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files)
    elif not is_embedded(path):  # a Hub name (a local path that does not exist was refused before loading)
        identity["revision"] = dataset_revision(path)
        if identity["revision"] is None:
            log.warning("the Hub gave no commit for %s: its shards are keyed by its name alone", path)
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _held_out(key: str, val_fraction: float, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * _HASH_SPACE


def _document_key(row: dict[str, Any]) -> str:
    """What a row's document is known by: its `document` id (text read in pieces), else its text's opening."""
    return row.get("document") or row["text"][:4096]


def split_stream(ds, val_fraction: float, seed: int, key: str):
    """(train, val) of a streamed dataset: each document held out with probability `val_fraction`, decided by a
    seeded hash, so any worker reading any shard of the stream decides the same (and duplicates of a document
    fall on the same side). Both keep the stream's shards and carry a cache key in `_fingerprint`."""
    train = ds.filter(lambda row: not _held_out(_document_key(row), val_fraction, seed))
    val = ds.filter(lambda row: _held_out(_document_key(row), val_fraction, seed))
    for name, part in (("train", train), ("val", val)):
        part._fingerprint = hashlib.sha256(f"{key}-{val_fraction}-{seed}-{name}".encode()).hexdigest()[:16]
    return train, val


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
    part = ds.take(documents)
    part._fingerprint = hashlib.sha256(f"{ds._fingerprint}-take-{documents}".encode()).hexdigest()[:16]
    return part
