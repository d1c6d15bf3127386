"""A reward from a reward model (a checkpoint trained with objective=reward) for GRPO's `objective.rewards`:

    - _target_: lightning_llm.training.rewards.RewardModelScore
      checkpoint: logs/runs/rm
      weight: 0.5

It scores `prompt + completion` with the model's one-output head. The checkpoint is read (weights_only) when the
run binds its objective, on the training device; the path is checked when the config is."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_llm.checkpoints import is_hf_source, load_pretrained, model_from_pretrained
from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.objectives.reward import reward_rows, rewards
from lightning_llm.objectives.rewards import Reward
from lightning_llm.tokenizers import Tokenizer


class RewardModelScore(Reward):
    """The reward model's score of each prompt + completion (its own tokenizer, batches of `batch_size`)."""

    def __init__(
        self, checkpoint: str, weight: float = 1.0, name: str | None = "reward_model", batch_size: int = 16
    ) -> None:
        super().__init__(weight, name)
        if not (Path(checkpoint).expanduser().exists() or is_hf_source(checkpoint)):
            raise ConfigError(
                f"objective.rewards[] RewardModelScore checkpoint={checkpoint!r} does not exist: give a run folder "
                "or .ckpt trained with objective=reward"
            )
        self.checkpoint, self.batch_size = str(checkpoint), batch_size
        self.model: LanguageModel | None = None
        self.tokenizer: Tokenizer | None = None

    def prepare(self, device: torch.device) -> None:
        """Load the reward model onto `device` (once)."""
        if self.model is None:
            key = "objective.rewards[].checkpoint"
            pretrained = load_pretrained(self.checkpoint, key=key)
            model = model_from_pretrained(pretrained)
            if model.task_head is None or model.task_head.out_features != 1 or pretrained.tokenizer is None:
                raise ConfigError(f"{key}={self.checkpoint!r} is not a reward model: train one with objective=reward")
            self.model, self.tokenizer = model.requires_grad_(False), pretrained.tokenizer
        self.model.to(device)

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        if self.model is None:
            self.prepare(torch.device("cpu"))
        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
        scores: list[float] = []
        every = [(tok.encode(p), tok.encode(c)) for p, c in zip(prompts, completions, strict=True)]
        for start in range(0, len(every), self.batch_size):
            pairs = every[start : start + self.batch_size]
            batch = {k: v.to(device) for k, v in reward_rows(tok, model.context_length, pairs).items()}
            scores += rewards(model, batch).tolist()
        return scores
