"""The resident memory of memory-mapped files (Linux): where a process maps files, and giving their pages back.

A page of a file mapping that was only read can leave the process (`madvise(MADV_DONTNEED)`): the next read maps
it in again from the page cache or the file. Long passes over memory-mapped data (Arrow tables, checkpoints) call
this so that what they have read does not stay resident, and a process's peak memory stays near what it computes
with rather than growing with the files it reads. Elsewhere (other systems, anonymous memory) nothing is done.
The C heap's free memory can be given back too (`release_free_heap`), after a large short-lived computation.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import NamedTuple


class FileMapping(NamedTuple):
    start: int
    end: int
    writable: bool
    path: str


def file_mappings() -> list[FileMapping]:
    """This process's memory mapped from files (`/proc/self/maps`); empty where there is no such file."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
            start, end = (int(a, 16) for a in fields[0].split("-"))
            found.append(FileMapping(start, end, fields[1][1] == "w", fields[5].rstrip("\n")))
    return found


def drop_pages(start: int, end: int) -> None:
    """Take the whole pages in [start, end) out of this process's resident memory. Only for memory mapped from a
    file and not written to: the pages of anonymous or modified memory would lose their values."""
    first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
    if sys.platform == "linux" and last > first:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), mmap.MADV_DONTNEED)


def drop_read_only_files(suffix: str) -> None:
    """Give back the pages of every read-only mapping of a file whose name ends with `suffix` (e.g. ".arrow")."""
    for mapping in file_mappings():
        if not mapping.writable and mapping.path.endswith(suffix):
            drop_pages(mapping.start, mapping.end)


def release_free_heap() -> None:
    """Give the free memory of the C heap back to the kernel (glibc's `malloc_trim`). glibc keeps what a
    computation freed for reuse, in the middle of its heap where it cannot shrink: after a large short-lived one
    (SentencePiece's training on a corpus sample frees about 100 MB) the process would carry it as resident memory
    into training, and fork it into every writer and loader. Elsewhere (other systems or C libraries) nothing."""
    if sys.platform != "linux":
        return
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
