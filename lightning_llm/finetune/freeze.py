"""Feature-based fine-tuning: the base is frozen except selected transformer layers and the task head."""

from __future__ import annotations

from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import FinetuneMethod, freeze_all_but_task_head


def layer_stacks(model: nn.Module) -> list[nn.ModuleList]:
    """The model's stacks of transformer blocks (GPT/BERT: one; T5: encoder and decoder)."""
    stacks = [getattr(model, name) for name in ("blocks", "encoder", "decoder") if hasattr(model, name)]
    return [s for s in stacks if isinstance(s, nn.ModuleList)]


def select_layers(spec: str | int | list[int], n: int) -> list[int]:
    """Layer indices from `last:K`, `first:K`, `middle:K`, an index or a list of indices (negatives count back)."""
    if isinstance(spec, str) and ":" in spec:
        where, _, count = spec.partition(":")
        k = int(count)
        if where not in ("first", "last", "middle") or not 0 <= k <= n:
            raise ConfigError(f"finetune.layers={spec!r} is not valid for {n} layers: use first:K, last:K or middle:K")
        start = {"first": 0, "last": n - k, "middle": (n - k) // 2}[where]
        return list(range(start, start + k))
    indices = [spec] if isinstance(spec, int) else list(spec)
    bad = [i for i in indices if not -n <= int(i) < n]
    if bad:
        raise ConfigError(f"finetune.layers={list(indices)} has {bad[0]}, outside the model's {n} layers")
    return sorted({int(i) % n for i in indices})


class Freeze(FinetuneMethod):
    """Freeze the base; train only `layers` of each block stack (and the task head, if any)."""

    name = "freeze"

    def __init__(self, layers: str | int | list[int] = "last:2") -> None:
        self.layers = layers

    def apply(self, model: nn.Module) -> nn.Module:
        freeze_all_but_task_head(model)
        for stack in layer_stacks(model):
            for index in select_layers(self.layers, len(stack)):
                stack[index].requires_grad_(True)
        return model
