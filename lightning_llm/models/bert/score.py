"""How evaluation scores text with a masked LM: pseudo-log-likelihood (Salazar et al., 2020), one masked copy
of `<s> context continuation </s>` per continuation token."""

from __future__ import annotations

from functools import cached_property

import torch

from lightning_llm.models.scoring import (
    EvalLM,
    LogLikelihood,
    NotApplicable,
    Pair,
    continuation_score,
    lengths_mask,
    total,
)
from lightning_llm.tokenizers import MASK_TOKEN, pad_rows


class MaskedEvalLM(EvalLM):
    """Each continuation token is masked in turn and predicted from everything else; the scores are summed."""

    @property
    def max_tokens(self) -> int:
        return self.block_size - 2  # <s> ... </s>

    def check_generation(self) -> None:
        raise NotApplicable(f"the {self.family} model is an encoder (masked LM): it does not generate text")

    def score(self, pairs: list[Pair], desc: str) -> list[LogLikelihood]:
        """Expand each pair into one masked row per continuation token, score the rows, sum them per pair."""
        self.mask_id  # noqa: B018 (fail before any work when the tokenizer has no mask token)
        rows = [(c, x, j) for c, x in pairs for j in range(len(x))]
        scores = iter(self.in_batches(rows, self.score_batch, desc, length=lambda r: len(r[0]) + len(r[1])))
        return [total([next(scores) for _ in x]) for _, x in pairs]

    @cached_property
    def mask_id(self) -> int:
        """The id of the mask token: ours (<mask>) or BERT's own ([MASK])."""
        for token in (MASK_TOKEN, "[MASK]"):
            if self.tokenizer.has_token(token):
                return self.tokenizer.token_to_id(token)
        raise NotApplicable(f"the tokenizer has no {MASK_TOKEN} token for pseudo-log-likelihood scoring")

    def score_batch(self, rows: list[tuple[list[int], list[int], int]]) -> list[LogLikelihood]:
        tok, mask_id = self.tokenizer, self.mask_id
        inputs = [[tok.bos_id, *c, *x[:j], mask_id, *x[j + 1 :], tok.eos_id] for c, x, j in rows]
        ids = pad_rows(inputs, tok.pad_id).to(self.device)
        hidden = self.model.encode(ids, lengths_mask(inputs, ids.size(1), self.device))
        positions = torch.tensor([1 + len(c) + j for c, _, j in rows], device=self.device)
        logits = self.model.mlm_logits(hidden[torch.arange(len(rows), device=self.device), positions])
        return [continuation_score(logits[i : i + 1], [x[j]]) for i, (_, x, j) in enumerate(rows)]

    def fill_masks(self, prompts: list[str]) -> list[str]:
        """Each prompt with its mask tokens (or three appended ones) replaced by the model's top choice."""
        tok, mask_id = self.tokenizer, self.mask_id
        rows = []
        for prompt in prompts:
            ids = tok.encode(prompt)
            ids = ids if mask_id in ids else [*ids, mask_id, mask_id, mask_id]
            rows.append([tok.bos_id, *ids[: self.max_tokens], tok.eos_id])

        def run(batch: list[list[int]]) -> list[str]:
            ids = pad_rows(batch, tok.pad_id).to(self.device)
            predicted = self.model(ids, lengths_mask(batch, ids.size(1), self.device)).argmax(-1)
            filled = torch.where(ids == mask_id, predicted, ids)
            return [tok.decode(row[1 : len(b) - 1].tolist()) for row, b in zip(filled, batch, strict=True)]

        return self.in_batches(rows, run, "fill masks")
