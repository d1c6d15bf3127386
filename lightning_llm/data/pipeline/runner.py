"""`apply_pipeline`: run the configured steps over a `datasets.Dataset` (cached, parallel) or an
`IterableDataset` (lazily, as it is iterated), and report what each step removed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, IterableDataset, Value

from lightning_llm.data.fingerprint import fingerprint
from lightning_llm.data.pipeline.ray_engine import run_on_ray
from lightning_llm.data.pipeline.steps import Decider, Step, build_step, resolve_steps
from lightning_llm.errors import ConfigError
from lightning_llm.extras import require

VERSION = "1"  # part of every cache key: bump when a step's output changes for the same settings
BATCH_SIZE = 1000
DECIDE_BATCH_SIZE = 65536
_COUNT_PREFIX = "__pipeline_"
ENGINES = ("local", "ray")


def _key(*parts: str | None) -> str | None:
    """A cache key of the pipeline's, from the key of its input (None without one: `datasets` names it)."""
    return None if parts[0] is None else fingerprint(VERSION, *parts)


def _entry(step: Step) -> dict[str, Any]:
    """A report entry with nothing counted yet."""
    keys = ("documents_in", "documents_kept", "documents_removed", "characters_in", "characters_kept")
    counts = {**dict.fromkeys(keys, 0), "characters_removed": 0}
    return {"name": step.name, **counts, "details": dict(step.details), "seconds": 0.0}


def _account(entry: dict[str, Any], docs_in: int, docs_kept: int, chars_in: int, chars_kept: int) -> None:
    """Add a batch's (or the whole dataset's) counts to a report entry."""
    entry["documents_in"] += docs_in
    entry["documents_kept"] += docs_kept
    entry["documents_removed"] = entry["documents_in"] - entry["documents_kept"]
    entry["characters_in"] += chars_in
    entry["characters_kept"] += chars_kept
    entry["characters_removed"] = entry["characters_in"] - entry["characters_kept"]


def _check_texts(texts: Sequence[Any], where: str, first_index: int) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(
                f"pipeline: document {first_index + i} of {where} is {type(text).__name__} {text!r:.40}, "
                "not a string: drop or fill missing texts before the pipeline"
            )


def _check_column(dataset: Dataset | IterableDataset, column: str) -> None:
    names = dataset.column_names
    if names is not None and column not in names:
        raise ConfigError(f"pipeline: text column {column!r} is not a column of the dataset: its columns are {names}")
    feature = (dataset.features or {}).get(column)
    if feature is not None and not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ConfigError(f"pipeline: column {column!r} holds {feature}, not text: give a column of strings")


# -- in memory ----------------------------------------------------------------------------------
def _lengths(dataset: Dataset, column: str) -> np.ndarray:
    """Characters (code points) of each document, in order; a ConfigError on a missing text."""
    parts, start = [], 0
    for table in dataset.with_format("arrow", columns=[column]).iter(batch_size=DECIDE_BATCH_SIZE):
        texts = table.column(column)
        if texts.null_count:
            first = start + int(pc.index(pc.is_null(texts), True).as_py())
            raise ConfigError(
                f"pipeline: document {first} has no text (None) in column {column!r}: "
                "drop or fill missing texts before the pipeline"
            )
        parts.append(pc.utf8_length(texts).to_numpy().astype(np.int64))
        start += len(table)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _transform_columns(texts: list[str], transform: Callable, column: str) -> dict[str, list]:
    new, counts = transform(texts)
    return {column: new, **{_COUNT_PREFIX + k: v for k, v in counts.items()}}


def _as_numpy(array: pa.ChunkedArray) -> Any:
    """An annotation column as numpy: fixed-size lists as a 2-D array, strings as a list."""
    if pa.types.is_fixed_size_list(array.type):
        flat = array.combine_chunks()
        return flat.values.to_numpy().reshape(len(flat), array.type.list_size)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array.to_pylist()
    return array.to_numpy()


def _decide(annotations: Dataset, decider: Decider) -> np.ndarray:
    """Keep mask: the decider sees the annotations in order, in this process."""
    keep, start = [], 0
    for table in annotations.with_format("arrow").iter(batch_size=DECIDE_BATCH_SIZE):
        columns = {name: _as_numpy(table.column(name)) for name in table.column_names}
        keep.append(decider(columns, np.arange(start, start + len(table))))
        start += len(table)
    return np.concatenate(keep) if keep else np.empty(0, dtype=bool)


