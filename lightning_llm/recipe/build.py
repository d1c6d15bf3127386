"""Objects the recipes build from config groups: every `_target_` of a dict-of-configs group, and the model."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_llm.models import LanguageModel
from lightning_llm.recipe.schema import MODEL_SWITCHES


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, logger) that has a `_target_`."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def instantiate_model(model_cfg: DictConfig, vocab_size: int) -> LanguageModel:
    """The model group's model, with its memory and speed switches applied."""
    model = instantiate({k: v for k, v in model_cfg.items() if k not in MODEL_SWITCHES}, vocab_size=vocab_size)
    model.activation_checkpointing = bool(model_cfg.get("activation_checkpointing"))
    if model_cfg.get("compile"):
        model.compile()  # in place: parameter names (and so checkpoints) stay as they are
    return model
