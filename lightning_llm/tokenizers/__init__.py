"""Tokenizers: one interface (`Tokenizer`) for the ones we train (SentencePiece BPE/unigram, characters) and
Hugging Face's (tokenizer.json, spiece.model); serialization to plain bytes and export for transformers."""

from lightning_llm.tokenizers.base import BASE_SPECIAL_TOKENS, MASK_TOKEN, Tokenizer, pad_rows, sentinel
from lightning_llm.tokenizers.hf import HFTokenizer
from lightning_llm.tokenizers.loading import load_tokenizer, tokenizer_from_bytes
from lightning_llm.tokenizers.trained import (
    TOKENIZER_TYPES,
    CharTokenizer,
    SentencePieceTokenizer,
    check_tokenizer_type,
    train_or_load_tokenizer,
)

__all__ = [
    "BASE_SPECIAL_TOKENS",
    "MASK_TOKEN",
    "TOKENIZER_TYPES",
    "CharTokenizer",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "check_tokenizer_type",
    "load_tokenizer",
    "pad_rows",
    "sentinel",
    "tokenizer_from_bytes",
    "train_or_load_tokenizer",
]