def _run_step(
    dataset: Dataset,
    lengths: np.ndarray,
    step: Step,
    column: str,
    num_proc: int | None,
    entry: dict[str, Any],
    key: str | None,
) -> tuple[Dataset, np.ndarray]:
    """One step in memory: (dataset, lengths) after it; fills `entry`. `key` names its output (see `_key`)."""
    common = {"batched": True, "batch_size": BATCH_SIZE, "input_columns": [column], "num_proc": num_proc}
    if step.transform is not None:
        mapped = dataset.map(
            partial(_transform_columns, transform=step.transform, column=column),
            new_fingerprint=_key(key, "transform"),
            desc=f"pipeline: {step.name}",
            **common,
        )
        count_columns = [_COUNT_PREFIX + k for k in step.count_keys]
        for name in count_columns:
            entry["details"][name.removeprefix(_COUNT_PREFIX)] = int(pc.sum(mapped.data.column(name)).as_py() or 0)
        dataset = mapped.remove_columns(count_columns, new_fingerprint=_key(key, "drop-counts"))
        new_lengths = _lengths(dataset, column)
        _account(entry, len(lengths), len(lengths), int(lengths.sum()), int(new_lengths.sum()))
        return dataset, new_lengths
    annotations = dataset.map(
        step.annotate,
        remove_columns=dataset.column_names,
        features=step.features,
        new_fingerprint=_key(key, "annotate"),
        desc=f"pipeline: {step.name}",
        **common,
    )
    decider = step.make_decider()
    keep = _decide(annotations, decider)
    entry["details"].update(decider.details)
    _account(entry, len(lengths), int(keep.sum()), int(lengths.sum()), int(lengths[keep].sum()))
    if not keep.all():
        dataset = dataset.select(np.flatnonzero(keep), new_fingerprint=_key(key, "select"))
    return dataset, lengths[keep]


def _run_in_memory(
    dataset: Dataset, plan: list[Step], column: str, num_proc: int | None, key: str | None
) -> tuple[Dataset, list[dict[str, Any]]]:
    report = [_entry(step) for step in plan]
    lengths = _lengths(dataset, column)
    for step, entry in zip(plan, report, strict=True):
        start = time.perf_counter()
        key = _key(key, step.key(), column)  # a step's output: its input's key, its settings, the column
        if len(dataset):
            dataset, lengths = _run_step(dataset, lengths, step, column, num_proc, entry, key)
        entry["seconds"] = round(time.perf_counter() - start, 3)
    return dataset, report


# -- streaming ----------------------------------------------------------------------------------
class _Streamed:
    """A step as a batched `IterableDataset.map`/`filter` function that fills its report entry as batches pass.

    Index 0 starts a new pass over the stream: the entry and the dedup state start afresh."""

    def __init__(self, step: Step, column: str, entry: dict[str, Any]) -> None:
        self.step, self.column, self.entry = step, column, entry
        self.decider: Decider | None = None

    def _begin(self, texts: list[Any], indices: list[int]) -> float:
        if indices and indices[0] == 0:
            self.entry.update(_entry(self.step))
            self.decider = self.step.make_decider() if self.step.make_decider else None
        _check_texts(texts, f"text column {self.column!r}", indices[0] if indices else 0)
        return time.perf_counter()

    def transform(self, texts: list[str], indices: list[int]) -> dict[str, list[str]]:
        start = self._begin(texts, indices)
        new, counts = self.step.transform(texts)
        details = self.entry["details"]
        for kind, values in counts.items():
            details[kind] = details.get(kind, 0) + sum(values)
        _account(self.entry, len(texts), len(texts), sum(map(len, texts)), sum(map(len, new)))
        self.entry["seconds"] = round(self.entry["seconds"] + time.perf_counter() - start, 3)
        return {self.column: new}

    def filter(self, texts: list[str], indices: list[int]) -> list[bool]:
        start = self._begin(texts, indices)
        keep = self.decider(self.step.annotate(texts), np.asarray(indices, dtype=np.int64))
        self.entry["details"].update(self.decider.details)
        kept_chars = sum(len(t) for t, k in zip(texts, keep, strict=True) if k)
        _account(self.entry, len(texts), int(keep.sum()), sum(map(len, texts)), kept_chars)
        self.entry["seconds"] = round(self.entry["seconds"] + time.perf_counter() - start, 3)
        return keep.tolist()


