"""Data: embedded corpora, loading, cleaning and the datamodules (packed text; supervised examples; preferences).

The datamodules are imported when first asked for, so that `lightning_llm.data.pipeline` (run in Ray workers
and data tools) starts without importing Lightning."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "PackedBlocks": "lightning_llm.data.sampling",
    "PreferenceDataModule": "lightning_llm.data.preference",
    "SupervisedDataModule": "lightning_llm.data.supervised",
    "TextDataModule": "lightning_llm.data.datamodule",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
