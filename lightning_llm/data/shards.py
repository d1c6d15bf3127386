"""Token shards (`data.format=shards`): a corpus tokenized once into LitData chunks, read back by streaming.

`litdata.optimize` workers tokenize the text rows straight into chunk files (on disk, or object storage by URL),
and training reads them through LitData's `StreamingDataset`: memory stays bounded however large the corpus,
each DataLoader worker and DDP rank reads its own part, and the loader's position goes into checkpoints, so a
resumed run continues on the next sample. Every shard folder carries a manifest of what wrote it (the data, its
cleaning, the tokenizer) and of each file's size and checksum (`shard_manifest`): reading it with anything else,
or after a chunk changed, is an error, never a silent reuse.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_llm.data.fingerprint import fingerprint
from lightning_llm.data.shard_manifest import (
    INDEX,
    MANIFEST,
    check_reachable,
    checked_manifest,
    is_remote,
    read_json,
    record_files,
    remove_folder,
    write_json,
)
from lightning_llm.data.streamed import is_stream
from lightning_llm.data.text_files import ArrowPageRelease
from lightning_llm.errors import ConfigError
from lightning_llm.extras import require
from lightning_llm.log import get_logger

log = get_logger(__name__)

ROWS_PER_INPUT = 2048  # text rows one optimize input tokenizes (a worker's unit of work)
_ROWS_PER_CALL = 64  # rows read at a time
_CHARS_PER_CALL = 1 << 22  # characters per encode_batch call (threads share it); ids come back as Python ints


def check_format(format: str, packing: str, windows: str, shard_dir: str | None) -> None:
    """`data.format` and what it can be combined with, named in one line before anything loads."""
    if format not in ("memory", "shards"):
        raise ConfigError(f"data.format={format!r} is unknown: use memory (the default) or shards")
    if format == "memory":
        if shard_dir:
            raise ConfigError("data.shard_dir applies to data.format=shards: set data.format=shards or drop it")
        return
    require("litdata", "data.format=shards")
    if shard_dir and is_remote(shard_dir):
        check_reachable(shard_dir, "data.shard_dir")
    if packing == "pad":
        raise ConfigError("data.packing=pad needs documents in memory: use concat or doc_mask with data.format=shards")
    if windows == "random":
        raise ConfigError("data.windows=random needs tokens in memory: use data.windows=grid with data.format=shards")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int32 if vocab_size >= 2**15 else np.int16)


def _row_ranges(ds) -> list[tuple[int, int]]:
    """Row ranges of about ROWS_PER_INPUT rows that never split a document's pieces across two inputs."""
    ends = np.asarray(ds["ends_document"]) if "ends_document" in ds.column_names else None
    ranges, start = [], 0
    while start < len(ds):
        end = min(start + ROWS_PER_INPUT, len(ds))
        while ends is not None and end < len(ds) and not ends[end - 1]:
            end += 1
        ranges.append((start, end))
        start = end
    return ranges


