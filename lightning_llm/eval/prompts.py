"""Prompt formats declared in task YAML, and few-shot sampling.

As in lm-evaluation-harness, text fields (`description`, `context`, `continuation`) are Jinja templates over a
row's columns, and value fields (`choices`, `gold`, `reference`) are Jinja expressions (`choices.text`,
`choices.label.index(answerKey)`, `['no', 'yes']`, `answer | int`). A few-shot prompt is

    description + (shot + fewshot_delimiter) * num_fewshot + context

where a shot is a solved example: its context, the target delimiter and its answer.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jinja2

from lightning_llm.errors import ConfigError

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=256)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@lru_cache(maxsize=256)
def _expression(source: str) -> Callable[..., Any]:
    return _ENV.compile_expression(source, undefined_to_none=False)


def render(template: str, row: dict[str, Any], **extra: Any) -> str:
    """Fill a Jinja template with a row's columns (and `extra` variables)."""
    return _template(template).render(**row, **extra)


def evaluate(expression: str, row: dict[str, Any]) -> Any:
    """The value of a Jinja expression over a row's columns."""
    return _expression(expression)(**row)


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag(row: dict[str, Any]) -> dict[str, Any]:
    """lm-evaluation-harness's HellaSwag preprocessing: a cleaned `query`, `endings_clean` and an int `gold`."""
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        **row,
        "query": _hellaswag_clean(row["activity_label"] + ": " + context),
        "endings_clean": [_hellaswag_clean(ending) for ending in row["endings"]],
        "gold": int(row["label"]),
    }


#: Row preprocessors a task names with `process_docs` (as the harness's `!function utils.process_docs`).
PROCESS_DOCS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"hellaswag": hellaswag}


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


class FewShotSampler:
    """Draws `k` solved examples per item from a pool (a train/dev split, or the eval rows themselves).

    Each item gets its own generator seeded by (seed, item index), so an item's shots do not depend on which
    other items are evaluated. Pool rows equal to the item under test are never drawn. With `match`, shots
    come only from pool rows with the same value in that column (e.g. MMLU's subject).
    """

    def __init__(self, pool: list[dict[str, Any]], seed: int, match: str | None = None) -> None:
        self.pool, self.seed, self.match = pool, seed, match
        self.keys = [_row_key(row) for row in pool]
        self.groups: dict[Any, list[int]] = defaultdict(list)
        for i, row in enumerate(pool):
            self.groups[row[match] if match else None].append(i)
        self.counts = Counter((row[match] if match else None, key) for row, key in zip(pool, self.keys, strict=True))

    def sample(self, row: dict[str, Any], index: int, k: int) -> list[dict[str, Any]]:
        """`k` pool rows for the item `row` (number `index` of the evaluation), never the item itself."""
        if k == 0:
            return []
        group = row[self.match] if self.match else None
        key = _row_key(row)
        candidates = self.groups.get(group, [])
        rng = random.Random(self.seed * 1_000_003 + index)
        drawn = rng.sample(candidates, min(len(candidates), k + self.counts[(group, key)]))
        shots = [self.pool[i] for i in drawn if self.keys[i] != key][:k]
        if len(shots) < k:
            where = f" with {self.match}={group!r}" if self.match else ""
            raise ConfigError(f"num_fewshot={k} but only {len(shots)} few-shot examples{where} are available")
        return shots


class HarnessFewShotSampler:
    """lm-evaluation-harness's default few-shot sampler, for scores that match its item for item: one
    `random.Random(seed)` (the harness's fewshot_random_seed is 1234) draws each item's shots in evaluation
    order; when the pool is the evaluated set itself it draws k + 1 and drops the item."""

    def __init__(self, pool: list[dict[str, Any]], seed: int, pool_is_eval_set: bool) -> None:
        self.pool, self.rng, self.pool_is_eval_set = pool, random.Random(seed), pool_is_eval_set

    def sample(self, row: dict[str, Any], index: int, k: int) -> list[dict[str, Any]]:
        if k == 0:
            return []
        if k > len(self.pool) - self.pool_is_eval_set:
            raise ConfigError(f"num_fewshot={k} but only {len(self.pool)} few-shot examples are available")
        if not self.pool_is_eval_set:
            return self.rng.sample(self.pool, k)
        shots = [shot for shot in self.rng.sample(self.pool, k + 1) if shot != row][:k]
        if len(shots) < k:  # the pool holds copies of the item: draw again without them, as the harness does
            shots = self.rng.sample([shot for shot in self.pool if shot != row], k)
        return shots


def fewshot_prompt(description: str, shots: list[str], context: str, fewshot_delimiter: str) -> str:
    """description + each shot followed by the delimiter + the item's context."""
    return description + "".join(shot + fewshot_delimiter for shot in shots) + context
