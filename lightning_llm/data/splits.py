"""The train/validation split of a corpus of documents, one implementation each way it can be held out.

Rows are documents, or (text read in pieces: an `ends_document` column) consecutive pieces of documents; no
split reads the text into memory as a whole:
- `split_documents`: whole documents held out, chosen by a seed (independent of the run's seed);
- `split_tail`: the last `val_fraction` of the characters, cut once (nanoGPT's split);
- `split_stream`: a stream's documents held out by a seeded hash of each (a stream has no length).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from lightning_llm.data.text_files import releasing_pages
from lightning_llm.errors import ConfigError

_HASH_SPACE = 2**64


def _document_ends(ds) -> np.ndarray:
    """Whether each row ends its document (every row, unless the text was read in pieces)."""
    if "ends_document" in ds.column_names:
        return np.asarray(ds["ends_document"], dtype=bool)
    return np.ones(len(ds), dtype=bool)


def split_documents(ds, val_fraction: float, seed: int, path: str):
    """(train, val): `max(1, round(documents * val_fraction))` whole documents held out: the first of a permutation
    seeded by `seed`. Rows of whole documents take the permutation's order (as `datasets`' `train_test_split`);
    rows that are pieces of documents keep the corpus's order, so a document's pieces stay together."""
    ends = _document_ends(ds)
    documents = int(ends.sum()) + int(len(ends) > 0 and not ends[-1])
    if documents < 2:
        raise ConfigError(
            f"data.path={path!r} has {documents} document: a document-level split needs 2 or more; hold out its "
            "end with data.holdout=tail, or give a validation file with data.val_path"
        )
    order = np.random.default_rng(seed).permutation(documents)
    held_out = max(1, round(documents * val_fraction))
    if "ends_document" not in ds.column_names:
        return ds.select(order[held_out:]), ds.select(order[:held_out])
    document_of_row = np.concatenate(([0], np.cumsum(ends[:-1])))
    is_val = np.isin(document_of_row, order[:held_out])
    return ds.select(np.flatnonzero(~is_val)), ds.select(np.flatnonzero(is_val))


def tail_cut(text: str, offset: int) -> int:
    """Where to cut `text` at about `offset`: after the line break before it, else after the space, else there."""
    for separator in ("\n", " "):
        at = text.rfind(separator, 0, offset)
        if at >= 0:
            return at + 1
    return offset


def split_tail(ds, val_fraction: float, path: str):
    """(train, val): the last `val_fraction` of the characters held out, in order: whole rows, and the row the cut
    falls in split by `tail_cut` (inside a document when it is the only one)."""
    import datasets

    sizes = np.fromiter((len(text) for text in releasing_pages(ds["text"])), dtype=np.int64, count=len(ds))
    target = int(sizes.sum() * (1 - val_fraction))
    row = int(np.searchsorted(np.cumsum(sizes), target, side="right"))
    too_short = ConfigError(f"data.path={path!r} is too short to hold out data.val_fraction={val_fraction} of it")
    if row >= len(ds):
        raise too_short
    text = ds[row]["text"]
    cut = tail_cut(text, target - int(sizes[:row].sum()))
    pieces = "ends_document" in ds.column_names

    def piece(part: str, ends: bool) -> Any:
        extra = {"ends_document": ends} if pieces else {}
        return datasets.Dataset.from_list([{"text": part, **extra}], features=ds.features)

    def rows(first: int, stop: int) -> list:
        return [ds.select(range(first, stop))] if first < stop else []

    head_kept = bool(text[:cut].strip())
    if not (head_kept or row) or not text[cut:].strip():
        raise too_short
    head = [piece(text[:cut], False)] if head_kept else []
    ends = bool(ds[row]["ends_document"]) if pieces else True
    train = datasets.concatenate_datasets([*rows(0, row), *head])
    val = datasets.concatenate_datasets([piece(text[cut:], ends), *rows(row + 1, len(ds))])
    return train, val


def _held_out(key: str, val_fraction: float, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < val_fraction * _HASH_SPACE


def _document_key(row: dict[str, Any]) -> str:
    """What a row's document is known by: its `document` id (text read in pieces), else its text's opening."""
    return row.get("document") or row["text"][:4096]


def split_stream(ds, val_fraction: float, seed: int):
    """(train, val) of a streamed dataset: each document held out with probability `val_fraction`, decided by a
    seeded hash, so any worker reading any shard of the stream decides the same (and duplicates of a document
    fall on the same side). Both keep the stream's shards."""
    train = ds.filter(lambda row: not _held_out(_document_key(row), val_fraction, seed))
    val = ds.filter(lambda row: _held_out(_document_key(row), val_fraction, seed))
    return train, val
