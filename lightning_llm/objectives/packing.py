"""How documents share a row (`data.packing`): concatenated, packed with document masks, or one per row.

- `concat`: documents end to end (joined by eos); attention runs across their boundaries (GPT-2, nanoGPT).
- `doc_mask`: packed the same way, but attention never crosses a boundary and positions restart per document,
  so each document reads as if it were alone (block-diagonal masks through SDPA).
- `pad`: one document per row (long ones split into consecutive rows), right-padded; no compute is shared.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

PACKINGS = ("concat", "doc_mask", "pad")


def document_layout(tokens: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(document_ids, position_ids) of packed rows (batch, time): a document ends at its eos, the next begins
    right after; positions count from 0 at each document's first token (a row's first, partial document too)."""
    ends = tokens == eos_id
    starts = torch.zeros_like(ends)
    starts[:, 1:] = ends[:, :-1]
    starts[:, 0] = True
    document_ids = starts.long().cumsum(dim=1) - 1
    index = torch.arange(tokens.size(1), device=tokens.device).expand_as(tokens)
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return document_ids, index - first


def pad_documents(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows of different lengths into (tokens, attention_mask), mask 1 = real token."""
    tokens = pad_sequence([row.long() for row in rows], batch_first=True, padding_value=pad_id)
    lengths = torch.tensor([len(row) for row in rows])
    return tokens, (torch.arange(tokens.size(1))[None] < lengths[:, None]).long()


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The optional model arguments a batch carries (padding mask, per-document ids and positions)."""
    return {key: batch[key] for key in ("attention_mask", "position_ids", "document_ids") if key in batch}