def _run_streaming(
    dataset: IterableDataset, plan: list[Step], column: str
) -> tuple[IterableDataset, list[dict[str, Any]]]:
    report = [_entry(step) for step in plan]
    for step, entry in zip(plan, report, strict=True):
        streamed = _Streamed(step, column, entry)
        common = {"batched": True, "batch_size": BATCH_SIZE, "with_indices": True, "input_columns": [column]}
        if step.transform is not None:
            dataset = dataset.map(streamed.transform, **common)
        else:
            dataset = dataset.filter(streamed.filter, **common)
    return dataset, report


# -- entry point --------------------------------------------------------------------------------
def check_engine(engine: str) -> None:
    """A one-line ConfigError for an unknown engine, or for ray when Ray Data is not installed."""
    if engine not in ENGINES:
        raise ConfigError(f"data.pipeline_engine={engine!r} is unknown: choose from {', '.join(ENGINES)}")
    if engine == "ray":
        require("ray", "data.pipeline_engine=ray")


def apply_pipeline(
    dataset: Dataset | IterableDataset,
    steps: Sequence[str | Mapping[str, Any]] | None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    text_column: str = "text",
    num_proc: int | None = None,
    decontaminate_against: Sequence[str] | None = None,
    engine: str = "local",
    key: str | None = None,
) -> tuple[Dataset | IterableDataset, list[dict[str, Any]]]:
    """Run `steps` (names, or {name: {setting overrides}}) in order over `dataset`'s `text_column`.

    `settings` maps step names to overrides of DEFAULT_SETTINGS. Returns the prepared dataset (same type, all
    columns kept) and a report: one dict per step with name, documents_in/kept/removed, characters_in/kept/
    removed (removed may be negative for pii: placeholders can be longer than what they replace), details
    (per-rule or per-kind counts) and seconds.

    A `Dataset` is processed now, with `datasets.map` (num_proc workers, cached by fingerprint: an unchanged
    pipeline over unchanged data is read back from the cache); dedup decisions are made in this process. The
    caches are named from `key`, what identifies the dataset's rows (the caller's cache key, e.g. `TextCorpus`'s
    key of a source as read), and each step's settings; without a key `datasets` names them from the dataset.
    An `IterableDataset` is processed lazily as it is iterated (num_proc does not apply): the report is live,
    counting what has been seen so far in the current pass, and restarts with each new pass; dedup keeps only
    hashes/signatures in memory, in the iterating process (DataLoader workers would each dedup their own shards
    and keep their own counts).

    `engine="ray"` runs a `Dataset` on Ray Data instead (ray_engine: a local Ray with num_proc CPUs, or the
    cluster in RAY_ADDRESS), with the same decisions and report (but seconds), and no cache.
    """
    if not isinstance(dataset, Dataset | IterableDataset):
        raise ConfigError(f"pipeline: expected a datasets.Dataset or IterableDataset, not {type(dataset).__name__}")
    check_engine(engine)
    if engine == "ray" and isinstance(dataset, IterableDataset):
        raise ConfigError("data.pipeline_engine=ray runs over a prepared dataset, not a stream: use local here")
    resolved = resolve_steps(steps, settings)
    _check_column(dataset, text_column)
    eval_texts = None if decontaminate_against is None else list(decontaminate_against)
    if eval_texts:
        _check_texts(eval_texts, "decontaminate_against", 0)
    plan = [build_step(name, step_settings, eval_texts) for name, step_settings in resolved]
    if not plan:
        return dataset, []
    if isinstance(dataset, IterableDataset):
        return _run_streaming(dataset, plan, text_column)
    if engine == "ray":
        _lengths(dataset, text_column)  # a missing text is the same one-line error on both engines
        report = [_entry(step) for step in plan]
        output = _key(key, *(step.key() for step in plan), text_column, engine)
        return run_on_ray(dataset, plan, text_column, num_proc, report, output), report
    return _run_in_memory(dataset, plan, text_column, num_proc, key)
