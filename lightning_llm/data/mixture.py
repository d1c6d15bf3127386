"""Several corpora mixed by weight (`data.sources`): each is loaded, cleaned, split and tokenized on its own
(cached by its own fingerprint), then training rows are drawn from source s with probability weight_s. Rows of
one source have the same length as any other's, so the weights are the token proportions too."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from lightning_llm.data.sampling import ResumableSampler
from lightning_llm.errors import ConfigError

#: per-source keys; anything else a source sets is named as unknown
SOURCE_KEYS = ("path", "weight", "name", "split", "text_column", "sample_by")


@dataclass
class Source:
    """One corpus of a mixture (or the only one: `data.path`)."""

    name: str
    path: str
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # name, split, text_column, sample_by overrides

    @property
    def key(self) -> str:
        """How errors name this source's path."""
        return f"data.sources.{self.name}.path" if self.name else "data.path"


def parse_sources(sources: Mapping[str, Any] | None) -> list[Source]:
    """`data.sources` ({name: {path, weight, ...}}) as Sources, checked: known keys, a path each, weights
    non-negative with a positive sum. An empty mapping gives no sources."""
    parsed = []
    for name, spec in (sources or {}).items():
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(SOURCE_KEYS))
        if unknown:
            raise ConfigError(f"data.sources.{name}.{unknown[0]} is not a source option: use {list(SOURCE_KEYS)}")
        if not spec.get("path"):
            raise ConfigError(f"data.sources.{name}.path is missing: give the source's file, folder or dataset name")
        weight = spec.pop("weight", 1.0)
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"data.sources.{name}.weight={weight!r} must be a number >= 0")
        parsed.append(Source(str(name), str(spec.pop("path")), float(weight), spec))
    if parsed and sum(s.weight for s in parsed) <= 0:
        raise ConfigError("data.sources weights sum to 0: give at least one source a positive weight")
    return parsed


class MixedRows(Dataset):
    """The rows of every source, one after another; item i is (row, source index)."""

    def __init__(self, parts: list[Dataset]) -> None:
        self.rows = ConcatDataset(parts)
        self.sizes = [len(part) for part in parts]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.rows[index], bisect.bisect_right(self.rows.cumulative_sizes, index)


class MixtureSampler(ResumableSampler):
    """Each draw picks a source with probability proportional to its weight, then one of its rows uniformly;
    `num_examples` draws per epoch (default: as many as there are rows in all). Seeded by (seed, epoch): a
    resumed epoch replays."""

    def __init__(self, sizes: list[int], weights: list[float], seed: int, num_examples: int | None = None) -> None:
        super().__init__(num_examples or sum(sizes), seed)
        self.sizes = torch.tensor(sizes)
        self.offsets = torch.cumsum(self.sizes, 0) - self.sizes
        self.weights = torch.tensor([w if n else 0.0 for w, n in zip(weights, sizes, strict=True)])

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        sources = torch.multinomial(self.weights, self.num_examples, replacement=True, generator=generator)
        within = (torch.rand(self.num_examples, generator=generator) * self.sizes[sources]).long()
        return self.offsets[sources] + within


def collate_with_sources(collate):
    """Wrap an objective's collate for (row, source) items: the batch also carries `source_ids`."""

    def collate_mixed(items: list[tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        batch = collate([row for row, _ in items])
        batch["source_ids"] = torch.tensor([source for _, source in items])
        return batch

    return collate_mixed


def realized_mixture(sources: list[Source], tokens: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per source: its weight (normalized), the share of training tokens it supplied, and those tokens."""
    total_weight, total = sum(s.weight for s in sources), max(1, int(tokens.sum()))
    return {
        s.name: {"weight": round(s.weight / total_weight, 4), "realized": round(int(n) / total, 4), "tokens": int(n)}
        for s, n in zip(sources, tokens.tolist(), strict=True)
    }
