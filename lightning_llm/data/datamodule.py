"""One datamodule for every objective: load text, train/reuse the tokenizer, tokenize, pack, split."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_llm.data.corpus import is_embedded, materialize_embedded
from lightning_llm.data.pipeline import apply_pipeline
from lightning_llm.data.tokenizer import Tokenizer, train_or_load_tokenizer
from lightning_llm.errors import ConfigError
from lightning_llm.objectives import Objective

_BUILDERS = {
    ".txt": "text",
    ".md": "text",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def looks_local(path: str) -> bool:
    """Whether `data.path` names a local file or folder (rather than a `datasets` hub name)."""
    return path.startswith((".", "/", "~")) or Path(path).suffix in _BUILDERS or os.path.exists(path)


def check_data_path(path: str) -> None:
    """Fail fast, before any loading, on a local data path that does not exist."""
    if not is_embedded(path) and looks_local(path) and not Path(path).expanduser().exists():
        raise ConfigError(f"data.path={path!r} does not exist: give an existing file or folder, or a `datasets` name")


def load_rows(path: str, name: str | None, split: str, cache_dir: Path, sample_by: str = "document"):
    """A `datasets.Dataset` from an embedded corpus, a local file or folder, or a `datasets` name."""
    import datasets

    check_data_path(path)
    source = str(materialize_embedded(path, cache_dir)) if is_embedded(path) else path
    cache = str(Path(cache_dir) / "datasets")
    try:
        if not looks_local(source):
            return datasets.load_dataset(source, name, split=split, cache_dir=cache)
        local = Path(source).expanduser()
        files = sorted(str(p) for p in local.rglob("*") if p.suffix in _BUILDERS) if local.is_dir() else [str(local)]
        suffixes = {Path(f).suffix for f in files}
        builders = {_BUILDERS.get(s) for s in suffixes}
        if not files or None in builders or len(builders) != 1:
            raise ConfigError(
                f"data.path={path!r} holds no readable files of one kind: "
                f"give .txt/.md, .json/.jsonl, .csv or .parquet files (found {sorted(suffixes)})"
            )
        builder = builders.pop()
        extra = {"sample_by": sample_by} if builder == "text" else {}
        return datasets.load_dataset(builder, data_files=files, split="train", cache_dir=cache, **extra)
    except ConfigError:
        raise
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        raise ConfigError(
            f"data.path={path!r} could not be loaded ({type(err).__name__}: {str(err).splitlines()[0]}): "
            "give a local file or folder, or a `datasets` name reachable online"
        ) from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"data.path={path!r} is not valid UTF-8 text ({err.reason})") from err


def select_columns(ds, columns: dict[str, str], path: str, key_prefix: str = "data"):
    """Keep `columns` ({our name: the data's column}) under our names; name a missing column in one line."""
    for ours, theirs in columns.items():
        if theirs not in ds.column_names:
            key = key_prefix if "." in key_prefix else f"{key_prefix}.{ours}_column"
            raise ConfigError(f"{key}={theirs!r} is not a column of {path!r}: its columns are {ds.column_names}")
    ds = ds.select_columns(list(dict.fromkeys(columns.values())))
    renames = {theirs: ours for ours, theirs in columns.items() if theirs != ours}
    return ds.rename_columns(renames) if renames else ds


def read_texts(path: str) -> list[str]:
    """Texts of a local .txt (one per line) or .jsonl file (every string value of every row)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"data.decontaminate_paths has {path!r}, which does not exist")
    lines = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if p.suffix not in (".jsonl", ".json"):
        return lines
    return [v for row in map(json.loads, lines) for v in row.values() if isinstance(v, str)]


def split_train_val(ds, val_fraction: float, seed: int, path: str):
    """A deterministic document-level split (independent of the run's seed)."""
    if len(ds) < 2:
        raise ConfigError(f"data.path={path!r} has {len(ds)} document: at least 2 are needed for train/val")
    splits = ds.train_test_split(test_size=max(1, round(len(ds) * val_fraction)), seed=seed, shuffle=True)
    return splits["train"], splits["test"]


def resolve_tokenizer(
    tokenizer: dict[str, Any] | Tokenizer,
    texts: list[str],
    fingerprint: str,
    objective: Objective,
    cache_dir: Path,
) -> tuple[Tokenizer, Path | None, bool]:
    """A given tokenizer (e.g. a pretrained checkpoint's), or one trained on `texts` (cached by config and data).

    Returns the tokenizer, its file and whether it was trained now.
    """
    if isinstance(tokenizer, Tokenizer):
        missing = [t for t in objective.special_tokens if tokenizer.token_to_id(t) == tokenizer.unk_id]
        if missing:
            raise ConfigError(f"the pretrained tokenizer lacks the objective's special token {missing[0]!r}")
        return tokenizer, None, False
    return train_or_load_tokenizer(
        texts=texts,
        special_tokens=tuple(objective.special_tokens),
        data_fingerprint=fingerprint,
        cache_dir=cache_dir,
        **tokenizer,
    )


def fixed_batches(examples, collate, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Collate `examples` once under a fixed seed: random masks or spans are then the same at every
    evaluation, so validation losses compare across steps and runs."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [
            collate([examples[i] for i in range(start, min(start + batch_size, len(examples)))])
            for start in range(0, len(examples), batch_size)
        ]


class ResumableSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch), so any epoch's order can be rebuilt after a crash;
    `skip` drops the examples a resumed epoch already trained on (Lightning calls `set_epoch`)."""

    def __init__(self, num_examples: int, seed: int) -> None:
        self.num_examples, self.seed, self.epoch, self.skip = num_examples, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator)[self.skip :].tolist()
        self.skip = 0
        return iter(order)

    def __len__(self) -> int:
        return self.num_examples


def train_loader(datamodule: pl.LightningDataModule, dataset: Dataset, collate) -> DataLoader:
    """The shuffled training loader; on a resumed fit it continues the interrupted epoch where it stopped."""
    sampler = ResumableSampler(len(dataset), torch.initial_seed() % 2**31)
    trainer = datamodule.trainer
    if trainer is not None:
        sampler.set_epoch(trainer.current_epoch)
        sampler.skip = trainer.fit_loop.epoch_loop.batch_progress.current.completed * datamodule.batch_size
    return DataLoader(
        dataset,
        batch_size=datamodule.batch_size,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        num_workers=datamodule.num_workers,
    )


class PackedBlocks(Dataset):
    """Fixed-length windows over one token stream: window i is tokens[i*stride : i*stride + length]."""

    def __init__(self, tokens: torch.Tensor, length: int, stride: int) -> None:
        self.tokens, self.length, self.stride = tokens, length, stride
        self.num_blocks = max(0, (len(tokens) - length) // stride + 1)

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.stride
        return self.tokens[start : start + self.length]


class TextDataModule(pl.LightningDataModule):
    """Text from a local file/folder, a `datasets` name or an embedded corpus, packed for an objective."""

    def __init__(
        self,
        objective: Objective,
        tokenizer: dict[str, Any] | Tokenizer,
        path: str = "embedded:python_docs",
        name: str | None = None,
        split: str = "train",
        text_column: str = "text",
        sample_by: str = "document",
        block_size: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        split_seed: int = 1234,
        max_documents: int | None = None,
        pipeline: list[str | dict] | None = None,
        pipeline_settings: dict[str, dict] | None = None,
        decontaminate_paths: list[str] | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str = ".cache/lightning-llm",
    ) -> None:
        super().__init__()
        self.objective = objective
        self.tokenizer_config = tokenizer if isinstance(tokenizer, Tokenizer) else dict(tokenizer)
        self.path, self.name, self.split, self.text_column = str(path), name, split, text_column
        self.sample_by = sample_by
        self.block_size, self.batch_size = block_size, batch_size
        self.val_fraction, self.split_seed, self.max_documents = val_fraction, split_seed, max_documents
        self.pipeline, self.pipeline_settings = list(pipeline or []), dict(pipeline_settings or {})
        self.decontaminate_paths = list(decontaminate_paths or [])
        self.num_workers, self.num_proc = num_workers, num_proc
        self.cache_dir = Path(cache_dir)
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_path: Path | None = None
        self.tokenizer_trained: bool | None = None
        self.stats: dict[str, Any] = {}
        self._tokens: dict[str, torch.Tensor] = {}
        self._val_batches: list[dict[str, torch.Tensor]] | None = None
        self.train_texts: list[str] = []  # the training documents (for memorization tests)

    # -- loading -----------------------------------------------------------------------------
    def _load_raw(self):
        ds = load_rows(self.path, self.name, self.split, self.cache_dir, self.sample_by)
        ds = select_columns(ds, {"text": self.text_column}, self.path, key_prefix="data.text_column")
        ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
        if len(ds) == 0:
            raise ConfigError(
                f"data.path={self.path!r} has no text in column {self.text_column!r}: the corpus is empty"
            )
        if self.max_documents:
            ds = ds.select(range(min(self.max_documents, len(ds))))
        if self.pipeline:
            eval_texts = [t for path in self.decontaminate_paths for t in read_texts(path)]
            ds, self.stats["pipeline"] = apply_pipeline(
                ds, self.pipeline, self.pipeline_settings, num_proc=self.num_proc, decontaminate_against=eval_texts
            )
            if len(ds) == 0:
                raise ConfigError(f"data.pipeline removed every document of {self.path!r}: relax its settings")
        return ds

    # -- Lightning hooks ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Load, split, train or reuse the tokenizer, tokenize and pack. Cached; safe to call twice."""
        if self._tokens:
            return
        ds = self._load_raw()
        train, val = split_train_val(ds, self.val_fraction, self.split_seed, self.path)
        self.train_texts = list(train["text"])

        self.tokenizer, self.tokenizer_path, self.tokenizer_trained = resolve_tokenizer(
            self.tokenizer_config, train["text"], train._fingerprint, self.objective, self.cache_dir
        )
        self.objective.bind_tokenizer(self.tokenizer)
        length, stride = self.objective.block_layout(self.block_size)
        self.stats.update(documents={"train": len(train), "val": len(val)}, tokens={}, blocks={})
        self.stats["characters"] = {
            name: int(sum(len(t) for t in part["text"])) for name, part in (("train", train), ("val", val))
        }
        tokenizer_key = hashlib.sha256(self.tokenizer.to_bytes()).hexdigest()[:16]
        for name, part in (("train", train), ("val", val)):
            tokens = self._tokenize(part, tokenizer_key)
            self._tokens[name] = tokens
            self.stats["tokens"][name] = len(tokens)
            self.stats["blocks"][name] = len(PackedBlocks(tokens, length, stride))
        self.stats["vocab_size"] = self.tokenizer.vocab_size
        self.stats["chars_per_token"] = round(
            self.stats["characters"]["train"] / max(1, self.stats["tokens"]["train"]), 3
        )
        if self.stats["blocks"]["val"] == 0 or self.stats["blocks"]["train"] == 0:
            raise ConfigError(
                f"data.block_size={self.block_size} is longer than the {min(self.stats['tokens'].values())} tokens "
                f"of the smallest split of {self.path!r}: lower data.block_size or add text"
            )

    def _tokenize(self, part, tokenizer_key: str) -> torch.Tensor:
        """Tokenize with `datasets.map` (cached by fingerprint); join documents with eos, in order."""
        tokenizer = self.tokenizer
        eos = tokenizer.eos_id

        def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
            return {"input_ids": [ids + [eos] for ids in tokenizer.encode_batch(batch["text"])]}

        fingerprint = hashlib.sha256(f"{part._fingerprint}-{tokenizer_key}".encode()).hexdigest()[:32]
        tokenized = part.map(
            encode,
            batched=True,
            remove_columns=part.column_names,
            new_fingerprint=fingerprint,
            num_proc=self.num_proc,
            desc="tokenize",
        )
        dtype = np.int32 if tokenizer.vocab_size >= 2**15 else np.int16
        arrays = tokenized.with_format("numpy")["input_ids"]
        return torch.from_numpy(np.concatenate(list(arrays)).astype(dtype))

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()

    def _dataset(self, split: str) -> PackedBlocks:
        length, stride = self.objective.block_layout(self.block_size)
        return PackedBlocks(self._tokens[split], length, stride)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self, self._dataset("train"), self.objective.collate)

    def val_dataloader(self) -> DataLoader:
        """Validation batches are collated once under a fixed seed, so random masks or spans are the same
        at every evaluation and val losses compare across steps and runs."""
        if self._val_batches is None:
            self._val_batches = fixed_batches(
                self._dataset("val"), self.objective.collate, self.batch_size, self.split_seed
            )
        return DataLoader(self._val_batches, batch_size=None, shuffle=False)
