"""Data preparation before tokenization, the way large-scale pretraining does it.

    dataset, report = apply_pipeline(dataset, ["normalize", "quality", "pii", "dedup_exact", "dedup_near"])

Steps, in the order given: normalize (Unicode NFC/NFKC, whitespace, control characters), quality (Gopher
rules), pii (e-mail, phone and IP placeholders), dedup_exact, dedup_near (MinHash-LSH, checked on the
signatures), decontaminate (word 13-grams shared with evaluation texts). Settings and defaults: DEFAULT_SETTINGS.

The report has one dict per step: name, documents_in/kept/removed, characters_in/kept/removed, details (what
each rule removed, PII replaced per kind, duplicates, ...) and seconds. For a `Dataset` it is complete when
`apply_pipeline` returns; for an `IterableDataset` it is live: it counts what has been read so far.
"""

from lightning_llm.data.pipeline.dedup import find_near_duplicates, lsh_params
from lightning_llm.data.pipeline.quality import gopher_reason, gopher_reasons
from lightning_llm.data.pipeline.runner import ENGINES, apply_pipeline, check_engine
from lightning_llm.data.pipeline.steps import DEFAULT_SETTINGS, resolve_steps
from lightning_llm.data.pipeline.text import normalize_text, redact_pii

STEPS = tuple(DEFAULT_SETTINGS)

__all__ = [
    "DEFAULT_SETTINGS",
    "ENGINES",
    "STEPS",
    "apply_pipeline",
    "check_engine",
    "find_near_duplicates",
    "gopher_reason",
    "gopher_reasons",
    "lsh_params",
    "normalize_text",
    "redact_pii",
    "resolve_steps",
]
