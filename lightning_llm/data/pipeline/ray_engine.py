"""The pipeline on Ray Data (`data.pipeline_engine=ray`): the same steps, run as distributed batch maps and
shuffles over a cluster (or a local Ray with `workers` CPUs), deciding exactly as the local engine does.

- normalize, pii: a batch map; the per-kind counts are summed per block by the workers.
- quality, decontaminate: a batch map that writes each document's rejection reason; the workers count the
  reasons per block (a few rule names); documents without one are kept.
- dedup_exact: a batch map hashes each document; a group-by on the hash counts each key and finds its first
  document; only the keys seen more than once (with their first document) come back to the driver, and a batch
  map drops every document of such a key but its first.
- dedup_near: MinHash-LSH. A batch map computes each document's signature and emits one row per LSH band
  (band hash, document id, the signature's low 16 bits); a group-by on the band hash finds the bands shared by
  more than one document (and its first document, the band's head); those rows are grouped by head, and each
  group compares the later documents with their head on the full signatures. A document is dropped when it is
  similar (>= threshold) to the first document of one of its bands: the local engine's rule, so both keep the
  same documents. Signatures never gather on one node: only the shared band hashes (with their heads) and the
  candidate pairs reach the driver.

Documents keep their order: each carries its index (`__doc_id`), and the result is sorted by it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from lightning_llm.data.pipeline.steps import ByReason, Step

DOC = "__doc_id"
CHARS = "__chars"
COUNT = "__count_"
BATCH_SIZE = 1000


def start_ray(workers: int | None) -> bool:
    """Connect to the Ray cluster in RAY_ADDRESS, or start a local one with `workers` CPUs (all when None).
    Returns whether this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.WARNING)
    settings: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **settings)
    else:
        ray.init(num_cpus=workers, **settings)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


# -- batch functions (module level: Ray ships them to its workers) -----------------------------------------
def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, name, values) if index >= 0 else table.append_column(name, values)


def _transform(table: pa.Table, step: Step, column: str) -> pa.Table:
    texts = table.column(column).to_pylist()
    new, counts = step.transform(texts)
    table = _with_column(table, column, pa.array(new, type=table.schema.field(column).type))
    table = _with_column(table, CHARS, pc.utf8_length(table.column(column)).cast(pa.int64()))
    for kind, values in counts.items():
        table = _with_column(table, COUNT + kind, pa.array(values, type=pa.int64()))
    return table


def _annotate(table: pa.Table, step: Step, column: str, name: str) -> pa.Table:
    values = next(iter(step.annotate(table.column(column).to_pylist()).values()))
    if isinstance(values, np.ndarray) and values.ndim == 2:  # signatures
        array = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
    else:
        array = pa.array(values)
    return _with_column(table, name, array)


def _keep(table: pa.Table, mask: np.ndarray, drop: list[str]) -> pa.Table:
    return table.filter(pa.array(mask)).drop_columns([c for c in drop if c in table.column_names])


def _keep_without_reason(table: pa.Table) -> pa.Table:
    return _keep(table, pc.is_null(table.column("__reason")).to_numpy(zero_copy_only=False), ["__reason"])


def _keep_first_of_keys(table: pa.Table, keys: np.ndarray, firsts: np.ndarray) -> pa.Table:
    """Drop the documents whose key is in the sorted `keys` unless they are that key's first document."""
    key = table.column("__key").to_numpy()
    pos = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
    shared = keys[pos] == key if len(keys) else np.zeros(len(key), dtype=bool)
    doc = table.column(DOC).to_numpy()
    return _keep(table, ~shared | (firsts[pos] == doc), ["__key"])


def _keep_unlisted(table: pa.Table, dropped: np.ndarray) -> pa.Table:
    return _keep(table, ~np.isin(table.column(DOC).to_numpy(), dropped), ["__signature"])


def _band_rows(table: pa.Table, band_multipliers: np.ndarray) -> pa.Table:
    """One row per (document, LSH band): the band hash, the document and its signature's low 16 bits."""
    bands, rows = band_multipliers.shape
    signatures = table.column("__signature").combine_chunks()
    num_perm = signatures.type.list_size
    signatures = signatures.values.to_numpy().reshape(-1, num_perm)
    used = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    keys = (used * band_multipliers).sum(axis=2, dtype=np.uint64).ravel()
    low = np.repeat(signatures.astype(np.uint16), bands, axis=0)
    sig = pa.Array.from_buffers(pa.binary(2 * num_perm), len(low), [None, pa.py_buffer(low.tobytes())])
    return pa.table({"band": keys, DOC: np.repeat(table.column(DOC).to_numpy(), bands), "sig": sig})


