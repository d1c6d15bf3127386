"""Files a crash never leaves half-written: write a temporary file beside the target, then rename it over it.

A rename within one folder is atomic, so a reader (another process, a resumed run) sees the old file or the new
one, never a part. The temporary file is `.<name>.tmp<pid>` (hidden, and one per process, so two processes writing
the same target never write into each other's); a write that fails removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp"  # temporary files: .<name>.tmp<pid>


def temporary_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write `path`'s content to: renamed over `path` when the block ends, removed when it
    raises."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps: Any) -> None:
    """`data` as JSON (`dumps`: json.dumps's options; default: indented, other objects by their `str`)."""
    write_text_atomic(path, json.dumps(data, **({"indent": 2, "default": str} | dumps)))


def link_atomic(source: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Make `path` a hard link to the local file `source` (the same bytes, written once), replacing `path`
    atomically. False, with nothing changed, where that cannot be: `source` is not a local file (a remote path, a
    sharded checkpoint's folder) or the filesystem has no hard links."""
    if not os.path.isfile(source):
        return False
    try:
        with atomic_path(path) as tmp:
            os.link(source, tmp)
    except OSError:
        return False
    return True
