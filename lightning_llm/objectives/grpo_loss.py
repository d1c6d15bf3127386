"""GRPO's arithmetic (Shao et al. 2024, DeepSeekMath), as TRL's GRPOTrainer computes it: group-normalised advantages
and the clipped policy-gradient loss with a KL penalty to a reference, on per-token log-probabilities.

- Advantages: each completion's reward minus the mean of its group (the `group_size` completions of one prompt),
  divided by the group's standard deviation + 1e-4 (`scale_rewards=true`; Dr GRPO recommends false: scaling by the
  spread up-weights prompts that are nearly always or never solved).
- Per token t of completion i: r = exp(logp - old_logp), loss = -min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i)
  + beta KL_t, with KL_t = exp(ref - logp) - (ref - logp) - 1 (Schulman's k3 estimator, >= 0).
- How the token losses become one number (`loss_type`), with mask m over the completion tokens:
  - `dapo` (the default, DAPO; TRL's `dapo`/`bnpo` on one process): sum(loss m) / sum(m): every token weighs the
    same, so long completions are not diluted (no length bias).
  - `grpo` (the paper's): mean over completions of each completion's mean token loss: a long wrong answer is
    penalised less per token than a short one (the length bias DAPO and Dr GRPO point out).
  - `dr_grpo` (Dr GRPO): sum(loss m) / (completions x max_new_tokens): a constant divisor, unbiased in length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import IGNORE_INDEX

LOSS_TYPES = ("dapo", "grpo", "dr_grpo")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True) -> torch.Tensor:
    """(rewards - the group's mean) / (the group's standard deviation + 1e-4); rewards hold `group_size`
    consecutive completions per prompt. A group of one has no spread (its advantage is 0)."""
    grouped = rewards.float().view(-1, group_size)
    mean = grouped.mean(dim=1).repeat_interleave(group_size)
    advantages = rewards.float() - mean
    if scale:
        std = grouped.std(dim=1) if group_size > 1 else torch.zeros_like(grouped[:, 0])
        advantages = advantages / (std.repeat_interleave(group_size) + 1e-4)
    return advantages


def group_spread(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """The mean over groups of the standard deviation within each group (0 for groups of one)."""
    if group_size < 2:
        return values.new_zeros(())
    return values.float().view(-1, group_size).std(dim=1).mean()


def token_logps(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Each labelled position's log-probability of its label under softmax(logits / temperature), 0 elsewhere
    (positions whose label is IGNORE_INDEX): the distribution the completions were sampled from, as TRL scores it."""
    scaled = logits.float() / temperature if temperature > 0 else logits.float()
    flat = -F.cross_entropy(scaled.flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return flat.view_as(labels)


@dataclass
class LossParts:
    """The loss and what the step logs of it: the KL to the reference and the share of clipped tokens."""

    loss: torch.Tensor
    kl: torch.Tensor
    clip_ratio: torch.Tensor
    clip_low: torch.Tensor
    clip_high: torch.Tensor


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "dapo",
    max_new_tokens: int | None = None,
) -> LossParts:
    """The clipped surrogate with the k3 KL penalty, normalised by `loss_type` (see the module's docstring).

    `logps`, `old_logps` (None: the policy that sampled is this one, `logps.detach()`), `ref_logps` (None when
    beta is 0) and `mask` are (completions, tokens); `advantages` is (completions,)."""
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    advantage = advantages[:, None].to(logps.dtype)
    per_token = -torch.min(ratio * advantage, clipped * advantage)
    kl = torch.zeros_like(logps)
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs the reference's log-probabilities")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if not max_new_tokens:
            raise ValueError("loss_type='dr_grpo' divides by max_new_tokens: give it")
        loss = (per_token * mask).sum() / (per_token.size(0) * max_new_tokens)
    else:
        raise ConfigError(f"objective.loss_type={loss_type!r} is unknown: use one of {', '.join(LOSS_TYPES)}")
    tokens = mask.sum().clamp(min=1.0)
    low = ((ratio < 1 - epsilon_low) & (advantage < 0)).to(mask.dtype) * mask
    high = ((ratio > 1 + epsilon_high) & (advantage > 0)).to(mask.dtype) * mask
    return LossParts(
        loss=loss,
        kl=((kl * mask).sum() / tokens).detach(),
        clip_ratio=(((low + high) > 0).to(mask.dtype).sum() / tokens).detach(),
        clip_low=(low.sum() / tokens).detach(),
        clip_high=(high.sum() / tokens).detach(),
    )