def _pair_rows(table: pa.Table, shared: np.ndarray, firsts: np.ndarray) -> pa.Table:
    """The rows of bands that more than one document has (`shared`, sorted), each with its band's first
    document as `head`; a (head, document) pair once per batch however many bands it shares."""
    band = table.column("band").to_numpy()
    pos = np.minimum(np.searchsorted(shared, band), max(len(shared) - 1, 0))
    rows = np.flatnonzero(shared[pos] == band) if len(shared) else np.empty(0, dtype=np.int64)
    heads, docs = firsts[pos[rows]], table.column(DOC).to_numpy()[rows]
    _, once = np.unique(np.stack([heads, docs], axis=1), axis=0, return_index=True)
    rows = rows[np.sort(once)]
    columns = {"head": firsts[pos[rows]], DOC: table.column(DOC).take(rows), "sig": table.column("sig").take(rows)}
    return pa.table(columns)


def _compare_with_head(group: pa.Table, threshold: float) -> pa.Table:
    """For one head (the first document of some shared bands): each later document that shares a band with it,
    compared on the full (low 16-bit) signatures."""
    docs = group.column(DOC).to_numpy()
    width = group.schema.field("sig").type.byte_width // 2
    signatures = np.frombuffer(b"".join(group.column("sig").to_pylist()), dtype=np.uint16).reshape(-1, width)
    head = group.column("head")[0].as_py()
    is_later = docs != head
    later = np.flatnonzero(is_later)[np.unique(docs[is_later], return_index=True)[1]]
    similar = (signatures[later] == signatures[int(np.argmax(docs == head))]).mean(axis=1) >= threshold
    return pa.table({DOC: docs[later], "head": np.full(len(later), head, dtype=np.int64), "similar": similar})


# -- the driver ------------------------------------------------------------------------------------------
def _collect(ds: Any) -> list[pa.Table]:
    import ray

    return [t for t in ray.get(ds.to_arrow_refs()) if len(t)]


def _more_than_once(table: pa.Table) -> pa.Table:
    return table.filter(pc.greater(table.column("n"), 1))


