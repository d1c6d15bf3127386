"""KTO (Ethayarajh et al. 2024): unpaired examples, each response judged desirable or undesirable.

With r = log pi(y|x) - log ref(y|x) and z = max(0, mean over the batch of log pi(y'|x) - log ref(y'|x)), where y' is
another example's response to x (`kl_response_ids`; the policy's side without gradients), as TRL estimates the KL:
a desirable example's loss is w_d (1 - sigmoid(beta (r - z))), an undesirable one's w_u (1 - sigmoid(beta (z - r)));
the loss is their mean. The rewards are beta r: `rewards/chosen` is the mean over the desirable examples,
`rewards/rejected` over the undesirable ones, `rewards/margins` their difference; `kto/kl` is z. Unpaired examples
have no pairs to rank, so there is no `rewards/accuracies`.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import ObjectiveOutput, sequence_logps
from lightning_llm.objectives.preference import ReferencedObjective, check_beta


def kto_losses(
    policy: torch.Tensor,
    reference: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """Each example's loss from its response's summed log-probabilities and the batch's KL estimate."""
    ratio = policy - reference
    return torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio))),
    )


class KTO(ReferencedObjective):
    """`objective=kto`: examples carry `response_ids`, `label` (1 = desirable) and `kl_response_ids`."""

    examples = "judged"
    response_keys = ("response_ids", "kl_response_ids")

    def __init__(
        self,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        precompute_reference: bool = False,
    ) -> None:
        super().__init__(precompute_reference)
        check_beta(beta)
        if min(desirable_weight, undesirable_weight) <= 0:
            raise ConfigError(
                f"objective.desirable_weight={desirable_weight} and objective.undesirable_weight={undesirable_weight} "
                "must be > 0"
            )
        self.beta, self.desirable_weight, self.undesirable_weight = beta, desirable_weight, undesirable_weight

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().collate(examples)
        batch["desirable"] = torch.tensor([bool(ex["label"]) for ex in examples])
        return batch

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        n = batch["desirable"].size(0)
        responses = {k: v[:n] for k, v in batch.items() if k not in ("desirable", "reference_logps")}
        mismatched = {k: v[n:] for k, v in batch.items() if k not in ("desirable", "reference_logps")}
        logits, policy, _ = self.response_logps(model, responses)
        with torch.no_grad():
            policy_kl = sequence_logps(self.logits(model, mismatched), mismatched["labels"])[0]
        reference, reference_kl = self.reference_logps(model, batch).chunk(2)
        kl = (policy_kl - reference_kl).mean().clamp(min=0)
        desirable = batch["desirable"]
        losses = kto_losses(policy, reference, desirable, kl, self.beta, self.desirable_weight, self.undesirable_weight)
        rewards = (self.beta * (policy - reference)).detach()
        scalars = {"kto/kl": kl}
        for name, rows in (("chosen", desirable), ("rejected", ~desirable)):
            if rows.any():
                scalars[f"rewards/{name}"] = rewards[rows].mean()
                scalars[f"logps/{name}"] = policy.detach()[rows].mean()
        if desirable.any() and not desirable.all():
            scalars["rewards/margins"] = scalars["rewards/chosen"] - scalars["rewards/rejected"]
        tokens = self.tokens_read(responses) + self.tokens_read(mismatched)
        return ObjectiveOutput(losses.mean(), logits, responses["labels"], tokens, scalars)
