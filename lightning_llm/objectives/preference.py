"""Preference tuning (DPO, IPO, SimPO, ORPO, KTO): a policy learns to prefer one response to a prompt over another.

An example holds a prompt and two responses: `chosen_ids` and `rejected_ids` (KTO: one `response_ids`, judged
desirable or not, and `kl_response_ids`, another example's response, for its KL estimate). A batch is the SFT batch
of every example's first response followed by that of its second, so one forward pass scores both; a response's
log-probability is the sum over its tokens, eos included (rows are never packed).

DPO and KTO compare the policy with a reference model, which the recipe binds (`bind_reference`): the trained model
with its adapters switched off (LoRA, QLoRA, adapters, prompt tuning: no second copy in memory), a frozen copy (full
fine-tuning), or, with `objective.precompute_reference=true`, log-probabilities computed once before training
(`precompute_reference_logps`) that every batch then carries, so no reference model runs while training.

Logged (train/ and val/, as TRL and torchtune name them): `rewards/chosen`, `rewards/rejected` (each objective's
implicit reward, mean over the batch), `rewards/margins` (chosen - rejected), `rewards/accuracies` (the share of
pairs whose chosen reward is higher; a tie counts half, so an untrained policy, whose rewards are all 0, scores 0.5),
`logps/chosen`, `logps/rejected` (the policy's log-probabilities of the responses).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import MetricCollection

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import sequence_logps
from lightning_llm.objectives.sft import SupervisedFineTuning

#: How the recipe hands an objective its reference: given the policy, a context in which a module computes the
#: reference's outputs (the policy itself with its adapters off, or a frozen copy)
Reference = Callable[[nn.Module], AbstractContextManager[nn.Module]]


def preference_scalars(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor | None = None,
    rejected_logps: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The rewards and log-probabilities TRL and torchtune log, from one batch of pairs (ties count half)."""
    margins = (chosen_rewards - rejected_rewards).detach()
    scalars = {
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": ((margins > 0).float() + 0.5 * (margins == 0).float()).mean(),
    }
    if chosen_logps is not None and rejected_logps is not None:
        scalars |= {"logps/chosen": chosen_logps.detach().mean(), "logps/rejected": rejected_logps.detach().mean()}
    return scalars


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ConfigError(f"objective.beta={beta} must be > 0")


def check_label_smoothing(label_smoothing: float, allowed: bool, what: str) -> None:
    """Label smoothing is a probability below 0.5 that a pair's label is flipped, for the losses that model one."""
    if not 0 <= label_smoothing < 0.5:
        raise ConfigError(f"objective.label_smoothing={label_smoothing} must be in [0, 0.5)")
    if label_smoothing and not allowed:
        raise ConfigError(f"objective.label_smoothing={label_smoothing} has no meaning for {what}: set it to 0")


class PreferenceObjective(SupervisedFineTuning):
    """Collation of preference pairs and the policy's log-probabilities of both responses."""

    examples = "preferences"
    #: Whether the loss compares the policy with a reference model (a run binds one before training)
    needs_reference: ClassVar[bool] = False
    #: The keys of an example's two responses: a batch holds every example's first, then every example's second
    response_keys: ClassVar[tuple[str, str]] = ("chosen_ids", "rejected_ids")

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [
            {"prompt_ids": ex["prompt_ids"], "response_ids": ex[key]} for key in self.response_keys for ex in examples
        ]
        return super().collate(rows)

    def response_logps(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, each row's summed response log-probability, its response tokens)."""
        logits = self.logits(model, batch)
        logps, tokens = sequence_logps(logits, batch["labels"])
        return logits, logps, tokens

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({})  # the rewards come as the step's scalars


class ReferencedObjective(PreferenceObjective):
    """A preference loss that compares the policy with a reference model (DPO, KTO)."""

    needs_reference = True

    def __init__(self, precompute_reference: bool = False) -> None:
        super().__init__()
        self.precompute_reference = precompute_reference
        self.reference: Reference | None = None
        self.reference_cache: dict[bytes, tuple[float, float]] = {}  # example key -> its responses' reference logps

    def bind_reference(self, reference: Reference) -> None:
        """The reference model for the steps (unless log-probabilities were precomputed)."""
        self.reference = reference

    def example_key(self, example: dict[str, Any]) -> bytes:
        """A digest of an example's token ids: where its precomputed reference log-probabilities are kept."""
        digest = hashlib.blake2b(digest_size=16)
        for key in ("prompt_ids", *self.response_keys):
            ids = example[key]
            digest.update(len(ids).to_bytes(4, "little") + torch.tensor(ids, dtype=torch.int32).numpy().tobytes())
        return digest.digest()

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().collate(examples)
        if self.reference_cache:
            cached = [self.reference_cache[self.example_key(ex)] for ex in examples]
            batch["reference_logps"] = torch.tensor([c[i] for i in (0, 1) for c in cached])
        return batch

    def reference_logps(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's summed log-probability of every row's response: precomputed, or from the bound reference
        (in eval mode, without gradients)."""
        if "reference_logps" in batch:
            return batch["reference_logps"]
        if self.reference is None:
            raise RuntimeError("no reference model: bind_reference (or precompute_reference_logps) comes first")
        with torch.no_grad(), self.reference(model) as reference:
            was_training = reference.training
            reference.eval()
            try:
                return sequence_logps(self.logits(reference, batch), batch["labels"])[0]
            finally:
                reference.train(was_training)

    @torch.no_grad()
    def precompute_reference_logps(
        self, model: nn.Module, examples: Iterable[dict[str, Any]], batch_size: int, device: torch.device
    ) -> int:
        """Score every example's two responses once with `model` (the weights before training: the reference) and
        keep them; batches collated afterwards carry them. Returns how many examples were scored."""
        was_training = model.training
        model.eval()
        pending: list[dict[str, Any]] = []

        def score() -> None:
            batch = {k: v.to(device) for k, v in PreferenceObjective.collate(self, pending).items()}
            logps = sequence_logps(self.logits(model, batch), batch["labels"])[0].float().cpu()
            first, second = logps.chunk(2)
            for example, a, b in zip(pending, first.tolist(), second.tolist(), strict=True):
                self.reference_cache[self.example_key(example)] = (a, b)
            pending.clear()

        scored = 0
        for example in examples:
            pending.append(example)
            scored += 1
            if len(pending) == batch_size:
                score()
        if pending:
            score()
        model.train(was_training)
        return scored
