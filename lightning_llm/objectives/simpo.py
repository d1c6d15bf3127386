"""SimPO (Meng et al. 2024): preference without a reference model, on length-normalised log-probabilities.

With the policy's mean log-probability per token of each response, a = avg log pi(chosen), b = avg log pi(rejected):
loss = -(1 - eps) log sigmoid(beta (a - b) - gamma) - eps log sigmoid(-(beta (a - b) - gamma)), where `gamma` is the
target reward margin and eps = `label_smoothing` (as TRL's CPO trainer with `loss_type=simpo`). The rewards are
beta a and beta b; `logps/*` are the per-token means the loss uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.objectives.base import ObjectiveOutput
from lightning_llm.objectives.preference import (
    PreferenceObjective,
    check_beta,
    check_label_smoothing,
    preference_scalars,
)


def simpo_losses(
    chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float, gamma: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Each pair's loss from the mean per-token log-probabilities of its responses."""
    logits = beta * (chosen_mean - rejected_mean) - gamma
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


class SimPO(PreferenceObjective):
    """`objective=simpo`: length-normalised rewards with a target margin, no reference model."""

    def __init__(self, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing, True, "simpo")
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        logits, logps, tokens = self.response_logps(model, batch)
        chosen, rejected = (logps / tokens.clamp(min=1)).chunk(2)
        losses = simpo_losses(chosen, rejected, self.beta, self.gamma, self.label_smoothing)
        scalars = preference_scalars(self.beta * chosen, self.beta * rejected, chosen, rejected)
        return ObjectiveOutput(losses.mean(), logits, batch["labels"], self.tokens_read(batch), scalars)
