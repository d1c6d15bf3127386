"""`objective=grpo`: online RL with verifiable rewards (GRPO, Shao et al. 2024), generation in the training loop.

Each training step takes a batch of prompts (the data's (prompt, response) pairs: the response is the reference
answer the rewards check against), samples `group_size` completions per prompt with the model's KV-cache
`generate` (temperature, top-p, `max_new_tokens`, from the objective's own seeded generator, saved with
checkpoints), scores them with `rewards` (weighted sum), turns the scores into group-normalised advantages and
takes the clipped policy-gradient step with a KL penalty to the reference (`grpo_loss`; LoRA and other added
modules: the model with them switched off; full fine-tuning: a frozen copy; `kl_beta=0`: none).

`num_iterations` > 1 reuses one generation batch for that many optimizer steps (the ratio to the sampling policy
then moves and the clip acts); the prompts of the batches that arrive meanwhile are skipped. A resumed run
regenerates its current batch.

Validation decodes one completion per held-out prompt at `val_temperature` (0: greedy) and logs `pass@1` (the
share that every verifying reward, exact match or unit tests, scores 1), each reward's mean and the completion
length; its `val/loss` is minus the weighted reward.

Logged per training step (train/): `reward`, `reward_std` (within groups), `rewards/<name>/mean`,
`rewards/<name>/group_std`, `frac_reward_zero_std` (groups that teach nothing), `kl`, `clip_ratio` (and `/low`,
`/high`), `completions/mean_length`, `completions/clipped_ratio` (no eos within max_new_tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MetricCollection

from lightning_llm.errors import ConfigError
from lightning_llm.objectives.base import IGNORE_INDEX, ObjectiveOutput
from lightning_llm.objectives.grpo_loss import LOSS_TYPES, group_advantages, group_spread, grpo_loss, token_logps
from lightning_llm.objectives.preference import Reference
from lightning_llm.objectives.rewards import Reward
from lightning_llm.objectives.sft import SupervisedFineTuning
from lightning_llm.tokenizers import pad_rows


def build_rewards(specs: Any) -> list[Reward]:
    """The reward functions of `objective.rewards` (config mappings with a `_target_`, or built objects)."""
    if not specs:
        raise ConfigError("objective.rewards is empty: name at least one reward (e.g. an ExactMatch)")
    rewards = []
    for i, spec in enumerate(specs):
        if isinstance(spec, Mapping):
            if "_target_" not in spec:
                raise ConfigError(f"objective.rewards[{i}] has no _target_: name a reward class")
            try:
                spec = instantiate(spec)
            except InstantiationException as err:
                reason = str(err).strip().splitlines()[-1]
                raise ConfigError(f"objective.rewards[{i}] ({spec['_target_']}) cannot be built: {reason}") from err
        if not callable(spec) or not hasattr(spec, "weight"):
            raise ConfigError(f"objective.rewards[{i}] is not a reward: give a class of objectives.rewards")
        rewards.append(spec)
    names = [r.name for r in rewards]
    if len(set(names)) != len(names):
        raise ConfigError(f"objective.rewards have repeated names {names}: give each a distinct `name`")
    return rewards


@dataclass
class Rollout:
    """One generation batch: the completions as training rows, their advantages and what the step logs."""

    batch: dict[str, torch.Tensor]  # input_ids (prompt + completion, right-padded) and labels (completion tokens)
    advantages: torch.Tensor
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)
    uses_left: int = 1


class GRPO(SupervisedFineTuning):
    """Group relative policy optimisation on (prompt, reference answer) pairs, for decoders (`sample` and
    `logits` as SFT's)."""

    architectures = ("decoder",)
    examples = "pairs"
    needs_reference = True

    def __init__(
        self,
        rewards: Any = None,
        group_size: int = 8,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        kl_beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        num_iterations: int = 1,
        loss_type: str = "dapo",
        scale_rewards: bool = True,
        val_temperature: float = 0.0,
        shuffle_rewards: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        checks = {
            "group_size": (group_size >= 2, "must be >= 2 (advantages compare completions of one prompt)"),
            "max_new_tokens": (max_new_tokens >= 1, "must be >= 1"),
            "temperature": (temperature > 0, "must be > 0 (sampling; greedy groups would all be alike)"),
            "top_p": (0 < top_p <= 1, "must be in (0, 1]"),
            "kl_beta": (kl_beta >= 0, "must be >= 0"),
            "epsilon": (0 < epsilon < 1, "must be in (0, 1)"),
            "epsilon_high": (epsilon_high is None or epsilon_high > 0, "must be > 0 (DAPO's clip-higher: 0.28)"),
            "num_iterations": (num_iterations >= 1, "must be >= 1"),
            "loss_type": (loss_type in LOSS_TYPES, f"is unknown: use one of {', '.join(LOSS_TYPES)}"),
            "val_temperature": (val_temperature >= 0, "must be >= 0 (0: greedy)"),
        }
        for key, (ok, why) in checks.items():
            if not ok:
                raise ConfigError(f"objective.{key}={locals()[key]!r} {why}")
        self.rewards = build_rewards(rewards)
        self.group_size, self.max_new_tokens = group_size, max_new_tokens
        self.sampling = {"temperature": temperature, "top_p": top_p if top_p < 1 else None, "top_k": top_k}
        self.kl_beta, self.epsilon_low = kl_beta, epsilon
        self.epsilon_high = epsilon if epsilon_high is None else epsilon_high
        self.num_iterations, self.loss_type, self.scale_rewards = num_iterations, loss_type, scale_rewards
        self.val_temperature = val_temperature
        self.shuffle_rewards = shuffle_rewards  # a control: the batch's rewards go to random completions
        self.seed = seed
        self.reference: Reference | None = None
        self.buffer: Rollout | None = None
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    # -- set-up ------------------------------------------------------------------------------------------
    def bind_reference(self, reference: Reference) -> None:
        """The model the KL penalty compares with (the recipe binds it; unused when kl_beta is 0)."""
        self.reference = reference

    def state_dict(self) -> dict[str, Any]:
        """The sampler's RNG (checkpoints keep it, so a resumed run draws the completions a straight one would)."""
        state = self.generator.get_state() if self.generator is not None else self._generator_state
        return {} if state is None else {"generator": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator_state, self.generator, self.buffer = state.get("generator"), None, None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self.generator.manual_seed(self.seed * 1_000_003 + rank)  # each process its own completions
            if self._generator_state is not None:  # a resumed run: the checkpoint holds rank 0's stream
                state, self._generator_state = self._generator_state.cpu(), None
                self.generator.set_state(state)
                if rank:  # the other ranks reseed from it and their rank: distinct streams, the same on every resume
                    self.generator.manual_seed(int(state.long().sum()) * 1_000_003 + rank)
        return self.generator

    # -- data ----------------------------------------------------------------------------------------------
    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Prompts left-padded for generation (`input_ids`, `attention_mask`: `<s> prompt`, its end kept so that
        `max_new_tokens` fit the context), with the prompts' and reference answers' text for the rewards."""
        tok = self.tokenizer
        room = self.max_length - self.max_new_tokens
        prompts = [([*tok.sequence_start, *ex["prompt_ids"]] or [tok.eos_id])[-room:] for ex in examples]
        width = max(map(len, prompts))
        return {
            "input_ids": torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts]),
            "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts]),
            "prompts": [tok.decode(ex["prompt_ids"]) for ex in examples],
            "answers": [tok.decode(ex["response_ids"]) for ex in examples],
        }

    # -- rollout -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, model: nn.Module, batch: dict[str, Any], copies: int, temperature: float) -> list[list[int]]:
        """`copies` completions per prompt (consecutive), each cut after its first eos (kept)."""
        ids = batch["input_ids"].repeat_interleave(copies, dim=0)
        mask = batch["attention_mask"].repeat_interleave(copies, dim=0)
        sampling = {**self.sampling, "temperature": temperature}
        out = model.generate(
            ids,
            self.max_new_tokens,
            attention_mask=mask,
            eos_id=self.tokenizer.eos_id,
            generator=self._generator(ids.device),
            **sampling,
        )
        completions = []
        for row in out[:, ids.size(1) :].tolist():
            end = row.index(self.tokenizer.eos_id) + 1 if self.tokenizer.eos_id in row else len(row)
            completions.append(row[:end])
        return completions

    def score(self, batch: dict[str, Any], texts: list[str], copies: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(each reward function's scores (completions, functions), the weighted total)."""
        prompts = [p for p in batch["prompts"] for _ in range(copies)]
        answers = [a for a in batch["answers"] for _ in range(copies)]
        per_function = torch.tensor(
            [reward(prompts, texts, answers) for reward in self.rewards], dtype=torch.float32
        ).T.reshape(len(texts), len(self.rewards))
        weights = torch.tensor([reward.weight for reward in self.rewards])
        return per_function, per_function @ weights

    def training_rows(self, batch: dict[str, Any], completions: list[list[int]], copies: int) -> dict[str, Any]:
        """`prompt + completion` right-padded, the labels on the completion's tokens only."""
        inputs, labels = [], []
        pairs = zip(batch["input_ids"], batch["attention_mask"], strict=True)
        prompt_rows = [row[mask.bool()].tolist() for row, mask in pairs]
        for i, completion in enumerate(completions):
            prompt = prompt_rows[i // copies]
            sequence = prompt + completion
            inputs.append(sequence[:-1])
            labels.append([IGNORE_INDEX] * (len(prompt) - 1) + completion)
        device = batch["input_ids"].device
        return {
            "input_ids": pad_rows(inputs, self.tokenizer.pad_id).to(device),
            "labels": pad_rows(labels, IGNORE_INDEX).to(device),
        }

    def logps(self, model: nn.Module, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probabilities of the completions (0 off them), at the sampling temperature."""
        return token_logps(model(rows["input_ids"]), rows["labels"], self.sampling["temperature"])

    @torch.no_grad()
    def reference_logps(self, model: nn.Module, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.reference is None:
            raise RuntimeError("no reference model: bind_reference comes first (or set objective.kl_beta=0)")
        with self.reference(model) as reference:
            was_training = reference.training
            reference.eval()
            try:
                return self.logps(reference, rows)
            finally:
                reference.train(was_training)

    def rollout(self, model: nn.Module, batch: dict[str, Any]) -> Rollout:
        """Sample, score and prepare one generation batch (the model in eval mode, no gradients)."""
        was_training = model.training
        model.eval()
        try:
            completions = self.generate(model, batch, self.group_size, self.sampling["temperature"])
            texts = [self.tokenizer.decode([t for t in c if t != self.tokenizer.eos_id]) for c in completions]
            per_function, total = self.score(batch, texts, self.group_size)
            if self.shuffle_rewards:  # the control run: rewards no longer belong to their completions
                generator = self._generator(batch["input_ids"].device)
                total = total[torch.randperm(len(total), generator=generator, device=generator.device).cpu()]
            advantages = group_advantages(total, self.group_size, self.scale_rewards)
            rows = self.training_rows(batch, completions, self.group_size)
            with torch.no_grad():  # the sampling policy's log-probabilities, for the ratio of later uses
                old = self.logps(model, rows) if self.num_iterations > 1 else None
            ref = self.reference_logps(model, rows) if self.kl_beta else None
        finally:
            model.train(was_training)
        scalars = self.reward_scalars(per_function, total, completions, self.group_size)
        return Rollout(rows, advantages.to(rows["input_ids"].device), old, ref, scalars, texts, self.num_iterations)

    def reward_scalars(
        self, per_function: torch.Tensor, total: torch.Tensor, completions: list[list[int]], copies: int
    ) -> dict[str, torch.Tensor]:
        eos = self.tokenizer.eos_id
        lengths = torch.tensor([float(len(c)) for c in completions])
        scalars = {
            "reward": total.mean(),
            "completions/mean_length": lengths.mean(),
            "completions/clipped_ratio": torch.tensor([float(not c or c[-1] != eos) for c in completions]).mean(),
        }
        for reward, column in zip(self.rewards, per_function.T, strict=True):
            scalars[f"rewards/{reward.name}/mean"] = column.mean()
        if copies > 1:
            scalars["reward_std"] = group_spread(total, copies)
            spread = total.view(-1, copies).std(dim=1)
            scalars["frac_reward_zero_std"] = (spread < 1e-6).float().mean()
            for reward, column in zip(self.rewards, per_function.T, strict=True):
                scalars[f"rewards/{reward.name}/group_std"] = group_spread(column, copies)
        verifying = [i for i, reward in enumerate(self.rewards) if reward.verifies]
        if verifying:
            scalars["pass@1"] = (per_function[:, verifying] >= 1).all(dim=1).float().mean()
        return scalars

    # -- the step ------------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: dict[str, Any]) -> ObjectiveOutput:
        if not model.training:
            return self.validate(model, batch)
        if self.buffer is None or self.buffer.uses_left == 0:
            self.buffer = self.rollout(model, batch)
        return self.update(model, self.buffer)

    def update(self, model: nn.Module, rollout: Rollout) -> ObjectiveOutput:
        """The policy-gradient loss on a generation batch (one of its `num_iterations` uses)."""
        rollout.uses_left -= 1
        rows = rollout.batch
        logits = model(rows["input_ids"])
        logps = token_logps(logits, rows["labels"], self.sampling["temperature"])
        mask = rows["labels"] != IGNORE_INDEX
        parts = grpo_loss(
            logps,
            rollout.old_logps,
            rollout.ref_logps,
            rollout.advantages,
            mask,
            self.kl_beta,
            self.epsilon_low,
            self.epsilon_high,
            self.loss_type,
            self.max_new_tokens,
        )
        scalars = {
            **rollout.scalars,
            "kl": parts.kl,
            "clip_ratio": parts.clip_ratio,
            "clip_ratio/low": parts.clip_low,
            "clip_ratio/high": parts.clip_high,
        }
        return ObjectiveOutput(parts.loss, rollout.advantages, rollout.advantages, rows["input_ids"].numel(), scalars)

    @torch.no_grad()
    def validate(self, model: nn.Module, batch: dict[str, Any]) -> ObjectiveOutput:
        """Completions of the held-out prompts at `val_temperature`: one each when greedy, else `group_size` (pass@1
        is then the expected share of samples that pass); pass@1, rewards, length."""
        copies = 1 if self.val_temperature == 0 else self.group_size
        completions = self.generate(model, batch, copies, self.val_temperature)
        texts = [self.tokenizer.decode([t for t in c if t != self.tokenizer.eos_id]) for c in completions]
        per_function, total = self.score(batch, texts, copies)
        scalars = self.reward_scalars(per_function, total, completions, copies)
        tokens = int(batch["attention_mask"].sum()) + sum(map(len, completions))
        return ObjectiveOutput(-total.mean(), total, total, tokens, scalars)

    def metrics(self, vocab_size: int) -> MetricCollection:
        return MetricCollection({})  # rewards and pass@1 come as the step's scalars
