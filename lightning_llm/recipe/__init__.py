"""The recipe: one run of a composed config through named stages, its checks, results and provenance.

The names below load on first use, so `train.py` can import `recipe.ddp` without importing torch/Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_HOMES = {
    "TrainingRecipe": "lightning_llm.recipe.run",
    "instantiate_model": "lightning_llm.recipe.build",
    "resolved_config": "lightning_llm.recipe.context",
    "run_experiment": "lightning_llm.recipe.experiment",
    "train": "lightning_llm.recipe.experiment",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'lightning_llm.recipe' has no attribute {name!r}")
