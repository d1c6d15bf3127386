"""The manifest of a shard folder: what wrote it (data, cleaning, tokenizer) and each file's size and checksum.

A folder (local, or an `s3://` URL) is complete once its manifest is written, last. Before training reads it, the
folder is checked against the manifest: LitData's index and every chunk it lists must be there with the recorded
size and checksum, or the run stops in one line naming the file and the fix (a truncated or overwritten chunk would
otherwise surface as a timeout or an IndexError deep inside LitData's loader). A local file's checksum is its
xxh3-64 hash, read once per folder per process; an object's is the ETag the store computed, listed with its size.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import xxhash

from lightning_llm.errors import ConfigError
from lightning_llm.files import write_text_atomic
from lightning_llm.log import get_logger

log = get_logger(__name__)

MANIFEST = "lightning_llm.json"
INDEX = "index.json"  # LitData's list of the chunks
REMOTE_PREFIXES = ("s3://", "gs://", "gcs://", "azure://", "hf://")
_HASH_BLOCK = 1 << 23  # bytes read at a time while hashing
_hashed: set[tuple[str, str]] = set()  # (folder, its recorded checksums) whose hashes this process has checked


def is_remote(path: str) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


def check_reachable(url: str, key: str) -> None:
    """Fail in one line, fast, on an object-store URL that cannot hold checked shards (another store than S3) or
    cannot be reached (no network, no bucket, no access)."""
    if not url.startswith("s3://"):
        raise ConfigError(
            f"{key}={url!r}: shards in an object store are written to s3:// URLs (whose chunks are checked against "
            f"the manifest): use an s3:// URL or a local folder"
        )
    import boto3
    from botocore.config import Config

    bucket = url.removeprefix("s3://").split("/", 1)[0]
    config = Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1})
    try:
        boto3.client("s3", config=config).head_bucket(Bucket=bucket)
    except Exception as err:  # botocore raises many kinds: each means the same thing here
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}={url!r} is unreachable ({reason}): check the URL, network and credentials") from err


def _object_store(url: str):
    """LitData's client for the object store at `url` (the one its optimize writes the shards with)."""
    from litdata.streaming.fs_provider import _get_fs_provider

    return _get_fs_provider(url)


def read_json(folder: str, name: str) -> dict[str, Any] | None:
    """The JSON file `name` in `folder` (local or an object-store URL); None when it is not there."""
    if not is_remote(folder):
        path = Path(folder) / name
        return json.loads(path.read_text()) if path.is_file() else None
    url = f"{folder.rstrip('/')}/{name}"
    store = _object_store(url)
    if not store.exists(url):
        return None
    with tempfile.TemporaryDirectory(prefix="lightning-llm-") as tmp:
        store.download_file(url, os.path.join(tmp, name))
        return json.loads(Path(tmp, name).read_text())


def write_json(folder: str, name: str, data: dict[str, Any]) -> None:
    """Write `data` as the JSON file `name` in `folder`: a local file is replaced atomically, and an object store
    replaces an object whole."""
    text = json.dumps(data, indent=2)
    if not is_remote(folder):
        write_text_atomic(Path(folder) / name, text)
        return
    url = f"{folder.rstrip('/')}/{name}"
    with tempfile.TemporaryDirectory(prefix="lightning-llm-") as tmp:
        Path(tmp, name).write_text(text)
        _object_store(url).upload_file(str(Path(tmp, name)), url)


def remove_folder(folder: str) -> None:
    """Delete a shard folder that is to be written again, local or in an object store."""
    if not is_remote(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    prefix = folder.rstrip("/") + "/"  # this folder's objects only, not those of a sibling named like it
    _object_store(prefix).delete_file_or_directory(prefix)


def _xxh3(path: Path) -> str:
    digest = xxhash.xxh3_64()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _s3_objects(folder: str) -> dict[str, dict[str, Any]]:
    """Size and ETag of each object directly inside an s3:// folder (one listing request per 1,000 objects)."""
    import boto3

    bucket, _, prefix = folder.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/") + "/"
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return {
        item["Key"][len(prefix) :]: {"bytes": item["Size"], "etag": item["ETag"].strip('"')}
        for page in pages
        for item in page.get("Contents", [])
    }


def _found(folder: str, names: Iterable[str], hashes: bool) -> dict[str, dict[str, Any] | None]:
    """Each named file's size and checksum as the folder holds it now (None when it is missing): the ETag an
    object store lists, or a local file's xxh3-64 hash when `hashes` (else its size alone)."""
    if is_remote(folder):
        listed = _s3_objects(folder)
        return {name: listed.get(name) for name in names}
    found: dict[str, dict[str, Any] | None] = {}
    for name in names:
        path = Path(folder) / name
        found[name] = (
            {"bytes": path.stat().st_size, **({"xxh3_64": _xxh3(path)} if hashes else {})} if path.is_file() else None
        )
    return found


def record_files(folder: str) -> dict[str, dict[str, Any] | None]:
    """The size and checksum of LitData's index and of every chunk it lists, for a manifest being written."""
    index = read_json(folder, INDEX) or {"chunks": []}
    files = _found(folder, [INDEX, *(chunk["filename"] for chunk in index["chunks"])], hashes=True)
    _hashed.add((folder, json.dumps(files, sort_keys=True)))
    return files


def _difference(recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """How a file differs from what the manifest recorded, in words; None when it does not."""
    if now is None:
        return "is missing"
    recorded = recorded or {}
    if now["bytes"] != recorded.get("bytes"):
        return f"is {now['bytes']} bytes, its manifest recorded {recorded.get('bytes')}"
    for field, value in now.items():
        if value != recorded.get(field):
            return f"has {field} {value}, its manifest recorded {recorded.get(field)}"
    return None


def verify_files(folder: str, files: dict[str, dict[str, Any] | None]) -> None:
    """Check the files of `folder` against the checksums its manifest recorded: sizes (and an object store's ETags)
    every time, a local folder's hashes once per process. A difference is one line naming the file and the fix."""
    seen = (folder, json.dumps(files, sort_keys=True))
    found = _found(folder, files, hashes=seen not in _hashed)
    for name, recorded in files.items():
        difference = _difference(recorded, found[name])
        if difference:
            raise ConfigError(
                f"shard file {folder.rstrip('/')}/{name} {difference} (truncated or overwritten since it was "
                f"written): delete the folder {folder} and rerun to rewrite its shards"
            )
    _hashed.add(seen)


def checked_manifest(folder: str, expected: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The manifest of `folder` when it holds intact shards of exactly `expected` (data, cleaning, tokenizer), or
    None when they are to be written: there is no manifest (a write that did not finish), or it has no checksums
    (an older version wrote it; the same data and tokenizer write the same tokens again, and nothing else could
    tell a damaged chunk). Shards of anything else, or a file changed since it was written, are an error."""
    found = read_json(folder, MANIFEST)
    if found is None:
        return None
    differs = [name for name in expected if found.get(name) != expected[name]]
    if differs:
        raise ConfigError(
            f"{key}={folder!r} holds shards written with another {differs[0]} ({found.get(differs[0])!r}, this run "
            f"has {expected[differs[0]]!r}): point {key} to a new folder or delete this one"
        )
    if "files" not in found:
        log.warning("the shards at %s have no checksums (an older version wrote them): writing them again", folder)
        return None
    verify_files(folder, found["files"])
    return found
