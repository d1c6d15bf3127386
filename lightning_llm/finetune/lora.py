"""LoRA: frozen base weights plus a trainable low-rank update B·A on selected linear layers (Hu et al. 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import FinetuneMethod, freeze_all_but_task_head, matching_linears, replace_module
from lightning_llm.models import LanguageModel

DEFAULT_TARGETS = ["*attn.qkv", "*attn.q", "*attn.kv", "*attn.proj"]


class LoRALinear(nn.Module):
    """y = base(x) + dropout(x) Aᵀ Bᵀ · alpha/r, with B initialised to zero so training starts at the base."""

    def __init__(
        self, base: nn.Module, in_features: int, out_features: int, rank: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()  # no random op when off (DP-SGD replays it)
        self.enabled = True  # off: the base layer alone (FinetuneMethod.disabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        update = F.linear(F.linear(self.dropout(x), self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype))
        return self.base(x) + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update as a dense matrix: B·A·alpha/r."""
        return (self.lora_b @ self.lora_a) * self.scaling


@dataclass
class LoRA(FinetuneMethod):
    """Wrap every linear layer matching `target_modules` with a LoRA update; everything else is frozen."""

    name: ClassVar[str] = "lora"
    saves_trainable_only: ClassVar[bool] = True
    added: ClassVar[type[nn.Module]] = LoRALinear
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def __post_init__(self) -> None:
        self.target_modules = list(self.target_modules or DEFAULT_TARGETS)
        if self.rank < 1:
            raise ConfigError(f"finetune.rank={self.rank} must be at least 1")

    def wrap_base(self, linear: nn.Linear) -> nn.Module:
        """The frozen base layer the LoRA update sits on (QLoRA quantizes it here)."""
        return linear

    def apply(self, model: LanguageModel) -> LanguageModel:
        freeze_all_but_task_head(model)
        for name, linear in matching_linears(model, self.target_modules):
            wrapped = LoRALinear(
                self.wrap_base(linear), linear.in_features, linear.out_features, self.rank, self.alpha, self.dropout
            )
            replace_module(model, name, wrapped.to(linear.weight.device))
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Replace each LoRALinear by a plain Linear with W + B·A·alpha/r (same outputs, no extra cost)."""
        for name, module in list(model.named_modules()):
            if isinstance(module, LoRALinear):
                replace_module(model, name, self.merged_linear(module))
        return model

    def merged_linear(self, module: LoRALinear) -> nn.Linear:
        return plain_linear(module.base, self.base_weight(module.base) + module.delta_weight().float())

    def base_weight(self, base: nn.Module) -> torch.Tensor:
        """The base layer's weight in float32 (dequantized for QLoRA)."""
        return base.weight.float()


def plain_linear(like: nn.Module, weight: torch.Tensor) -> nn.Linear:
    """A frozen nn.Linear with `weight` and the bias of `like`."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=like.bias is not None, device=weight.device)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if like.bias is not None:
            linear.bias.copy_(like.bias.float())
    return linear.requires_grad_(False)
