"""Reward models (Bradley-Terry): a scalar head on any family's classification features (a decoder's last real
token, an encoder's pooled state) scores prompt + response; trained on preference pairs so that the chosen response
scores higher: loss = -log sigmoid(r(chosen) - r(rejected)) + c * mean((r(chosen) + r(rejected))^2), c being TRL's
`center_rewards_coefficient` (0: off). Logged: `rewards/chosen`, `rewards/rejected`, `rewards/margins`,
`rewards/accuracies` (the share of pairs ranked right; ties count half). A trained checkpoint scores texts with
`lightning-llm score` (`score_texts`)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.objectives.base import Objective, ObjectiveContext, ObjectiveOutput
from lightning_llm.objectives.preference import preference_scalars
from lightning_llm.tokenizers import Tokenizer


def reward_rows(tokenizer: Tokenizer, max_length: int, pairs: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """(prompt ids, response ids) pairs framed as the model reads them (`<s> prompt response </s>`, the start cut
    when it is too long) and right-padded, with their attention mask."""
    rows = [
        [*tokenizer.sequence_start, *prompt, *response][-(max_length - 1) :] + [tokenizer.eos_id]
        for prompt, response in pairs
    ]
    width = max(map(len, rows))
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    return {
        "input_ids": torch.tensor([row + [pad] * (width - len(row)) for row in rows]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows]),
    }


def rewards(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One scalar per row: the task head over the row's classification features."""
    mask = batch["attention_mask"]
    features = model.classification_features(model.encode(batch["input_ids"], mask), mask)
    return model.task_head(features).squeeze(-1).float()


@torch.no_grad()
def score_texts(
    model: LanguageModel, tokenizer: Tokenizer, texts: list[str], prompt: str = "", batch_size: int = 8
) -> list[float]:
    """A reward model's score of each text (as the response to `prompt`, which may be empty)."""
    if model.task_head is None or model.task_head.out_features != 1:
        raise ConfigError(
            "the model has no one-output head: it is not a reward model (train one with objective=reward)"
        )
    prompt_ids = tokenizer.encode(prompt) if prompt else []
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        pairs = [(prompt_ids, tokenizer.encode(text)) for text in texts[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in reward_rows(tokenizer, model.context_length, pairs).items()}
        scores += rewards(model, batch).tolist()
    return scores


class RewardModel(Objective):
    """`objective=reward`: examples carry `prompt_ids`, `chosen_ids` and `rejected_ids`."""

    architectures = ("decoder", "encoder")
    examples = "preferences"

    def __init__(self, center_rewards_coefficient: float = 0.0) -> None:
        super().__init__()
        if center_rewards_coefficient < 0:
            raise ConfigError(f"objective.center_rewards_coefficient={center_rewards_coefficient} must be >= 0")
        self.center_rewards_coefficient = center_rewards_coefficient

    def configure(self, context: ObjectiveContext) -> None:
        """The scalar head (`model.task_head`, one output), which trains under every fine-tuning method."""
        super().configure(context)
        if context.model is not None:
            context.model.attach_task_head(1)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = [(ex["prompt_ids"], ex[key]) for key in ("chosen_ids", "rejected_ids") for ex in examples]
        return reward_rows(self.tokenizer, self.max_length, pairs)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        scores = rewards(model, batch)
        chosen, rejected = scores.chunk(2)
        loss = -F.logsigmoid(chosen - rejected).mean()
        if self.center_rewards_coefficient:
            loss = loss + self.center_rewards_coefficient * ((chosen + rejected) ** 2).mean()
        tokens = int(batch["attention_mask"].sum().item())
        return ObjectiveOutput(loss, scores, chosen.detach(), tokens, preference_scalars(chosen, rejected))

    def sample(self, model: nn.Module, prompt: str, max_new_tokens: int, **sampling: Any) -> str:
        """The reward of `prompt` as a whole text."""
        return f"{prompt!r} -> reward {score_texts(model, self.tokenizer, [prompt])[0]:.4f}"
