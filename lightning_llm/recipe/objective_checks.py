"""Checks of the post-training objectives (preference tuning, reward models, distillation) against the rest of the
config, before anything loads: one line each, naming the key and the fix."""

from __future__ import annotations

import hydra.utils
from omegaconf import DictConfig, OmegaConf

from lightning_llm.errors import ConfigError
from lightning_llm.objectives import PreferenceObjective, RewardModel


def post_training_objectives() -> tuple[type, ...]:
    """The objectives whose loss needs more than the model's token logits and labels."""
    return (PreferenceObjective, RewardModel)


def check_post_training(cfg: DictConfig) -> None:
    """A preference objective adapts a model that already answers; none of these objectives runs under DP-SGD
    (a pair's loss couples two rows, whose gradients Opacus clips one by one) or pipeline parallel (the stages
    compute the token loss only)."""
    objective_cls = hydra.utils.get_class(cfg.objective._target_)
    if not issubclass(objective_cls, post_training_objectives()):
        return
    name = cfg.objective._target_.rsplit(".", 1)[-1]
    if issubclass(objective_cls, PreferenceObjective) and not cfg.model.get("pretrained"):
        raise ConfigError(
            f"objective {name} tunes a model that already answers and model.pretrained is not set: give "
            "model.pretrained=<an SFT run, .ckpt or Hugging Face folder>"
        )
    if "_target_" in (cfg.get("privacy") or {}):
        raise ConfigError(
            f"privacy=dp cannot train objective {name}: its loss couples rows (a pair, a teacher's row), and DP-SGD "
            "clips each row's gradient alone; use privacy=none"
        )
    if int(OmegaConf.select(cfg, "trainer.pipeline_parallel_size", default=1) or 1) > 1:
        raise ConfigError(
            f"trainer=pp computes the stages' token loss, not objective {name}'s: use trainer=fsdp, tp or ddp"
        )
