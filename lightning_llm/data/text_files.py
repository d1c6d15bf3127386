"""Plain-text files read a block at a time, so no file (one with no newline at all included) is ever held whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from lightning_llm.memory import drop_read_only_files

PIECE_CHARS = 1 << 20  # the longest row: a longer document comes in several rows of about this size
RELEASE_CHARS = 1 << 26  # a pass over an Arrow table gives back the pages it has read every this many characters


def _cut(text: str, limit: int) -> int:
    """Where to end a piece of at most `limit` characters: after the last newline, else the last space."""
    for separator in ("\n", " "):
        at = text.rfind(separator, 0, limit)
        if at > 0:
            return at + 1
    return limit


def _row(text: str, ends: bool, file: str, number: int, document_ids: bool) -> dict:
    return {"text": text, "ends_document": ends} | ({"document": f"{file}:{number}"} if document_ids else {})


def text_pieces(
    files: list[str], sample_by: str, piece_chars: int = PIECE_CHARS, document_ids: bool = False, **_: Any
) -> Iterator[dict]:
    """Rows {"text", "ends_document"} of UTF-8 text files: a document is a file, a paragraph or a line
    (`sample_by`); one longer than `piece_chars` comes in several rows, only the last ending it. Blank documents
    are skipped (and so are pieces of nothing but blanks). With `document_ids` each row also names its document
    ("<file name>:<number in the file>"). Extra keyword arguments (e.g. the files' sizes and times) only key the
    `datasets` cache."""
    separator = {"line": "\n", "paragraph": "\n\n"}.get(sample_by)
    for name in files:
        buffer, unfinished, number = "", False, 0
        with open(name, encoding="utf-8", newline="") as f:
            while block := f.read(piece_chars):
                buffer += block
                if separator is not None and (at := buffer.rfind(separator)) >= 0:
                    for document in buffer[:at].split(separator):
                        if unfinished or document.strip():
                            yield _row(document, True, name, number, document_ids)
                            number += 1
                        unfinished = False
                    buffer = buffer[at + len(separator) :]
                while len(buffer) > piece_chars:  # a long stretch without a document boundary
                    cut = _cut(buffer, piece_chars)
                    if buffer[:cut].strip():  # a stretch of blanks is no text
                        yield _row(buffer[:cut], False, name, number, document_ids)
                    buffer, unfinished = buffer[cut:], True
        if unfinished or buffer.strip():
            yield _row(buffer, True, name, number, document_ids)


def split_pieces(ds, holdout: str, val_fraction: float, seed: int, path: str):
    """(train, val) of a dataset of pieces (`ends_document`), without reordering rows or reading text into memory:
    held-out documents chosen by `seed`, or (`holdout=tail`) the last rows holding `val_fraction` of the text."""
    import numpy as np

    from lightning_llm.errors import ConfigError

    ends = np.asarray(ds["ends_document"], dtype=bool)
    if holdout == "tail":
        return _split_tail(ds, val_fraction, path)
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
    """`datasets.filter` predicate: rows with text (text read in pieces needs none: `text_pieces` skips blanks)."""
    return [bool(text and text.strip()) for text in batch["text"]]


class ArrowPageRelease:
    """Counts the characters a pass reads and gives the pages of the Arrow files read so far back to the kernel
    every `every_chars` of them: a pass over a corpus larger than memory keeps about `every_chars` of it
    resident, not all it has read."""

    def __init__(self, every_chars: int = RELEASE_CHARS) -> None:
        self.every_chars, self.read = every_chars, 0

    def add(self, characters: int) -> None:
        self.read += characters
        if self.read >= self.every_chars:
            drop_read_only_files(".arrow")
            self.read = 0


def releasing_pages(texts: Iterable[str], every_chars: int = RELEASE_CHARS) -> Iterator[str]:
    """`texts` (e.g. an Arrow table's column) read with an `ArrowPageRelease`, and the pages given back at the end."""
    release = ArrowPageRelease(every_chars)
    for text in texts:
        yield text
        release.add(len(text))
    drop_read_only_files(".arrow")


def count_documents(ds) -> int:
    """Documents in a dataset: its rows, or (text read in pieces) the rows that end a document, plus the one its
    last row leaves unfinished (a split through a document)."""
    if "ends_document" not in ds.column_names or len(ds) == 0:
        return len(ds)
    ends = ds.select_columns(["ends_document"])
    return sum(sum(batch["ends_document"]) for batch in ends.iter(batch_size=65_536)) + (not ends[-1]["ends_document"])


def _split_tail(ds, val_fraction: float, path: str):
    """The last `val_fraction` of the characters as validation: whole rows, and the row the cut falls in split
    at the line break (else the space) before it."""
    import datasets
    import numpy as np

    from lightning_llm.errors import ConfigError

    sizes = np.fromiter((len(text) for text in releasing_pages(ds["text"])), dtype=np.int64, count=len(ds))
    target = int(sizes.sum() * (1 - val_fraction))
    row = int(np.searchsorted(np.cumsum(sizes), target, side="right"))
    if row >= len(ds):
        raise ConfigError(f"data.path={path!r} is too short to hold out data.val_fraction={val_fraction} of it")
    text, end = ds[row]["text"], bool(ds[row]["ends_document"])
    offset = target - int(sizes[:row].sum())
    cut = max(text.rfind("\n", 0, offset), text.rfind(" ", 0, offset)) + 1 or offset
    head = datasets.Dataset.from_list([{"text": text[:cut], "ends_document": False}], features=ds.features)
    tail = datasets.Dataset.from_list([{"text": text[cut:], "ends_document": end}], features=ds.features)

    def rows(first: int, stop: int) -> list:
        return [ds.select(range(first, stop))] if first < stop else []

    train = datasets.concatenate_datasets([*rows(0, row), *([head] if text[:cut].strip() else [])] or [head])
    val = datasets.concatenate_datasets([tail, *rows(row + 1, len(ds))])
    if not "".join(train["text"][-1:]).strip() or not text[cut:].strip():
        raise ConfigError(f"data.path={path!r} is too short to hold out data.val_fraction={val_fraction} of it")
    for name, part in (("train", train), ("val", val)):  # fixed fingerprints: the shard cache finds them again
        part._fingerprint = hashlib.sha256(f"{ds._fingerprint}-tail-{val_fraction}-{name}".encode()).hexdigest()[:16]
    return train, val
