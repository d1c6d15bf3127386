"""The tokenizer interface every tokenizer implements, and the special tokens the objectives reserve."""

from __future__ import annotations

from collections.abc import Iterable

import torch

BASE_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")  # ids 0..3 in every tokenizer we train
MASK_TOKEN = "<mask>"  # masked language modelling (added when the objective asks for it)


def sentinel(i: int) -> str:
    """T5's i-th span sentinel, `<extra_id_i>`."""
    return f"<extra_id_{i}>"


class Tokenizer:
    """Text <-> token ids. Ours: ids 0-3 are pad, unk, bos, eos; objective-specific tokens follow.

    `adds_bos` says whether a sequence the model reads starts with `bos_id` (ours: yes; a Hugging Face
    tokenizer: what its own post-processor does, e.g. no for GPT-2 and Qwen2).
    """

    pad_id: int | None = 0
    unk_id: int | None = 1
    bos_id: int | None = 2
    eos_id: int | None = 3
    adds_bos: bool = True

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The serialized tokenizer (plain data), so a checkpoint carries its own tokenizer."""
        raise NotImplementedError

    def has_token(self, token: str) -> bool:
        """Whether `token` is a piece of the vocabulary (not mapped to unk)."""
        i = self.token_to_id(token)
        return i is not None and i != self.unk_id

    @property
    def sequence_start(self) -> list[int]:
        """The ids a sequence opens with, as the tokenizer's own convention says ([bos] or nothing)."""
        return [self.bos_id] if self.adds_bos and self.bos_id is not None else []


def pad_rows(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad lists of ids into a (batch, longest) tensor."""
    width = max(map(len, rows))
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)
