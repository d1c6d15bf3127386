"""Data: embedded corpora, loading, cleaning and the datamodules (packed text; supervised examples)."""

from lightning_llm.data.datamodule import PackedBlocks, TextDataModule
from lightning_llm.data.supervised import SupervisedDataModule

__all__ = ["PackedBlocks", "SupervisedDataModule", "TextDataModule"]
