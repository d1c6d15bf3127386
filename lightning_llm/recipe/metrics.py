"""What a run reads off the trainer and the model for its results: scalars, eval metrics for loggers, whether
the replicas agree and whether the model is sharded."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The train/ and val/ scalars of a metrics dict, as floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("train/", "val/"))}


def eval_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    """Numeric eval results as `eval/<task>/<metric>` for the loggers."""
    out = {
        f"eval/{task}/{name}": float(value)
        for task, result in evaluation["tasks"].items()
        for name, value in result.get("metrics", {}).items()
        if isinstance(value, int | float)
    }
    out.update({f"eval/summary/{k}": float(v) for k, v in evaluation["summary"].items() if isinstance(v, int | float)})
    return out


def sharded(model: torch.nn.Module) -> bool:
    """Whether the model's parameters are sharded across ranks (FSDP2 DTensors)."""
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def replicas_in_sync(trainer: pl.Trainer, model: torch.nn.Module) -> bool:
    """Whether every data-parallel rank ends with the same weights (a checksum gathered from all ranks)."""
    with torch.no_grad():
        local = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
        checksum = torch.stack([p.detach().double().sum() for p in local]).sum().reshape(1)
    gathered = trainer.strategy.all_gather(checksum.to(trainer.strategy.root_device))
    return bool(torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=0))
