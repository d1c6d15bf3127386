"""The recipe: one run of a composed config through named stages, its checks, results and provenance.

The names below load on first use, so `train.py` can import `recipe.ddp` without importing torch/Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainingRecipe", "instantiate_model", "resolved_config", "run_experiment", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("lightning_llm.recipe.run"), name)
    raise AttributeError(f"module 'lightning_llm.recipe' has no attribute {name!r}")
