"""T5 span corruption: replace random spans with sentinels; the decoder writes the spans back."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import Objective, ObjectiveOutput, token_cross_entropy
from lightning_llm.tokenizers import sentinel


def span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a sequence of `length` tokens, as T5 counts them."""
    num_noise = int(round(length * noise_density))
    return num_noise, int(round(num_noise / mean_span_length))


def input_and_target_lengths(inputs_length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """T5's `compute_input_and_target_lengths`: the raw length whose corrupted form fills `inputs_length`
    exactly (non-noise tokens + one sentinel per span + eos), and the resulting target length."""

    def lengths(raw: int) -> tuple[int, int]:
        noise, spans = span_counts(raw, noise_density, mean_span_length)
        return raw - noise + spans + 1, noise + spans + 1

    raw = inputs_length
    while lengths(raw + 1)[0] <= inputs_length:
        raw += 1
    return raw, lengths(raw)[1]


def random_segmentation(num_items: int, num_segments: int) -> torch.Tensor:
    """Split `num_items` into `num_segments` random non-empty lengths."""
    starts = torch.zeros(num_items - 1, dtype=torch.long)
    starts[torch.randperm(num_items - 1)[: num_segments - 1]] = 1
    segment_id = torch.cat((torch.zeros(1, dtype=torch.long), starts.cumsum(0)))
    return torch.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float, mean_span_length: float) -> torch.Tensor:
    """T5's noise mask: alternating non-noise/noise spans, starting with non-noise; True marks noise."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span_length)
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(num_spans, 1)
    noise_lengths = random_segmentation(num_noise, num_spans)
    keep_lengths = random_segmentation(length - num_noise, num_spans)
    interleaved = torch.stack((keep_lengths, noise_lengths), dim=1).flatten()
    span_index = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)
    return span_index % 2 == 1


def replace_spans(tokens: torch.Tensor, spans: torch.Tensor, sentinel_ids: torch.Tensor) -> torch.Tensor:
    """Replace each run of True in `spans` by the next sentinel id, dropping the rest of the run."""
    starts = spans & ~torch.cat((torch.zeros(1, dtype=torch.bool), spans[:-1]))
    out = torch.where(starts, sentinel_ids[starts.cumsum(0) - 1], tokens)
    return out[~spans | starts]


class SpanCorruption(Objective):
    """Inputs: the block with each noise span replaced by a sentinel, then eos (exactly the block size).
    Targets: each sentinel followed by the span it hides, then eos. Noise density 0.15, mean span 3."""

    architectures = ("encoder-decoder",)

    def __init__(self, noise_density: float = 0.15, mean_span_length: float = 3.0, num_sentinels: int = 100) -> None:
        super().__init__()
        if not 0 < noise_density < 1:
            raise ConfigError(f"objective.noise_density={noise_density} must be between 0 and 1 (exclusive)")
        if mean_span_length < 1 or num_sentinels < 1:
            raise ConfigError(
                f"objective.mean_span_length={mean_span_length} and objective.num_sentinels={num_sentinels} must be "
                "at least 1"
            )
        self.noise_density, self.mean_span_length, self.num_sentinels = noise_density, mean_span_length, num_sentinels

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return tuple(sentinel(i) for i in range(self.num_sentinels))

    def block_layout(self, block_size: int) -> tuple[int, int]:
        raw, _ = input_and_target_lengths(block_size, self.noise_density, self.mean_span_length)
        spans = span_counts(raw, self.noise_density, self.mean_span_length)[1]
        if spans > self.num_sentinels:
            raise ConfigError(
                f"objective.num_sentinels={self.num_sentinels} is fewer than the {spans} spans a block of "
                f"{block_size} tokens gets: raise objective.num_sentinels or lower data.block_size"
            )
        return raw, raw

    def corrupt(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for one raw window of token ids."""
        noise = random_spans_noise_mask(len(tokens), self.noise_density, self.mean_span_length)
        sentinels = torch.tensor([self.tokenizer.token_to_id(s) for s in self.special_tokens])
        eos = torch.tensor([self.tokenizer.eos_id])
        inputs = torch.cat((replace_spans(tokens, noise, sentinels), eos))
        targets = torch.cat((replace_spans(tokens, ~noise, sentinels), eos))
        return inputs, targets

    def collate(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs, targets = zip(*(self.corrupt(b.long()) for b in blocks), strict=True)
        labels = torch.stack(targets)
        start = torch.full((labels.size(0), 1), self.tokenizer.pad_id)  # T5's decoder start token
        return {
            "input_ids": torch.stack(inputs),
            "decoder_input_ids": torch.cat((start, labels[:, :-1]), dim=1),
            "labels": labels,
        }

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        logits = model(batch["input_ids"], batch["decoder_input_ids"], batch.get("attention_mask"))
        loss = token_cross_entropy(logits, batch["labels"], self.per_row_loss)
        tokens = batch["input_ids"].numel() + batch["decoder_input_ids"].numel()
        return ObjectiveOutput(loss, logits.flatten(0, 1), batch["labels"].flatten(), tokens)

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({"accuracy": MulticlassAccuracy(num_classes=vocab_size, average="micro")})

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        """Ask the decoder for the span hidden after the prompt: `prompt <extra_id_0></s>`."""
        tok = self.tokenizer
        device = next(model.parameters()).device
        ids = torch.tensor([[*tok.encode(prompt), tok.token_to_id(sentinel(0)), tok.eos_id]], device=device)
        out = model.generate(ids, max_new_tokens, decoder_start_id=tok.pad_id, eos_id=tok.eos_id, **sampling)
        return f"{prompt} {sentinel(0)} -> {tok.decode(out[0].tolist())}"
