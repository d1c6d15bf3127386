"""Data: embedded corpora, tokenizers and the datamodule."""

from lightning_llm.data.datamodule import PackedBlocks, TextDataModule
from lightning_llm.data.tokenizer import Tokenizer, load_tokenizer, train_or_load_tokenizer

__all__ = ["PackedBlocks", "TextDataModule", "Tokenizer", "load_tokenizer", "train_or_load_tokenizer"]
