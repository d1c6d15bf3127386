"""Rebuild any tokenizer from the bytes a checkpoint stores, or from a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning_llm.tokenizers.base import Tokenizer
from lightning_llm.tokenizers.hf import HFTokenizer
from lightning_llm.tokenizers.trained import trained_from_bytes


def tokenizer_from_bytes(data: bytes) -> Tokenizer:
    """The tokenizer behind `Tokenizer.to_bytes()`: a Hugging Face one or one of ours (plain data, never code)."""
    if data[:1] == b"{":
        try:
            payload = json.loads(data)
        except ValueError:
            payload = {}
        if isinstance(payload, dict) and payload.get("type") == "hf":
            return HFTokenizer.from_bytes(data)
    return trained_from_bytes(data)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer file written by `train_or_load_tokenizer` (or any `to_bytes()` output)."""
    return tokenizer_from_bytes(Path(path).read_bytes())
