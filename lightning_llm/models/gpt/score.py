"""How evaluation scores text with a decoder: a continuation's tokens predicted left to right after its context."""

from __future__ import annotations

from typing import Any

import torch

from lightning_llm.models.scoring import (
    EvalLM,
    GenerationSettings,
    LogLikelihood,
    NotApplicable,
    Pair,
    continuation_score,
)
from lightning_llm.tokenizers import pad_rows


class DecoderEvalLM(EvalLM):
    """Sequences open as the tokenizer's own convention says (<s> when it adds one, as lm-evaluation-harness);
    a text's first token, or an empty context, is predicted from the harness's prefix token: bos when the
    tokenizer has one (whether or not it adds it), else end-of-text."""

    min_context = 1

    @property
    def prefix_ids(self) -> list[int]:
        return self.tokenizer.sequence_start

    @property
    def rolling_prefix(self) -> list[int]:
        tok = self.tokenizer
        first = tok.bos_id if tok.bos_id is not None else tok.eos_id
        if first is None:
            raise NotApplicable("the tokenizer has neither a bos nor an eos token to start a sequence with")
        return [first]

    @property
    def max_tokens(self) -> int:
        return self.block_size + 1  # the last token is only a target

    def score_batch(self, pairs: list[Pair]) -> list[LogLikelihood]:
        # right padding: causal attention never lets a real token see the pads after it
        logits = self.model(pad_rows([(c + x)[:-1] for c, x in pairs], self.tokenizer.pad_id).to(self.device))
        return [continuation_score(logits[i, len(c) - 1 : len(c) - 1 + len(x)], x) for i, (c, x) in enumerate(pairs)]

    def frame_prompt(self, ids: list[int]) -> list[int]:
        return ((self.prefix_ids + ids) or self.rolling_prefix)[-self.block_size :]

    def generate_batch(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        settings: GenerationSettings,
        generator: torch.Generator,
        **hooks: Any,
    ) -> torch.Tensor:
        out = self.model.generate(
            ids,
            settings.max_new_tokens,
            attention_mask=mask,
            eos_id=self.tokenizer.eos_id,
            generator=generator,
            **settings.sampling(),
            **hooks,
        )
        return out[:, ids.size(1) :]