def _shared_keys(ds: Any, key: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(sorted keys that more than one row has, the first document of each, rows beyond the first): a
    distributed group-by; only those keys come back to the driver."""
    from ray.data.aggregate import Count, Min

    counted = ds.groupby(key).aggregate(Count(alias_name="n"), Min(DOC, alias_name="first"))
    tables = _collect(counted.map_batches(_more_than_once, batch_format="pyarrow"))
    if not tables:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), 0
    shared = pa.concat_tables(tables).sort_by(key)
    counts = shared.column("n").to_numpy()
    return shared.column(key).to_numpy(), shared.column("first").to_numpy(), int((counts - 1).sum())


def _block_sums(table: pa.Table, columns: list[str]) -> pa.Table:
    return pa.table({"rows": [len(table)], **{c: [pc.sum(table.column(c)).as_py() or 0] for c in columns}})


def _sums(ds: Any, columns: list[str]) -> tuple[int, list[int]]:
    """(rows, the sum of each integer column): summed per block by the workers, then over the blocks here."""
    tables = _collect(ds.map_batches(_block_sums, fn_kwargs={"columns": columns}, batch_size=None,
                                     batch_format="pyarrow"))  # fmt: skip
    total = pa.concat_tables(tables) if tables else pa.table({"rows": [0], **{c: [0] for c in columns}})
    return int(pc.sum(total.column("rows")).as_py()), [int(pc.sum(total.column(c)).as_py() or 0) for c in columns]


def _block_reasons(table: pa.Table) -> pa.Table:
    reasons, counts = pc.value_counts(table.column("__reason").drop_null()).flatten()
    return pa.table({"reason": reasons.cast(pa.string()), "n": counts.cast(pa.int64())})


def _run_transform(ds: Any, step: Step, column: str, entry: dict[str, Any]) -> Any:
    ds = ds.map_batches(_transform, fn_kwargs={"step": step, "column": column}, batch_format="pyarrow",
                        batch_size=BATCH_SIZE).materialize()  # fmt: skip
    names = [COUNT + kind for kind in step.count_keys]
    _, counts = _sums(ds, names)
    entry["details"].update(zip(step.count_keys, counts, strict=True))
    return ds.drop_columns(names) if names else ds


def _run_filter(ds: Any, step: Step, column: str, entry: dict[str, Any]) -> Any:
    name = {"dedup_exact": "__key", "dedup_near": "__signature"}.get(step.name, "__reason")
    kwargs = {"fn_kwargs": {"step": step, "column": column, "name": name}, "batch_format": "pyarrow"}
    annotated = ds.map_batches(_annotate, batch_size=BATCH_SIZE, **kwargs).materialize()
    decider = step.make_decider()
    if isinstance(decider, ByReason):
        reasons: Counter[str] = Counter()  # a few rule names: counted per block, added up here
        for table in _collect(annotated.map_batches(_block_reasons, batch_size=None, batch_format="pyarrow")):
            reasons.update(dict(zip(table.column("reason").to_pylist(), table.column("n").to_pylist(), strict=True)))
        entry["details"].update(reasons)
        return annotated.map_batches(_keep_without_reason, batch_format="pyarrow")
    if step.name == "dedup_exact":
        keys, firsts, duplicates = _shared_keys(annotated.select_columns([name, DOC]), name)
        entry["details"].update({"duplicates": duplicates})
        return annotated.map_batches(_keep_first_of_keys, fn_kwargs={"keys": keys, "firsts": firsts},
                                     batch_format="pyarrow")  # fmt: skip
    near = decider.decide
    rows = (
        annotated.select_columns([name, DOC])
        .map_batches(_band_rows, fn_kwargs={"band_multipliers": near._band_multipliers}, batch_format="pyarrow")
        .materialize()
    )
    shared, firsts, _ = _shared_keys(rows.select_columns(["band", DOC]), "band")
    dropped, candidate_pairs = np.empty(0, dtype=np.int64), 0
    if len(shared):
        kwargs = {"fn_kwargs": {"shared": shared, "firsts": firsts}, "batch_format": "pyarrow"}
        candidates = rows.map_batches(_pair_rows, **kwargs)
        pairs = candidates.groupby("head").map_groups(
            _compare_with_head, fn_kwargs={"threshold": near.threshold}, batch_format="pyarrow"
        )
        found = _collect(pairs)
        candidate_pairs = sum(len(t) for t in found)
        dropped = np.unique(np.concatenate([t.filter(t.column("similar")).column(DOC).to_numpy() for t in found]))
    entry["details"].update({"duplicates": len(dropped), "candidate_pairs": candidate_pairs})
    return annotated.map_batches(_keep_unlisted, fn_kwargs={"dropped": dropped}, batch_format="pyarrow")


def run_on_ray(
    dataset: Dataset,
    plan: list[Step],
    column: str,
    workers: int | None,
    report: list[dict[str, Any]],
    fingerprint: str | None,
) -> Dataset:
    """Run `plan` over `dataset` on Ray; fills `report` (one entry per step, as the local engine's) and returns
    the kept documents, in order, as an in-memory `datasets.Dataset` with the given `fingerprint` (None:
    `datasets` makes one)."""
    import ray

    started = start_ray(workers)
    try:
        table = dataset.with_format("arrow")[:]
        table = table.append_column(DOC, pa.array(np.arange(len(table), dtype=np.int64)))
        table = table.append_column(CHARS, pc.utf8_length(table.column(column)).cast(pa.int64()))
        size = -(-len(table) // (4 * max(1, int(ray.available_resources().get("CPU", 1)))))
        ds = ray.data.from_arrow([table.slice(i, size) for i in range(0, len(table), max(size, 1))])
        documents, characters = len(table), int(pc.sum(table.column(CHARS)).as_py() or 0)
        for step, entry in zip(plan, report, strict=True):
            start = time.perf_counter()
            if documents:
                ds = (_run_transform if step.transform is not None else _run_filter)(ds, step, column, entry)
                ds = ds.materialize()
                kept, (kept_characters,) = _sums(ds, [CHARS])
                entry.update(documents_in=documents, documents_kept=kept, documents_removed=documents - kept)
                entry.update(characters_in=characters, characters_kept=kept_characters,
                             characters_removed=characters - kept_characters)  # fmt: skip
                documents, characters = kept, kept_characters
            entry["seconds"] = round(time.perf_counter() - start, 3)
        tables = _collect(ds)
        result = pa.concat_tables(tables).sort_by(DOC) if tables else table.slice(0, 0)
        return Dataset(result.drop_columns([DOC, CHARS]), fingerprint=fingerprint)
    finally:
        if started:
            ray.shutdown()
