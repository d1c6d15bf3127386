"""The token store of a packed-text run: documents -> token ids, written once, opened by every process.

`write` tokenizes each source's train and validation documents into a cache named by the documents' key (from
`TextCorpus.keys`) and the tokenizer's: one `.npy` array per part in memory format (documents joined by eos, with
a small JSON of its counts, written last), or LitData shards (`data.format=shards`, see `shards`). `open` reads
them back without the documents: arrays are memory-mapped (copy on write), so DataLoader workers share the pages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_llm.data.fingerprint import fingerprint
from lightning_llm.data.shards import ShardStore, token_dtype
from lightning_llm.data.text_corpus import SPLITS, Documents, statistics
from lightning_llm.errors import ConfigError
from lightning_llm.files import atomic_path, write_json_atomic
from lightning_llm.objectives import Objective
from lightning_llm.tokenizers import Tokenizer, train_or_load_tokenizer

COUNTS = ("documents", "characters", "tokens")


def resolve_tokenizer(
    tokenizer: dict[str, Any] | Tokenizer,
    texts,
    data_key: str,
    objective: Objective,
    cache_dir: Path,
) -> tuple[Tokenizer, Path | None, bool]:
    """A given tokenizer (e.g. a pretrained checkpoint's), or one trained on `texts` (cached by config and the
    data's key). Returns the tokenizer, its file and whether it was trained now."""
    if isinstance(tokenizer, Tokenizer):
        missing = [t for t in objective.special_tokens if not tokenizer.has_token(t)]
        if missing:
            raise ConfigError(f"the pretrained tokenizer lacks the objective's special token {missing[0]!r}")
        return tokenizer, None, False
    return train_or_load_tokenizer(
        texts=texts,
        special_tokens=tuple(objective.special_tokens),
        data_fingerprint=data_key,
        cache_dir=cache_dir,
        **tokenizer,
    )


def tokenizer_key(tokenizer: Tokenizer) -> str:
    """What names a tokenizer in the token caches: its bytes."""
    return fingerprint(tokenizer.to_bytes().hex())


def tokenize(part, tokenizer: Tokenizer, key: str, num_proc: int | None) -> np.ndarray:
    """A part's documents tokenized with `datasets.map` (cached under `key`) and joined by eos, in order."""
    eos = tokenizer.eos_id

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {"input_ids": [ids + [eos] for ids in tokenizer.encode_batch(batch["text"])]}

    tokenized = part.map(encode, batched=True, remove_columns=part.column_names, new_fingerprint=key,
                         num_proc=num_proc, desc="tokenize")  # fmt: skip
    arrays = list(tokenized.with_format("numpy")["input_ids"])
    dtype = token_dtype(tokenizer.vocab_size)
    return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)


class TokenStore:
    """Every source's train and validation tokens: arrays in the cache (`<cache>/tokens/<key>.npy`, its counts
    beside it, written last), or LitData shards (`shards`). Written by `write`, read back by `open`."""

    def __init__(self, cache_dir: Path, names: list[str], shards: ShardStore | None, num_proc: int | None) -> None:
        self.folder, self.names, self.shards, self.num_proc = Path(cache_dir) / "tokens", names, shards, num_proc
        self.tokens: dict[str, list[torch.Tensor]] = {}  # per split, one stream of tokens per source (memory)
        self.counts: dict[str, dict[str, dict[str, int]]] = {}  # per source: documents, characters, tokens by split

    @property
    def format(self) -> str:
        return "memory" if self.shards is None else "shards"

    def _paths(self, key: str, tokenizer: str) -> tuple[Path, Path]:
        name = fingerprint(key, tokenizer)
        return self.folder / f"{name}.npy", self.folder / f"{name}.json"

    def is_written(self, keys: dict[str, dict[str, str]], tokenizer: str, cleaning: str) -> bool:
        """Whether every part is in the cache (shards: with a manifest of this data, cleaning and tokenizer)."""
        if self.shards is not None:
            return self.shards.is_written(keys, tokenizer, cleaning)
        return all(self._paths(k, tokenizer)[1].is_file() for parts in keys.values() for k in parts.values())

    def write(self, documents: dict[str, Documents], tokenizer: Tokenizer, key: str, cleaning: str) -> None:
        """Tokenize every part that is not in the cache yet (documents joined by eos, in order)."""
        if self.shards is not None:
            self.shards.write(documents, tokenizer, key, cleaning)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for part in documents.values():
            for split in SPLITS:
                array_path, counts_path = self._paths(part.keys[split], key)
                if counts_path.is_file():
                    continue
                ds = part.part(split)
                ids = tokenize(ds, tokenizer, fingerprint(part.keys[split], key, "map"), self.num_proc)
                counts = {**statistics(ds), "tokens": len(ids)}
                with atomic_path(array_path) as tmp, tmp.open("wb") as f:
                    np.save(f, ids)
                write_json_atomic(counts_path, counts)  # last: a part with counts is complete

    def open(self, keys: dict[str, dict[str, str]], tokenizer: str, cleaning: str) -> None:
        """Read every part back (memory-mapped arrays, or the shards' manifests) and their counts."""
        self.counts = {name: {count: {} for count in COUNTS} for name in self.names}
        if self.shards is not None:
            self.shards.open(keys, tokenizer, cleaning)
            for (name, split), found in self.shards.counts.items():
                for count in COUNTS:
                    self.counts[name][count][split] = found[count]
            return
        for split in SPLITS:
            self.tokens[split] = []
            for name in self.names:
                array_path, counts_path = self._paths(keys[name][split], tokenizer)
                for count, value in json.loads(counts_path.read_text()).items():
                    self.counts[name][count][split] = value
                self.tokens[split].append(torch.from_numpy(np.load(array_path, mmap_mode="c")))

    def totals(self) -> dict[str, dict[str, int]]:
        """Documents, characters and tokens of every source together, by split."""
        return {c: {s: sum(n[c][s] for n in self.counts.values()) for s in SPLITS} for c in COUNTS}
