"""Data: embedded corpora, loading, cleaning and the datamodules (packed text; supervised examples)."""

from lightning_llm.data.datamodule import TextDataModule
from lightning_llm.data.sampling import PackedBlocks
from lightning_llm.data.supervised import SupervisedDataModule

__all__ = ["PackedBlocks", "SupervisedDataModule", "TextDataModule"]
