"""The packed-text datamodule: a corpus, a token store and a sampler, composed.

- `TextCorpus` (text_corpus.py): sources -> cleaned documents, split into train and validation;
- `TokenStore` (token_store.py): documents -> token ids, in the cache as arrays or LitData shards;
- `RowSampler` (row_sampler.py): rows from the store, and the loaders that draw them.

Lightning's contract: `prepare_data` only writes caches (the tokenizer, the token arrays or shards, and a record
of them, last); `setup` builds the state from them on every process, and is what the recipe and tests read after.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from lightning_llm.data.canaries import check_canary_settings
from lightning_llm.data.fingerprint import fingerprint
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.data.loading import check_loader_settings, check_window_settings
from lightning_llm.data.mixture import Source, parse_sources
from lightning_llm.data.pipeline import check_engine
from lightning_llm.data.row_sampler import RowSampler
from lightning_llm.data.shards import ShardStore, check_format
from lightning_llm.data.streamed import check_streaming, first_characters, is_stream
from lightning_llm.data.text_corpus import CorpusSettings, TextCorpus
from lightning_llm.data.text_files import releasing_pages
from lightning_llm.data.token_store import TokenStore, resolve_tokenizer, tokenizer_key
from lightning_llm.errors import ConfigError
from lightning_llm.files import write_json_atomic
from lightning_llm.log import get_logger
from lightning_llm.models import LanguageModel
from lightning_llm.objectives import Objective
from lightning_llm.tokenizers import Tokenizer, load_tokenizer

__all__ = ["TextDataModule", "resolve_tokenizer"]

log = get_logger(__name__)


class TextDataModule(LLMDataModule):
    """Text from a local file/folder, a `datasets` name or an embedded corpus, packed for an objective."""

    def __init__(
        self,
        objective: Objective,
        tokenizer: dict[str, Any] | Tokenizer,
        path: str | None = "embedded:python_docs",
        name: str | None = None,
        split: str = "train",
        text_column: str = "text",
        sample_by: str = "document",
        block_size: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        split_seed: int = 1234,
        holdout: str = "documents",
        val_path: str | None = None,
        windows: str = "grid",
        packing: str = "concat",
        max_documents: int | None = None,
        sources: dict[str, dict[str, Any]] | None = None,
        canaries: dict[str, Any] | None = None,
        format: str = "memory",
        shard_dir: str | None = None,
        streaming: bool = False,
        pipeline: list[str | dict] | None = None,
        pipeline_settings: dict[str, dict] | None = None,
        pipeline_engine: str = "local",
        decontaminate_paths: list[str] | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str = ".cache/lightning-llm",
    ) -> None:
        arguments = dict(locals())
        settings = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in arguments.items()}
        self.check_settings(settings)
        super().__init__(objective, block_size, batch_size, num_workers)
        self.tokenizer_config = tokenizer if isinstance(tokenizer, Tokenizer) else dict(tokenizer)
        self.path, self.cache_dir, self.split_seed = str(path), Path(cache_dir), split_seed
        self.windows, self.packing, self.streaming = windows, packing, streaming
        self.sources = parse_sources(settings["sources"]) or [Source("", self.path)]
        corpus = {key: settings[key] for key in CorpusSettings.__dataclass_fields__ if key in settings}
        corpus |= {
            "pipeline": tuple(settings["pipeline"] or ()),
            "decontaminate_paths": tuple(decontaminate_paths or ()),
        }
        self.corpus = TextCorpus(
            self.sources, CorpusSettings(**corpus, in_pieces=format == "shards"), str(self.cache_dir)
        )
        self.cleaning = json.dumps([corpus["pipeline"], settings["pipeline_settings"] or {}], sort_keys=True)
        writers = num_proc or os.cpu_count() or 1
        shards = (
            ShardStore(shard_dir, self.cache_dir, self.source_names, writers, num_workers)
            if format == "shards"
            else None
        )
        self.store = TokenStore(self.cache_dir, self.source_names, shards, num_proc)
        self.sampler: RowSampler | None = None
        self._train_texts: Sequence[str] | None = None
        self._created = time.time()

    @classmethod
    def examples_of(cls, settings: Mapping[str, Any]) -> str:
        """Packed text, whatever the settings."""
        return "text"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Every `data.*` setting of packed text, in one line each, before anything loads."""
        get = settings.get
        check_loader_settings(get("batch_size", 16), get("block_size", 256), get("val_fraction", 0.05),
                              get("num_workers", 0))  # fmt: skip
        holdout, packing, windows = get("holdout", "documents"), get("packing", "concat"), get("windows", "grid")
        if holdout not in ("documents", "tail"):
            raise ConfigError(f"data.holdout={holdout!r} is unknown: use documents or tail")
        if len(get("sources") or {}) > 1 and get("val_path"):
            raise ConfigError("data.val_path does not apply to data.sources: each source holds out its val_fraction")
        parse_sources(get("sources"))
        canaries = dict(get("canaries") or {})
        if canaries.get("n"):
            made = {k: canaries[k] for k in ("n", "repeats", "template", "length", "alphabet")}
            check_canary_settings(**made, key="data.canaries")
        check_window_settings(windows, packing)
        check_format(get("format", "memory"), packing, windows, get("shard_dir"))
        check_streaming(bool(get("streaming", False)), get("format", "memory"), holdout, list(get("pipeline") or []),
                        canaries)  # fmt: skip
        check_engine(get("pipeline_engine", "local"))

    @property
    def mixed(self) -> bool:
        """Whether training draws from several sources by weight (`data.sources`)."""
        return len(self.sources) > 1

    @property
    def source_names(self) -> list[str]:
        return [source.name for source in self.sources]

    @property
    def train_texts(self) -> Sequence[str]:
        """The training documents (for memorization and held-out checks), read again from the cache when asked."""
        if self._train_texts is None:
            self._train_texts = self.corpus.train_texts()
        return self._train_texts

    @train_texts.setter
    def train_texts(self, texts: Sequence[str]) -> None:
        self._train_texts = texts or None

    # -- the caches: written by prepare_data, read by setup ----------------------------------------------------
    def _record_path(self) -> Path:
        """The record of the prepared caches, named by the corpus and the tokenizer's settings."""
        config = self.tokenizer_config
        tokenizer = config if isinstance(config, dict) else tokenizer_key(config)
        store = [self.store.format, self.store.shards and self.store.shards.root]
        key = fingerprint(self.corpus.key, tokenizer, list(self.objective.special_tokens), store, self.cleaning)
        return self.cache_dir / "prepared" / f"{key}.json"

    def _record(self) -> dict[str, Any] | None:
        """The record of complete caches (its tokenizer and every token part there), else None."""
        path = self._record_path()
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record["tokenizer"] and not Path(record["tokenizer"]).is_file():
            return None
        return record if self.store.is_written(self.corpus.keys, record["tokenizer_key"], self.cleaning) else None

    def prepare_data(self) -> None:
        """Load and split the corpus, train (or reuse) the tokenizer and write the tokens, each cached; then the
        record of them. Assigns no state (Lightning runs it on one process); a second call finds the caches."""
        if self.sampler is not None or self._record() is not None:
            return
        documents, stats = self.corpus.load()
        train = datasets.concatenate_datasets([part.train for part in documents.values()])
        if is_stream(train):  # the tokenizer trains on the stream's opening (a sample would read all of it)
            texts = first_characters((row["text"] for row in train), self._tokenizer_characters())
        else:
            texts = releasing_pages(train["text"])
        data_key = fingerprint([part.keys["train"] for part in documents.values()])
        tokenizer, path, _ = resolve_tokenizer(self.tokenizer_config, texts, data_key, self.objective, self.cache_dir)
        key = tokenizer_key(tokenizer)
        self.store.write(documents, tokenizer, key, self.cleaning)
        record = {"tokenizer": str(path) if path else None, "tokenizer_key": key, "stats": stats}
        self._record_path().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._record_path(), record)

    def setup(self, stage: str | None = None) -> None:
        """Build the state from the caches on this process (writing them first when no process has): the
        tokenizer, the tokens, the sampler and the statistics (results.json's `data`)."""
        if self.sampler is not None:
            return
        record = self._record()
        if record is None:
            self.prepare_data()
            record = self._record()
        if isinstance(self.tokenizer_config, Tokenizer):
            self.tokenizer, self.tokenizer_path, self.tokenizer_trained = self.tokenizer_config, None, False
        else:
            self.tokenizer_path = Path(record["tokenizer"])
            self.tokenizer = load_tokenizer(self.tokenizer_path)
            self.tokenizer_trained = self.tokenizer_path.stat().st_mtime >= self._created
        self.store.open(self.corpus.keys, record["tokenizer_key"], self.cleaning)
        weights = [source.weight for source in self.sources]
        self.sampler = RowSampler(self.store, self.objective, self.tokenizer.eos_id, weights, self.windows,
                                  self.packing, self.split_seed)  # fmt: skip
        self.stats = self._statistics(record["stats"])
        self.sampler.check_blocks(self.block_size, {source.name: source.path for source in self.sources})

    def _statistics(self, corpus: dict[str, Any]) -> dict[str, Any]:
        stats = {**corpus, "format": self.store.format}
        if self.store.shards is not None:
            stats["shards"] = self.store.shards.location
        stats |= self.store.totals()
        if self.mixed:
            stats["sources"] = self.store.counts
        stats["blocks"] = self.sampler.block_counts(self.block_size)
        stats["vocab_size"] = self.tokenizer.vocab_size
        stats["chars_per_token"] = round(stats["characters"]["train"] / max(1, stats["tokens"]["train"]), 3)
        return stats

    def _tokenizer_characters(self) -> int:
        """How much text a tokenizer trained here reads (`tokenizer.input_characters`)."""
        config = self.tokenizer_config if isinstance(self.tokenizer_config, dict) else {}
        return int(config.get("input_characters") or 50_000_000)

    # -- what the recipe reads -------------------------------------------------------------------------------
    def fit_context(self, model: LanguageModel) -> None:
        """Packed blocks must fit the model's context once a prefix (prompt tuning) has taken its positions.

        A block as long as the model's context (the default) shrinks by the prefix, and says so; a shorter block
        chosen explicitly that still does not fit is an error naming the size that would."""
        usable, block = model.context_length, self.block_size
        if block <= usable:
            return
        if block != model.config.block_size:
            raise ConfigError(
                f"data.block_size={block} plus {model.prefix_length} prefix tokens exceeds model.block_size="
                f"{model.config.block_size}: set data.block_size={usable}"
            )
        log.info(
            "data.block_size %d -> %d: the prefix (prompt tuning) takes %d positions", block, usable, block - usable
        )
        self.block_size = usable
        self.stats["blocks"] = self.sampler.block_counts(self.block_size)

    def tokens(self, split: str) -> list:
        """Every source's token stream of one split (tokens in memory)."""
        return self.store.tokens[split]

    def train_examples(self) -> Dataset:
        return self.sampler.examples("train", self.block_size)

    def _train_loader(self) -> DataLoader:
        return self.sampler.train_loader(self)

    def val_dataloader(self) -> DataLoader:
        return self.sampler.val_loader(self.block_size, self.batch_size)
