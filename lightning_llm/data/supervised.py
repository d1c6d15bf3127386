"""Supervised tasks: rows of (prompt, response) or (text, label) from a table, rendered through a template, or
conversations (`messages_column`: chat message lists, ShareGPT's `conversations` too) rendered with a chat template
(`data.chat`), tokenized once (cached by `datasets`) and padded per batch by the objective."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from lightning_llm.data.chat import messages_of, special_strings, template_source, turns
from lightning_llm.data.examples import SAMPLE_PROMPTS, ExampleDataModule, check_max_tokens, list_lengths, table_key
from lightning_llm.data.fingerprint import fingerprint
from lightning_llm.data.loading import check_loader_settings, load_rows
from lightning_llm.data.splits import split_documents
from lightning_llm.data.token_store import resolve_tokenizer, tokenizer_key
from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.objectives import Objective
from lightning_llm.tokenizers import Tokenizer


def template_fields(template: str) -> list[str]:
    """The `{column}` names a prompt template uses."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


class SupervisedDataModule(ExampleDataModule):
    """Examples for instruction tuning / seq2seq (`response_column`), chat tuning (`messages_column`: the loss on
    the assistant's turns only) or classification (`label_column`)."""

    def __init__(
        self,
        objective: Objective,
        tokenizer: dict[str, Any] | Tokenizer,
        path: str,
        prompt_template: str,
        response_column: str | None = None,
        label_column: str | None = None,
        messages_column: str | None = None,
        chat_template: str | None = None,
        labels: list[str] | None = None,
        max_labels: int | None = None,
        name: str | None = None,
        split: str = "train",
        block_size: int = 256,
        batch_size: int = 16,
        max_tokens: int | str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 1234,
        max_examples: int | None = None,
        num_workers: int = 0,
        cache_dir: str = ".cache/lightning-llm",
    ) -> None:
        self.check_settings(
            {"response_column": response_column, "label_column": label_column, "messages_column": messages_column}
        )
        check_loader_settings(batch_size, block_size, val_fraction, num_workers)
        split_settings = (val_fraction, split_seed, max_examples)
        super().__init__(objective, block_size, batch_size, num_workers, max_tokens, split_settings, cache_dir)
        self.tokenizer_config = tokenizer
        self.path, self.name, self.split = str(path), name, split
        self.prompt_template, self.response_column, self.label_column = prompt_template, response_column, label_column
        self.messages_column, self.chat_template = messages_column, chat_template
        self.labels, self.max_labels = list(labels) if labels else None, max_labels

    @classmethod
    def examples_of(cls, settings: Mapping[str, Any]) -> str:
        """(prompt, response) pairs with a `response_column` or `messages_column`, else (text, class) examples."""
        return "pairs" if settings.get("response_column") or settings.get("messages_column") else "labelled"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Exactly one target: a response column (generation), a messages column (conversations) or a label column
        (classes)."""
        targets = ("response_column", "messages_column", "label_column")
        if sum(settings.get(key) is not None for key in targets) != 1:
            raise ConfigError(
                "set exactly one of data.response_column (generation), data.messages_column (conversations) and "
                "data.label_column (classes)"
            )
        check_max_tokens(settings.get("max_tokens"))

    def _rows(self) -> tuple[Any, str]:
        """The rows the task reads and their key: the table (data.path, data.name, data.split), the columns the
        template and target use, the classes kept (data.labels, or the data.max_labels most frequent) and the first
        data.max_examples."""
        ds = load_rows(self.path, self.name, self.split, self.cache_dir)
        needed = [] if self.messages_column else template_fields(self.prompt_template)
        for field in needed:
            if field not in ds.column_names:
                raise ConfigError(
                    f"data.prompt_template uses {{{field}}}, which is not a column of {self.path!r}: "
                    f"its columns are {ds.column_names}"
                )
        target = self.response_column or self.messages_column or self.label_column
        if target not in ds.column_names:
            key = next(f"data.{k}" for k in ("response_column", "messages_column", "label_column") if getattr(self, k))
            raise ConfigError(f"{key}={target!r} is not a column of {self.path!r}: its columns are {ds.column_names}")
        columns = list(dict.fromkeys([*needed, target]))
        ds = ds.select_columns(columns)
        key = fingerprint(table_key(self.path, self.name, self.split, self.cache_dir), columns)
        if self.label_column:
            ds, key = self._keep_labels(ds, key)
        return self.first_examples(ds, key)

    def _keep_labels(self, ds, key: str) -> tuple[Any, str]:
        """The rows of the classes kept, and their key (the rows' `key` and the classes)."""
        counts = Counter(str(v) for v in ds[self.label_column])
        if self.labels is None:  # the most frequent classes (ties by name), or all of them
            ranked = sorted(counts, key=lambda label: (-counts[label], label))
            self.labels = sorted(ranked[: self.max_labels] if self.max_labels else ranked)
        unknown = [label for label in self.labels if label not in counts]
        if unknown:
            raise ConfigError(f"data.labels has {unknown[0]!r}, which never occurs in column {self.label_column!r}")
        keep = set(self.labels)
        key = fingerprint(key, "labels", self.label_column, self.labels)
        return ds.filter(lambda batch: [str(v) in keep for v in batch[self.label_column]], batched=True,
                         new_fingerprint=key), key  # fmt: skip

    def prepare_data(self) -> None:
        """Load, render, split, get the tokenizer, tokenize. Cached; safe to call twice."""
        if self._examples:
            return
        template, response, label = self.prompt_template, self.response_column, self.label_column
        rows, key = self._rows()
        index = {name: i for i, name in enumerate(self.labels or [])}

        source = template_source(getattr(self.tokenizer_config, "chat_template", None), self.chat_template)
        special = special_strings(self.tokenizer_config)

        def render(batch: dict[str, list]) -> dict[str, list]:
            if self.messages_column:  # a conversation's pieces of text, and which are the assistant's
                pieces = [
                    turns(source, messages_of(m, self.messages_column), special) for m in batch[self.messages_column]
                ]
                return {"pieces": [[t for t, _ in p] for p in pieces], "trained": [[k for _, k in p] for p in pieces]}
            n = len(next(iter(batch.values())))
            prompts = [template.format(**{k: batch[k][i] for k in batch}) for i in range(n)]
            if response:
                return {"prompt": prompts, "response": [str(r) for r in batch[response]]}
            return {"prompt": prompts, "label": [index[str(v)] for v in batch[label]]}

        key = fingerprint(key, "render", template, response, label, self.labels, self.messages_column, source, special)
        rendered = rows.map(render, batched=True, remove_columns=rows.column_names, new_fingerprint=key, desc="render")
        keys = self.split_keys(key)
        train, val = split_documents(rendered, self.val_fraction, self.split_seed, self.path)
        if self.messages_column:
            texts = ["".join(pieces) for pieces in train["pieces"]]
        else:
            texts = list(train["prompt"]) + (list(train["response"]) if response else [])
        self.train_texts = texts  # prompts and responses of the training split
        self.keep_sample_prompts(self._held_out_prompts(val))
        self.tokenizer, self.tokenizer_path, self.tokenizer_trained = resolve_tokenizer(
            self.tokenizer_config, texts, keys["train"], self.objective, self.cache_dir
        )
        tokens = tokenizer_key(self.tokenizer)
        self._examples = {
            name: self._tokenize(part, fingerprint(keys[name], tokens, "tokenize"))
            for name, part in (("train", train), ("val", val))
        }
        first = "chat_ids" if self.messages_column else "prompt_ids"  # a conversation: all its tokens
        self.stats = {
            "examples": {name: len(part) for name, part in self._examples.items()},
            "vocab_size": self.tokenizer.vocab_size,
            "labels": self.labels,
            "prompt_tokens_mean": round(sum(map(len, self._examples["train"][first])) / len(train), 1),
        }
        self.describe_batches()

    def _held_out_prompts(self, val) -> list[str]:
        """The first validation rows' prompts as training renders them (a conversation: up to its first reply)."""
        rows = val.select(range(min(len(val), SAMPLE_PROMPTS)))
        if not self.messages_column:
            return list(rows["prompt"])
        return [
            "".join(p[: t.index(True)] if True in t else p)
            for p, t in zip(rows["pieces"], rows["trained"], strict=True)
        ]

    def row_lengths(self, part) -> np.ndarray:
        if "chat_ids" in part.column_names:
            return list_lengths(part, "chat_ids")
        lengths = list_lengths(part, "prompt_ids")
        return lengths + list_lengths(part, "response_ids") if "response_ids" in part.column_names else lengths

    def _tokenize(self, part, key: str):
        """The rows' token ids, cached under `key` (the part's and the tokenizer's)."""
        tokenizer = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, list]:
            if "pieces" in batch:  # each piece on its own, so a token never straddles a turn
                ids = [tokenizer.encode_batch(pieces) if pieces else [] for pieces in batch["pieces"]]
                return {
                    "chat_ids": [[t for piece in row for t in piece] for row in ids],
                    "chat_trained": [
                        [k for piece, k in zip(row, trained, strict=True) for _ in piece]
                        for row, trained in zip(ids, batch["trained"], strict=True)
                    ],
                }
            out = {"prompt_ids": tokenizer.encode_batch(batch["prompt"])}
            if "response" in batch:
                out["response_ids"] = tokenizer.encode_batch(batch["response"])
            return out

        return part.map(
            encode,
            batched=True,
            remove_columns=[c for c in ("prompt", "response", "pieces", "trained") if c in part.column_names],
            new_fingerprint=key,
            desc="tokenize",
        )

    def fit_context(self, model: LanguageModel) -> None:
        """Examples are truncated to the model's context by the objective: nothing to check."""