def _groups_of_characters(
    texts: list[str], ends: list[bool], characters: int
) -> Iterator[tuple[list[str], list[bool]]]:
    """Consecutive rows in groups of about `characters` characters (a longer row alone)."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        if size and size + len(text) > characters:
            yield texts[start:i], ends[start:i]
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        yield texts[start:], ends[start:]


class _TokenizeRows:
    """What each optimize worker runs on one input: tokenize its rows and yield one token array per row, with eos
    after each row that ends its document. An input is a row range [start, end) of an Arrow table, or the index
    of one shard of a streamed dataset (`datasets.IterableDataset`: its rows are never stored). The characters and
    documents it read go to a small file in `counts_dir`, so that nothing reads the text again to count them."""

    def __init__(self, ds, tokenizer, dtype: np.dtype, counts_dir: str) -> None:
        self.ds, self.tokenizer, self.dtype, self.counts_dir = ds, tokenizer, dtype, counts_dir
        self.release = ArrowPageRelease()  # the rows' Arrow pages leave this worker's memory as it goes

    def _batches(self, item: tuple[int, int] | int) -> Iterator[dict[str, list]]:
        if isinstance(item, int):
            yield from self.ds.shard(num_shards=self.ds.num_shards, index=item).iter(batch_size=_ROWS_PER_CALL)
            return
        for at in range(item[0], item[1], _ROWS_PER_CALL):
            yield self.ds[at : min(at + _ROWS_PER_CALL, item[1])]

    def __call__(self, item: tuple[int, int] | int) -> Iterator[torch.Tensor]:
        eos, characters, documents = self.tokenizer.eos_id, 0, 0
        for batch in self._batches(item):
            read = sum(map(len, batch["text"]))
            characters += read
            self.release.add(read)
            ends = batch.get("ends_document") or [True] * len(batch["text"])
            documents += sum(ends)
            for texts, group_ends in _groups_of_characters(batch["text"], ends, _CHARS_PER_CALL):
                for ids, last in zip(self.tokenizer.encode_batch(texts), group_ends, strict=True):
                    if ids or last:
                        yield torch.from_numpy(np.asarray(ids + [eos] if last else ids, dtype=self.dtype))
        name = f"{item[0] if isinstance(item, tuple) else item}.json"
        (Path(self.counts_dir) / name).write_text(json.dumps({"characters": characters, "documents": documents}))


@contextlib.contextmanager
def _keep_process_state() -> Iterator[None]:
    """`litdata.optimize` reseeds torch, random and numpy (seed 42) and sets environment variables in the calling
    process: restore them, so a run that writes its shards trains exactly like one that reuses them."""
    environ, states = dict(os.environ), (torch.random.get_rng_state(), random.getstate(), np.random.get_state())
    seed = torch.initial_seed()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        torch.manual_seed(seed)
        torch.random.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


def write_shards(
    ds, tokenizer, folder: str, manifest: dict[str, Any], num_workers: int, work_dir: str | os.PathLike
) -> dict[str, Any]:
    """Tokenize the rows of `ds` (a `text` column, optionally `ends_document`; an Arrow table or a streamed
    `datasets.IterableDataset`) into LitData token chunks in `folder`; write the manifest (with the tokens,
    characters and documents written, and each file's checksum) last, so an interrupted write is redone, never
    half-reused. LitData's working files (chunks on their way to a bucket, its item lists) go to a folder in
    `work_dir`, removed afterwards, instead of the system's temporary folder."""
    from litdata import TokensLoader, optimize

    remove_folder(folder)  # no usable manifest: a write that did not finish, or one without checksums
    dtype = token_dtype(tokenizer.vocab_size)
    streamed = is_stream(ds)
    inputs = list(range(ds.num_shards)) if streamed else _row_ranges(ds)
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="litdata-", dir=work_dir) as work, _keep_process_state():
        os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = os.path.join(work, "chunks")  # restored on leaving
        os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = os.path.join(work, "data")
        counts_dir = Path(work, "counts")
        counts_dir.mkdir()
        optimize(
            fn=_TokenizeRows(ds, tokenizer, dtype, str(counts_dir)),
            inputs=inputs,
            output_dir=folder,
            chunk_bytes="64MB",
            item_loader=TokensLoader(),
            num_workers=max(1, min(num_workers, len(inputs))),
            start_method="fork",
            verbose=False,
            reorder_files=False,
        )
        counts = [json.loads(p.read_text()) for p in counts_dir.glob("*.json")]
    index = read_json(folder, INDEX)
    unfinished = not streamed and len(ds) and "ends_document" in ds.column_names and not ds[-1]["ends_document"]
    manifest = {
        **manifest,
        "tokens": int(sum(chunk["dim"] for chunk in index["chunks"])),
        "characters": sum(c["characters"] for c in counts),
        "documents": sum(c["documents"] for c in counts) + int(unfinished),  # a split through a document: +1
        "dtype": dtype.name,
        "files": record_files(folder),
    }
    write_json(folder, MANIFEST, manifest)  # last: a folder with a manifest is complete
    return manifest


def streaming_dataset(
    folder: str, length: int, shuffle: bool, seed: int, transform: Callable | None = None, cache_dir: str | None = None
):
    """Blocks of `length` tokens from the shards in `folder` (each chunk is cut into whole blocks); chunks read
    from a bucket are kept in `cache_dir` (LitData's default is ~/.lightning/chunks)."""
    from litdata import StreamingDataset, TokensLoader

    return StreamingDataset(
        folder,
        item_loader=TokensLoader(block_size=length),
        shuffle=shuffle,
        drop_last=True,
        seed=seed,
        transform=transform,
        cache_dir=cache_dir,
    )


def streaming_loader(dataset, batch_size: int, collate, num_workers: int):
    """LitData's loader: it keeps its position (state_dict), which Lightning saves in checkpoints."""
    from litdata import StreamingDataLoader

    return StreamingDataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate, drop_last=True
    )


class ContentSeeded:
    """A collate whose random choices (masks, spans) depend only on the batch's tokens and a seed: validation
    batches streamed from shards get the same masks at every evaluation without being held in memory."""

    def __init__(self, collate: Callable, seed: int) -> None:
        self.collate, self.seed = collate, seed

    def __call__(self, rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        digest = zlib.crc32(rows[0].numpy().tobytes()) if rows else 0
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 1_000_003 + digest)
            return self.collate(rows)


