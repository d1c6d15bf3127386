"""Optimizer parameter groups and learning-rate schedules (configured in conf/optimizer, conf/scheduler)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lightning_llm.models.blocks import RMSNorm

_NORMS = (nn.LayerNorm, RMSNorm)


def parameter_groups(model: nn.Module, decay_embeddings: bool = False) -> list[dict]:
    """Weight decay (the optimizer's own setting) on matrices only: never on norms or biases, and on embeddings
    only with `decay_embeddings` (nanoGPT decays every matrix, embeddings included).

    A head tied to the input embedding counts as an embedding.
    """
    embeddings = set() if decay_embeddings else {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    norms = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters()}
    decay, no_decay = [], []
    for param in model.parameters():  # each shared (tied) parameter once
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or id(param) in embeddings or id(param) in norms
        (no_decay if skip else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 100, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """Linear warmup to the base learning rate, then cosine decay to `min_lr_ratio` of it."""
    lr_lambda = warmup_cosine_lambda(total_steps, warmup_steps, min_lr_ratio)
    return LambdaLR(optimizer, lr_lambda)


def warmup_cosine_lambda(total_steps: int, warmup_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each step."""
    warmup_steps = min(warmup_steps, max(0, total_steps - 1))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return multiplier


def constant(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Linear warmup, then a constant learning rate."""
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)
