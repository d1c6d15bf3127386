"""Bottleneck adapters (Houlsby et al. 2019) after each attention and MLP sub-layer; the base is frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import FinetuneMethod, freeze_all_but_task_head
from lightning_llm.models import LanguageModel
from lightning_llm.models.blocks import ACTIVATIONS


class Bottleneck(nn.Module):
    """x -> up(act(down(x))), with `up` zero-initialised so an added adapter starts as the identity."""

    def __init__(self, dim: int, size: int, activation: str) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(dim, size), nn.Linear(size, dim)
        self.act = ACTIVATIONS[activation]
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class WithAdapter(nn.Module):
    """Runs the wrapped sub-layer, then adds its adapter's output: h + adapter(h)."""

    def __init__(self, inner: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.inner, self.adapter = inner, adapter
        self.enabled = True  # off: the wrapped sub-layer alone (FinetuneMethod.disabled)

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        h = self.inner(*args, **kwargs)
        return h + self.adapter(h) if self.enabled else h


@dataclass
class Adapter(FinetuneMethod):
    """Insert a bottleneck adapter of `size` after every attention, cross-attention and MLP sub-layer."""

    name: ClassVar[str] = "adapter"
    saves_trainable_only: ClassVar[bool] = True
    mergeable: ClassVar[bool] = False
    added: ClassVar[type[nn.Module]] = WithAdapter
    size: int = 32
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"finetune.activation={self.activation!r} is unknown: use one of {list(ACTIVATIONS)}")

    def apply(self, model: LanguageModel) -> LanguageModel:
        freeze_all_but_task_head(model)
        dim = model.config.n_embd
        for stack in model.layer_stacks():
            for block in stack:
                for name in ("attn", "cross_attn", "mlp"):
                    inner = getattr(block, name, None)
                    if inner is not None:
                        setattr(block, name, WithAdapter(inner, Bottleneck(dim, self.size, self.activation)))
        return model