class TagSource:
    """A dataset transform that pairs each block with its source's index (for a mixture's collate)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, block: torch.Tensor) -> tuple[torch.Tensor, int]:
        return block, self.index


class TakeTurns(torch.utils.data.IterableDataset):
    """Batches from several loaders in turns (each batch from one source, tagged with `source_ids`), so that a
    `limit_val_batches` still sees every source."""

    def __init__(self, loaders: list) -> None:
        self.loaders = loaders

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        active = [(index, iter(loader)) for index, loader in enumerate(self.loaders)]
        while active:
            for index, iterator in list(active):
                batch = next(iterator, None)
                if batch is None:
                    active.remove((index, iterator))
                    continue
                batch["source_ids"] = torch.full((len(batch["input_ids"]),), index)
                yield batch


class ShardStore:
    """The shard folders of a corpus (per source and split) and the loaders that stream them.

    Folders live under `root`: `data.shard_dir` when given (a local folder or an object-store URL), else a
    folder in the cache named by what the shards hold (the data and cleaning fingerprint and the tokenizer).
    `write_workers` processes tokenize the shards; the training loader reads them with `loader_workers` workers
    (`data.num_workers`). LitData's working files and the chunks it reads from a bucket stay in the cache."""

    def __init__(
        self, root: str | None, cache_dir: Path, names: list[str], write_workers: int, loader_workers: int
    ) -> None:
        self.root, self.cache_dir, self.names = root, Path(cache_dir), names
        self.write_workers, self.loader_workers = write_workers, loader_workers
        self.litdata_dir = str(self.cache_dir / "litdata")
        self.key = "data.shard_dir" if root else "data.cache_dir"
        self.folders: dict[tuple[str, str], str] = {}
        self.tokens: dict[tuple[str, str], int] = {}
        self.counts: dict[tuple[str, str], dict[str, int | None]] = {}  # characters and documents written
        self.location: str | None = None  # the folder the shards are in, once built

    def _root(self, keys: dict[str, dict[str, str]], tokenizer: str) -> str:
        """`data.shard_dir`, else a folder in the cache named by the data's keys and the tokenizer."""
        return self.root or str(self.cache_dir / "shards" / fingerprint(keys, tokenizer))

    def _parts(self, keys: dict[str, dict[str, str]], tokenizer: str, cleaning: str):
        """(source, split, folder, the manifest's expected entries) of every part."""
        root = self._root(keys, tokenizer)
        for name in self.names:
            for split, key in keys[name].items():
                expected = {"data": key, "tokenizer": tokenizer, "pipeline": cleaning}
                yield name, split, f"{root}/{name or 'corpus'}/{split}", expected

    def is_written(self, keys: dict[str, dict[str, str]], tokenizer: str, cleaning: str) -> bool:
        """Whether every part's folder holds intact shards of this data, cleaning and tokenizer."""
        parts = self._parts(keys, tokenizer, cleaning)
        return all(checked_manifest(folder, expected, self.key) is not None for _, _, folder, expected in parts)

    def write(self, documents: dict[str, Any], tokenizer, tokenizer_key: str, cleaning: str) -> None:
        """Write the shards of every source's train and val documents (`text_corpus.Documents`) that are not
        there yet (a folder whose manifest matches and whose files are intact is kept)."""
        keys = {name: part.keys for name, part in documents.items()}
        for name, split, folder, expected in self._parts(keys, tokenizer_key, cleaning):
            if checked_manifest(folder, expected, self.key) is None:
                log.info("tokenizing the %s rows into shards at %s", split, folder)
                write_shards(documents[name].part(split), tokenizer, folder, expected, self.write_workers,
                             self.litdata_dir)  # fmt: skip

    def open(self, keys: dict[str, dict[str, str]], tokenizer: str, cleaning: str) -> None:
        """The folders, tokens and counts (characters, documents, tokens) of every part, from their manifests."""
        self.location = self._root(keys, tokenizer)
        for name, split, folder, expected in self._parts(keys, tokenizer, cleaning):
            manifest = checked_manifest(folder, expected, self.key)
            if manifest is None:
                raise ConfigError(f"{self.key}: the shards at {folder} are not written: run prepare_data first")
            self.folders[name, split], self.tokens[name, split] = folder, manifest["tokens"]
            self.counts[name, split] = {k: manifest.get(k) for k in ("characters", "documents", "tokens")}

    def _dataset(self, name: str, split: str, length: int, seed: int, transform: Callable | None = None):
        """A source's blocks of one split: training blocks shuffled, validation blocks in order."""
        folder = self.folders[name, split]
        return streaming_dataset(folder, length, split == "train", seed, transform, self.litdata_dir)

    def blocks(self, split: str, length: int) -> int:
        return sum(self.tokens[name, split] // length for name in self.names)

    def train_loader(self, length: int, batch_size: int, collate, seed: int, weights: list[float]):
        """Shuffled blocks; a mixture draws each block's source by weight (LitData's CombinedStreamingDataset)."""
        from litdata import CombinedStreamingDataset

        if len(self.names) == 1:
            dataset = self._dataset(self.names[0], "train", length, seed)
            return streaming_loader(dataset, batch_size, collate, self.loader_workers)
        parts = [self._dataset(name, "train", length, seed, TagSource(index)) for index, name in enumerate(self.names)]
        mixed = CombinedStreamingDataset(parts, seed=seed, weights=weights, iterate_over_all=False)
        return streaming_loader(mixed, batch_size, collate, self.loader_workers)

    def val_loader(self, length: int, batch_size: int, collate, seed: int):
        """Validation blocks in order, collated with content-seeded randomness; a mixture's sources in turns."""
        loaders = [
            torch.utils.data.DataLoader(
                self._dataset(name, "val", length, seed),
                batch_size=batch_size,
                collate_fn=ContentSeeded(collate, seed),
            )
            for name in self.names
        ]
        if len(loaders) == 1:
            return loaders[0]
        return torch.utils.data.DataLoader(TakeTurns(loaders), batch_size=None)
