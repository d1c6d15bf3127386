"""One experiment from a composed config: the recipe its settings ask for (estimate, train, or evaluate only)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig


def run_experiment(cfg: DictConfig) -> tuple[dict[str, Any], pl.LightningModule | None]:
    """Run one experiment from a composed config; its results (as written) and the trained LightningModule
    (None for an evaluation-only run, `train=false`)."""
    if cfg.get("estimate"):
        from lightning_llm.recipe.estimate import EstimateRecipe

        recipe = EstimateRecipe(cfg)
    elif cfg.get("train", True):
        from lightning_llm.recipe.run import TrainingRecipe

        recipe = TrainingRecipe(cfg)
    else:
        from lightning_llm.recipe.eval_only import EvaluationRecipe

        recipe = EvaluationRecipe(cfg)
    return recipe.run().to_dict(), recipe.module


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment from a composed config; returns (and writes) its results."""
    return run_experiment(cfg)[0]
