"""Preference data: (prompt, chosen, rejected) pairs for DPO, SimPO, ORPO and reward models, or (prompt, completion,
label) examples for KTO, from a table (jsonl, csv, parquet, a `datasets` name, or `embedded:stdlib_preferences`).

Columns hold text, or chat messages as TRL and Axolotl write them (`{role, content}` lists, ShareGPT's `{from,
value}` too): conversational responses are the last message of `chosen`/`rejected` (or `completion`), the prompt is
the `prompt` column's messages or, without one, the conversation before that last message (TRL's implicit prompt),
all rendered with the tokenizer's chat template or `data.chat_template`. `data.unpaired=true` turns each pair into a
desirable and an undesirable example (for KTO). Rows are never packed; the objective pads each batch.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lightning_llm.data.chat import messages_of, prompt_and_reply, special_strings, template_source
from lightning_llm.data.corpus import is_embedded, materialize_embedded
from lightning_llm.data.examples import SAMPLE_PROMPTS, ExampleDataModule, check_max_tokens, list_lengths, table_key
from lightning_llm.data.fingerprint import fingerprint
from lightning_llm.data.loading import check_loader_settings, load_rows
from lightning_llm.data.splits import split_documents
from lightning_llm.data.token_store import resolve_tokenizer, tokenizer_key
from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.objectives import Objective
from lightning_llm.tokenizers import Tokenizer


def first_row_columns(path: str, cache_dir: Path) -> list[str] | None:
    """The columns of a local JSON-lines, CSV or Parquet table or an embedded one, from its first row (None for
    anything else: a folder, a `datasets` name; those are checked as they load)."""
    if is_embedded(path):
        path = str(materialize_embedded(path, cache_dir))
    file = Path(path).expanduser()
    if not file.is_file():
        return None
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(file).names)
    with file.open(encoding="utf-8", errors="replace") as f:
        if file.suffix == ".csv":
            return next(csv.reader(f), [])
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first) if file.suffix in (".jsonl", ".json") else None
    except ValueError:
        return None  # the loader names the line
    return list(row) if isinstance(row, dict) else None


def missing_column(column: str, path: str, columns: list[str]) -> ConfigError:
    return ConfigError(
        f"column {column!r} is not in {path!r} (its columns are {columns}): name the data's columns with "
        "data.prompt_column, data.chosen_column, data.rejected_column (pairs) or data.completion_column and "
        "data.label_column (judged examples)"
    )


class PreferenceDataModule(ExampleDataModule):
    """Pairs (`chosen_column`, `rejected_column`), or judged examples (`completion_column` with `label_column`, or
    pairs with `unpaired`). A pair (and a judged example with its KL row) is two rows of the model."""

    copies = 2

    def __init__(
        self,
        objective: Objective,
        tokenizer: dict[str, Any] | Tokenizer,
        path: str,
        name: str | None = None,
        split: str = "train",
        prompt_column: str = "prompt",
        chosen_column: str = "chosen",
        rejected_column: str = "rejected",
        completion_column: str = "completion",
        label_column: str | None = None,
        unpaired: bool = False,
        chat_template: str | None = None,
        block_size: int = 256,
        batch_size: int = 8,
        max_tokens: int | str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 1234,
        max_examples: int | None = None,
        num_workers: int = 0,
        cache_dir: str = ".cache/lightning-llm",
    ) -> None:
        self.check_settings({"label_column": label_column, "unpaired": unpaired})  # columns: checked as they load
        check_loader_settings(batch_size, block_size, val_fraction, num_workers)
        split_settings = (val_fraction, split_seed, max_examples)
        super().__init__(objective, block_size, batch_size, num_workers, max_tokens, split_settings, cache_dir)
        self.tokenizer_config = tokenizer
        self.path, self.name, self.split = str(path), name, split
        self.columns = {"prompt": prompt_column, "chosen": chosen_column, "rejected": rejected_column}
        self.completion_column, self.label_column, self.unpaired = completion_column, label_column, unpaired
        self.chat_template = chat_template

    @classmethod
    def examples_of(cls, settings: Mapping[str, Any]) -> str:
        """Judged examples with a `label_column` or `unpaired`, else pairs."""
        return "judged" if settings.get("label_column") or settings.get("unpaired") else "preferences"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """One kind of judged examples; the columns a local table or an embedded one must have (read from its
        first row)."""
        if settings.get("label_column") and settings.get("unpaired"):
            raise ConfigError(
                "data.unpaired=true splits pairs into judged examples and data.label_column reads judged examples: "
                "set one of them"
            )
        check_max_tokens(settings.get("max_tokens"))
        path, cache_dir = settings.get("path"), settings.get("cache_dir")
        columns = first_row_columns(str(path), Path(cache_dir)) if path and cache_dir else None
        wanted = (
            [settings.get("completion_column"), settings.get("label_column")]
            if settings.get("label_column")
            else [settings.get("chosen_column"), settings.get("rejected_column")]
        )
        for column in wanted if columns is not None else []:
            if column not in columns:
                raise missing_column(column, str(path), columns)

    @property
    def judged(self) -> bool:
        return bool(self.label_column or self.unpaired)

    def _rows(self) -> tuple[Any, str]:
        """The rows the task reads and their key: the table (data.path, data.name, data.split), the columns kept
        and the first data.max_examples."""
        ds = load_rows(self.path, self.name, self.split, self.cache_dir)
        wanted = (
            [self.completion_column, self.label_column]
            if self.label_column
            else [self.columns["chosen"], self.columns["rejected"]]
        )
        for column in wanted:
            if column not in ds.column_names:
                raise missing_column(column, self.path, ds.column_names)
        keep = [c for c in [self.columns["prompt"], *wanted] if c in ds.column_names]
        ds = ds.select_columns(keep)
        return self.first_examples(ds, fingerprint(table_key(self.path, self.name, self.split, self.cache_dir), keep))

    def _render(self, row: dict[str, Any], source: str, special: dict[str, str]) -> list[dict[str, Any]]:
        """One table row as (prompt, response(s)) text: a pair, one judged example, or two (`unpaired`)."""
        responses = (
            {"completion": self.completion_column}
            if self.label_column
            else {"chosen": self.columns["chosen"], "rejected": self.columns["rejected"]}
        )
        prompt = row.get(self.columns["prompt"])
        texts: dict[str, str] = {}
        contexts = []  # each conversational response's conversation before it
        for key, column in responses.items():
            value = row[column]
            if isinstance(value, str) and (prompt is None or isinstance(prompt, str)):
                texts["prompt"], texts[key] = prompt or "", value
                continue
            conversation = messages_of(value, column)
            contexts.append(messages_of(prompt, self.columns["prompt"]) if prompt is not None else conversation[:-1])
            texts["prompt"], texts[key] = prompt_and_reply(source, contexts[-1], conversation[-1], special)
        if any(context != contexts[0] for context in contexts):
            raise ConfigError(
                f"a row's {self.columns['chosen']!r} and {self.columns['rejected']!r} conversations differ before "
                f"their last message: give the prompt in a {self.columns['prompt']!r} column"
            )
        if self.label_column:
            label = row[self.label_column]
            if label not in (True, False):  # 1 and 0 too
                raise ConfigError(f"column {self.label_column!r} has {label!r}: a label is true/false (or 1/0)")
            return [{"prompt": texts["prompt"], "response": texts["completion"], "label": bool(label)}]
        if self.unpaired:
            return [
                {"prompt": texts["prompt"], "response": texts["chosen"], "label": True},
                {"prompt": texts["prompt"], "response": texts["rejected"], "label": False},
            ]
        return [texts]

    def prepare_data(self) -> None:
        """Load, render, split, get the tokenizer, tokenize. Cached; safe to call twice."""
        if self._examples:
            return
        rows, key = self._rows()
        source = template_source(getattr(self.tokenizer_config, "chat_template", None), self.chat_template)
        special = special_strings(self.tokenizer_config)

        def render(batch: dict[str, list]) -> dict[str, list]:
            n = len(next(iter(batch.values())))
            out = [r for i in range(n) for r in self._render({k: v[i] for k, v in batch.items()}, source, special)]
            return {key: [r[key] for r in out] for key in out[0]} if out else {}

        key = fingerprint(key, "render", self.columns, self.completion_column, self.label_column, self.unpaired,
                          source, special)  # fmt: skip
        rendered = rows.map(render, batched=True, remove_columns=rows.column_names, new_fingerprint=key, desc="render")
        keys = self.split_keys(key)
        train, val = split_documents(rendered, self.val_fraction, self.split_seed, self.path)
        responses = ["response"] if self.judged else ["chosen", "rejected"]
        self.train_texts = list(train["prompt"]) + [t for key in responses for t in train[key]]
        self.keep_sample_prompts(list(dict.fromkeys(val.select(range(min(len(val), 2 * SAMPLE_PROMPTS)))["prompt"])))
        self.tokenizer, self.tokenizer_path, self.tokenizer_trained = resolve_tokenizer(
            self.tokenizer_config, list(self.train_texts), keys["train"], self.objective, self.cache_dir
        )
        tokens = tokenizer_key(self.tokenizer)
        self._examples = {
            name: self._tokenize(part, responses, fingerprint(keys[name], tokens, "tokenize"))
            for name, part in (("train", train), ("val", val))
        }
        train_part = self._examples["train"]
        self.stats = {
            "examples": {name: len(part) for name, part in self._examples.items()},
            "vocab_size": self.tokenizer.vocab_size,
            "prompt_tokens_mean": round(sum(map(len, train_part["prompt_ids"])) / len(train_part), 1),
            **({"desirable": int(sum(train_part["label"]))} if self.judged else {}),
        }
        self.describe_batches()

    def _tokenize(self, part, responses: list[str], key: str):
        """Token ids of the prompts and responses, cached under `key` (the part's and the tokenizer's); a judged
        example also gets `kl_response_ids`, the next example's response (the last takes the first's), for KTO's KL
        estimate."""
        tokenizer = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, list]:
            return {f"{key}_ids": tokenizer.encode_batch(batch[key]) for key in ("prompt", *responses)}

        part = part.map(
            encode, batched=True, remove_columns=["prompt", *responses], new_fingerprint=key, desc="tokenize"
        )
        if not self.judged:
            return part
        ids = part["response_ids"]
        return part.add_column("kl_response_ids", ids[1:] + ids[:1], new_fingerprint=fingerprint(key, "kl"))

    def fit_context(self, model: LanguageModel) -> None:
        """Examples are truncated to the model's context by the objective: nothing to check."""

    def row_lengths(self, part) -> np.ndarray:
        responses = [
            c for c in ("chosen_ids", "rejected_ids", "response_ids", "kl_response_ids") if c in part.column_names
        ]
        return list_lengths(part, "prompt_ids") + np.max([list_lengths(part, c) for c in responses], axis=0)
