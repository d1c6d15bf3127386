"""Feature-based fine-tuning: the base is frozen except selected transformer layers and the task head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import FinetuneMethod, freeze_all_but_task_head
from lightning_llm.models import LanguageModel


def select_layers(spec: str | int | list[int], n: int) -> list[int]:
    """Layer indices from `last:K`, `first:K`, `middle:K`, an index or a list of indices (negatives count back)."""
    if isinstance(spec, str) and ":" in spec:
        where, _, count = spec.partition(":")
        k = int(count) if count.isdigit() else -1
        if where not in ("first", "last", "middle") or not 0 <= k <= n:
            raise ConfigError(f"finetune.layers={spec!r} is not valid for {n} layers: use first:K, last:K or middle:K")
        start = {"first": 0, "last": n - k, "middle": (n - k) // 2}[where]
        return list(range(start, start + k))
    indices = [spec] if isinstance(spec, int) else list(spec)
    bad = [i for i in indices if not isinstance(i, int) or not -n <= i < n]
    if bad:
        raise ConfigError(f"finetune.layers={list(indices)} has {bad[0]}, outside the model's {n} layers")
    return sorted({int(i) % n for i in indices})


@dataclass
class Freeze(FinetuneMethod):
    """Freeze the base; train only `layers` of each block stack (and the task head, if any)."""

    name: ClassVar[str] = "freeze"
    layers: str | int | list[int] = "last:2"

    def __post_init__(self) -> None:
        if not isinstance(self.layers, str | int):
            self.layers = list(self.layers)  # a ListConfig from Hydra becomes plain data for checkpoints

    def apply(self, model: LanguageModel) -> LanguageModel:
        freeze_all_but_task_head(model)
        for stack in model.layer_stacks():
            for index in select_layers(self.layers, len(stack)):
                stack[index].requires_grad_(True)
        return model
