"""ORPO (Hong et al. 2024): SFT on the chosen response plus an odds-ratio penalty, without a reference model.

With the policy's mean log-probability per token of each response, a (chosen) and b (rejected), and
odds(p) = p / (1 - p): log_odds = (a - b) - (log(1 - e^a) - log(1 - e^b)), and
loss = NLL(chosen tokens) - beta * mean(log sigmoid(log_odds)) (beta is the paper's lambda; as TRL's ORPO trainer).
The rewards are beta a and beta b; `logps/*` are the per-token means; `orpo/log_odds_ratio` is mean log sigmoid(log
odds) and `orpo/nll` the SFT term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.objectives.base import ObjectiveOutput, token_cross_entropy
from lightning_llm.objectives.preference import PreferenceObjective, check_beta, preference_scalars


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurate on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_log_odds(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor) -> torch.Tensor:
    """log(odds(chosen) / odds(rejected)) from the mean per-token log-probabilities."""
    chosen_mean, rejected_mean = chosen_mean.float(), rejected_mean.float()
    return (chosen_mean - rejected_mean) - (log1mexp(chosen_mean) - log1mexp(rejected_mean))


class ORPO(PreferenceObjective):
    """`objective=orpo`: the chosen responses' token loss plus beta times the odds-ratio loss."""

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        logits, logps, tokens = self.response_logps(model, batch)
        chosen, rejected = (logps / tokens.clamp(min=1)).chunk(2)
        n = chosen.size(0)
        nll = token_cross_entropy(logits[:n], batch["labels"][:n])
        ratio = F.logsigmoid(orpo_log_odds(chosen, rejected))
        scalars = preference_scalars(self.beta * chosen, self.beta * rejected, chosen, rejected)
        scalars |= {"orpo/log_odds_ratio": ratio.detach().mean(), "orpo/nll": nll.detach()}
        return ObjectiveOutput(
            nll - self.beta * ratio.mean(), logits, batch["labels"], self.tokens_read(batch), scalars
        )
