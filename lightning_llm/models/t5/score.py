"""How evaluation scores text with an encoder-decoder: `context </s>` is encoded, the decoder (started with
<pad>) scores the continuation."""

from __future__ import annotations

from typing import Any

import torch

from lightning_llm.models.scoring import (
    EvalLM,
    GenerationSettings,
    LogLikelihood,
    Pair,
    continuation_score,
    lengths_mask,
)
from lightning_llm.tokenizers import pad_rows


class Seq2SeqEvalLM(EvalLM):
    """Context and continuation go to different stacks, so they are encoded apart (as the harness does)."""

    @property
    def max_tokens(self) -> int:
        return self.block_size

    def encode_pair(self, context: str, continuation: str) -> Pair:
        return self.tokenizer.encode(context), self.tokenizer.encode(continuation)

    def fit(self, context: list[int], continuation: list[int]) -> Pair:
        if len(continuation) > self.block_size:
            raise ValueError(f"a continuation of {len(continuation)} tokens exceeds the decoder's {self.block_size}")
        return context[-(self.block_size - 1) :], continuation

    def score_batch(self, pairs: list[Pair]) -> list[LogLikelihood]:
        tok = self.tokenizer
        encoder_rows = [c[-(self.block_size - 1) :] + [tok.eos_id] for c, _ in pairs]
        encoder_ids = pad_rows(encoder_rows, tok.pad_id).to(self.device)
        mask = lengths_mask(encoder_rows, encoder_ids.size(1), self.device)
        decoder_ids = pad_rows([[tok.pad_id, *x[:-1]] for _, x in pairs], tok.pad_id).to(self.device)
        logits = self.model(encoder_ids, decoder_ids, mask)
        return [continuation_score(logits[i, : len(x)], x) for i, (_, x) in enumerate(pairs)]

    def frame_prompt(self, ids: list[int]) -> list[int]:
        return [*ids[-(self.block_size - 1) :], self.tokenizer.eos_id]

    def generate_batch(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        settings: GenerationSettings,
        generator: torch.Generator,
        **hooks: Any,
    ) -> torch.Tensor:
        tok = self.tokenizer
        return self.model.generate(
            ids,
            settings.max_new_tokens,
            attention_mask=mask,
            decoder_start_id=tok.pad_id,
            eos_id=tok.eos_id,
            generator=generator,
            **settings.sampling(),
            **hooks,
        )
