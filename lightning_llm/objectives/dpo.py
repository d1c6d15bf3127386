"""Direct preference optimisation (Rafailov et al. 2023) and its variants on the same log-ratios.

With h = (log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)) and beta:

- `sigmoid` (DPO): -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h); eps = `label_smoothing` > 0 is
  conservative DPO (cDPO, labels flipped with probability eps).
- `robust` (rDPO, Chowdhury et al. 2024): ((1 - eps)(-log sigmoid(beta h)) + eps log sigmoid(-beta h)) / (1 - 2 eps),
  an unbiased loss under label noise eps.
- `hinge` (SLiC): max(0, 1 - beta h).
- `ipo` (Azar et al. 2023): (h' - 1 / (2 beta))^2 with each log-ratio divided by its response's tokens, as TRL
  computes it (its authors' normalisation).

The implicit rewards are beta (log pi - log ref) of each response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import ObjectiveOutput
from lightning_llm.objectives.preference import (
    ReferencedObjective,
    check_beta,
    check_label_smoothing,
    preference_scalars,
)

LOSSES = ("sigmoid", "robust", "hinge", "ipo")


def dpo_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each pair's loss from the summed log-probabilities of its responses (`ipo` also needs their token counts)."""
    chosen_ratio, rejected_ratio = policy_chosen - reference_chosen, policy_rejected - reference_rejected
    if loss == "ipo":
        h = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        return (h - 1 / (2 * beta)) ** 2
    logits, eps = beta * (chosen_ratio - rejected_ratio), label_smoothing
    if loss == "hinge":
        return torch.relu(1 - logits)
    if loss == "robust":
        return (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
    return -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


class DirectPreference(ReferencedObjective):
    """`objective=dpo`: DPO, cDPO, rDPO, hinge or IPO (`loss`) against a reference model."""

    def __init__(
        self, beta: float = 0.1, loss: str = "sigmoid", label_smoothing: float = 0.0, precompute_reference: bool = False
    ) -> None:
        super().__init__(precompute_reference)
        if loss not in LOSSES:
            raise ConfigError(f"objective.loss={loss!r} is not a DPO loss: use one of {', '.join(LOSSES)}")
        check_beta(beta)
        check_label_smoothing(label_smoothing, loss in ("sigmoid", "robust"), f"objective.loss={loss}")
        self.beta, self.loss, self.label_smoothing = beta, loss, label_smoothing

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        logits, logps, tokens = self.response_logps(model, batch)
        reference = self.reference_logps(model, batch)
        (policy_chosen, policy_rejected), (ref_chosen, ref_rejected) = logps.chunk(2), reference.chunk(2)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        losses = dpo_losses(
            policy_chosen,
            policy_rejected,
            ref_chosen,
            ref_rejected,
            self.beta,
            self.loss,
            self.label_smoothing,
            chosen_tokens,
            rejected_tokens,
        )
        scalars = preference_scalars(
            self.beta * (policy_chosen - ref_chosen),
            self.beta * (policy_rejected - ref_rejected),
            policy_chosen,
            policy_rejected,
        )
        return ObjectiveOutput(losses.mean(), logits, batch["labels"], self.tokens_read(batch), scalars)
