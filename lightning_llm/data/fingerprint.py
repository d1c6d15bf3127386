"""The data layer's one cache key: what identifies a corpus, a split of it, its tokens or its shards.

Every cache of packed text (the tokenizer trained on it, the token arrays, the shard folders) is named by
`fingerprint` of what produced it, starting from `source_key`: a corpus's identity computed from its path and
reading settings without loading it (local files by their sizes and modification times, a Hub dataset by the
commit the Hub reports, an embedded corpus by its name and the Python that builds it). Nothing here reads or
writes `datasets`' private `_fingerprint`; `datasets.map` takes these keys through its public `new_fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

from lightning_llm.data.corpus import is_embedded, materialize_embedded
from lightning_llm.hub import dataset_revision
from lightning_llm.log import get_logger

log = get_logger(__name__)


def fingerprint(*parts: Any) -> str:
    """A 16-hex-digit key of `parts` (anything JSON can write; other objects by their `str`)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _files(path: str) -> list[list[Any]]:
    """[file, size, modification time] of a local file or of every file under a folder, sorted."""
    path = os.path.expanduser(path)
    walked = (os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
    files = list(walked) if os.path.isdir(path) else [path]
    return sorted([f, os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files)


def source_key(path: str, settings: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> str:
    """What identifies a corpus for the caches, before it is loaded: its path and reading settings; for local
    files their sizes and modification times, for an embedded corpus the Python version that builds it (and, given
    the cache, the file it is written to), for a Hub dataset the commit the Hub reports (a dataset that moved on is
    new data: new caches, never the old)."""
    identity: dict[str, Any] = {"path": path, "settings": settings, "files": []}
    if is_embedded(path):
        identity["python"] = list(sys.version_info[:2])
        if cache_dir is not None:
            identity["files"] = _files(str(materialize_embedded(path, cache_dir)))
    elif os.path.exists(os.path.expanduser(path)):
        identity["files"] = _files(path)
    else:  # a Hub name (a local path that does not exist was refused before loading)
        identity["revision"] = dataset_revision(path)
        if identity["revision"] is None:
            log.warning("the Hub gave no commit for %s: its caches are keyed by its name alone", path)
    return fingerprint(identity)
