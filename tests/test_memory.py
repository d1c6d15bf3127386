"""Memory given back to the kernel: the C heap a computation freed among survivors (`release_free_heap`)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from lightning_llm.memory import release_free_heap

GLIBC = sys.platform == "linux" and getattr(ctypes.CDLL(None), "malloc_trim", None) is not None


def _anonymous_mb() -> int:
    """This process's resident anonymous memory (its heaps), in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) >> 10 for line in status if line.startswith("RssAnon"))


@pytest.mark.skipif(not GLIBC, reason="glibc's heap, read from /proc")
def test_the_heap_freed_among_survivors_leaves_the_process() -> None:
    blocks = [b"x" * 4000 + bytes([i % 256]) for i in range(25_000)]  # about 100 MB of C heap, 4 KB at a time
    kept = blocks[::64]  # survivors spread over the heap: it cannot shrink from its top
    del blocks
    freed = _anonymous_mb()
    release_free_heap()
    assert freed - _anonymous_mb() > 50, "the freed blocks between the survivors stayed resident"
    assert len(kept) == 391
