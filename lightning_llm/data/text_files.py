"""Plain-text files read a block at a time, so no file (one with no newline at all included) is ever held whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PIECE_CHARS = 1 << 20  # the longest row: a longer document comes in several rows of about this size


def _cut(text: str, limit: int) -> int:
    """Where to end a piece of at most `limit` characters: after the last newline, else the last space."""
    for separator in ("\n", " "):
        at = text.rfind(separator, 0, limit)
        if at > 0:
            return at + 1
    return limit


def text_pieces(files: list[str], sample_by: str, piece_chars: int = PIECE_CHARS, **_: Any) -> Iterator[dict]:
    """Rows {"text", "ends_document"} of UTF-8 text files: a document is a file, a paragraph or a line
    (`sample_by`); one longer than `piece_chars` comes in several rows, only the last ending it. Blank documents
    are skipped. Extra keyword arguments (e.g. the files' sizes and times) only key the `datasets` cache."""
    separator = {"line": "\n", "paragraph": "\n\n"}.get(sample_by)
    for name in files:
        buffer, unfinished = "", False
        with open(name, encoding="utf-8", newline="") as f:
            while block := f.read(piece_chars):
                buffer += block
                if separator is not None and (at := buffer.rfind(separator)) >= 0:
                    for document in buffer[:at].split(separator):
                        if unfinished or document.strip():
                            yield {"text": document, "ends_document": True}
                        unfinished = False
                    buffer = buffer[at + len(separator) :]
                while len(buffer) > piece_chars:  # a long stretch without a document boundary
                    cut = _cut(buffer, piece_chars)
                    yield {"text": buffer[:cut], "ends_document": False}
                    buffer, unfinished = buffer[cut:], True
        if unfinished or buffer.strip():
            yield {"text": buffer, "ends_document": True}


def split_pieces(ds, holdout: str, val_fraction: float, seed: int, path: str):
    """(train, val) of a dataset of pieces (`ends_document`), without reordering rows or reading text into memory:
    held-out documents chosen by `seed`, or (`holdout=tail`) the last rows holding `val_fraction` of the text."""
    import numpy as np

    from lightning_llm.errors import ConfigError

    ends = np.asarray(ds["ends_document"], dtype=bool)
    if holdout == "tail":
        sizes = np.fromiter((len(text) for text in ds["text"]), dtype=np.int64, count=len(ds))
        cut = int(np.searchsorted(np.cumsum(sizes), sizes.sum() * (1 - val_fraction)))
        if not 0 < cut < len(ds):
            raise ConfigError(f"data.path={path!r} is too short to hold out data.val_fraction={val_fraction} of it")
        return ds.select(range(cut)), ds.select(range(cut, len(ds)))
    documents = int(ends.sum())
    if documents < 2:
        raise ConfigError(
            f"data.path={path!r} has {documents} document: a document-level split needs 2 or more; hold out its "
            "end with data.holdout=tail, or give a validation file with data.val_path"
        )
    document_of_row = np.concatenate(([0], np.cumsum(ends[:-1])))
    held_out = np.random.default_rng(seed).choice(documents, max(1, round(documents * val_fraction)), replace=False)
    is_val = np.isin(document_of_row, held_out)
    return ds.select(np.flatnonzero(~is_val)), ds.select(np.flatnonzero(is_val))


def keep_text(batch: dict[str, list]) -> list[bool]:
    """`datasets.filter` predicate: rows with text, and rows that end a document read in pieces."""
    ends = batch.get("ends_document") or [False] * len(batch["text"])
    return [bool(text and text.strip()) or end for text, end in zip(batch["text"], ends, strict=True)]


def count_documents(ds) -> int:
    """Documents in a dataset: its rows, or (text read in pieces) the rows that end a document."""
    if "ends_document" not in ds.column_names:
        return len(ds)
    return sum(sum(batch) for batch in ds.select_columns(["ends_document"]).iter(batch_size=65_536))
