"""Data: embedded corpora, tokenizers and the datamodules (packed text; supervised examples)."""

from lightning_llm.data.datamodule import PackedBlocks, TextDataModule
from lightning_llm.data.supervised import SupervisedDataModule
from lightning_llm.data.tokenizer import Tokenizer, load_tokenizer, train_or_load_tokenizer

__all__ = [
    "PackedBlocks",
    "SupervisedDataModule",
    "TextDataModule",
    "Tokenizer",
    "load_tokenizer",
    "train_or_load_tokenizer",
]
