"""Plain-text files read a block at a time, so no file (one with no newline at all included) is ever held whole."""

from __future__ import annotations

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
