"""`privacy=dp`: DP-SGD (Abadi et al. 2016) through Opacus, on our own models.

The recipe plans the noise before training (`plan`: the sampling rate from the training rows, the noise that
spends `target_epsilon` in `trainer.max_steps`), hooks the model for per-sample gradients (`attach`, which also
checks that every trainable weight gets one gradient per row), the datamodule draws Poisson batches
(`wrap_loader`) and the module's optimizer clips, noises and accounts (`wrap_optimizer`). Only trainable
parameters need per-sample gradients, so every fine-tuning method that trains ordinary weights (full, freeze,
LoRA, adapters, prompt tuning) applies. An empty Poisson batch is a noise-only step, as in Opacus.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_llm.errors import ConfigError
from lightning_llm.extras import require

ACCOUNTANTS = ("rdp", "prv", "gdp")


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def distributed_world() -> int:
    """The number of processes training together (1 without an initialised torch.distributed group)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _noise_only_optimizer(
    optimizer: torch.optim.Optimizer, account_empty: Callable[[], None], **settings: Any
) -> torch.optim.Optimizer:
    """Opacus's DPOptimizer, where a step without per-sample gradients (an empty Poisson batch) adds noise only
    (and `account_empty` counts it). Under DDP it is Opacus's DistributedDPOptimizer: each process clips and sums
    its own rows, the first adds the noise and the sums are all-reduced, so every replica takes the same step."""
    from opacus.optimizers import DistributedDPOptimizer, DPOptimizer

    base = DistributedDPOptimizer if distributed_world() > 1 else DPOptimizer

    class NoiseOnlyWhenEmpty(base):
        def pre_step(self, closure: Callable[[], Any] | None = None) -> bool:
            if any(getattr(p, "grad_sample", None) is not None for p in self.params):
                return super().pre_step(closure)
            for p in self.params:  # no row drawn: the update is the noise alone, and the step is accounted
                p.summed_grad = torch.zeros_like(p)
            self.add_noise()
            for p in self.params:
                p.grad /= self.expected_batch_size
            account_empty()
            self._is_last_step_skipped = False
            return True

    return NoiseOnlyWhenEmpty(optimizer, **settings)


def _rank_poisson_sampler(rows: int, sample_rate: float, seed: int) -> Any:
    """Opacus's DistributedUniformWithReplacementSampler (the rows shuffled by a seed every process shares, then
    dealt out by rank; each process draws its own Poisson batches, from a generator seeded by its rank so that
    the processes' draws are independent), except that an empty draw is a batch too, as in the one-process
    sampler: every process then takes the same number of steps (an empty one adds no rows)."""
    from opacus.utils.uniform_sampler import DistributedUniformWithReplacementSampler

    class EveryDraw(DistributedUniformWithReplacementSampler):
        def __iter__(self) -> Any:
            shuffle = torch.Generator().manual_seed(self.shuffle_seed + self.epoch)
            mine = torch.randperm(self.total_size, generator=shuffle)[self.rank : self.total_size : self.num_replicas]
            for _ in range(self.num_batches):
                yield mine[torch.rand(len(mine), generator=self.generator) < self.sample_rate].tolist()

    sampler = EveryDraw(total_size=rows, sample_rate=sample_rate, shuffle_seed=seed % 2**31)
    sampler.generator = torch.Generator().manual_seed(seed + 1 + sampler.rank)
    return sampler


class _SkipEmpty:
    """A collate function that gives None for an empty batch (the module then takes a noise-only step)."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, rows: list[Any]) -> Any:
        return self.collate(rows) if rows else None


class DifferentialPrivacy:
    """DP-SGD settings and state: the noise, the Poisson sampling rate and the privacy accountant."""

    def __init__(
        self,
        target_epsilon: float | None = 8.0,
        noise_multiplier: float | None = None,
        delta: float | None = None,
        max_grad_norm: float = 1.0,
        accountant: str = "rdp",
    ) -> None:
        require("opacus", "privacy=dp")  # the checks construct this: a missing extra is said before any work
        if (target_epsilon is None) == (noise_multiplier is None):
            raise ConfigError(
                "privacy: give exactly one of privacy.target_epsilon and privacy.noise_multiplier "
                "(set the other to null)"
            )
        for key, value in {"target_epsilon": target_epsilon, "noise_multiplier": noise_multiplier}.items():
            if value is not None and not _positive(value):
                raise ConfigError(f"privacy.{key}={value!r} is invalid: give a number > 0")
        if delta is not None and not (_positive(delta) and delta < 1):
            raise ConfigError(f"privacy.delta={delta!r} is invalid: give 0 < delta < 1 (or null for 1/rows)")
        if not _positive(max_grad_norm):
            raise ConfigError(f"privacy.max_grad_norm={max_grad_norm!r} is invalid: give a number > 0")
        if accountant not in ACCOUNTANTS:
            raise ConfigError(f"privacy.accountant={accountant!r} is unknown: choose from {', '.join(ACCOUNTANTS)}")
        self.target_epsilon, self.noise_multiplier, self.delta = target_epsilon, noise_multiplier, delta
        self.max_grad_norm, self.accountant_name = max_grad_norm, accountant
        self.sample_rate: float | None = None
        self.batch_size: int | None = None
        self.accountant: Any = None

    # -- before training -------------------------------------------------------------------------------
    def plan(self, rows: int, batch_size: int, steps: int, replicas: int = 1) -> None:
        """The sampling rate (batch_size x replicas / rows: `batch_size` is each process's expected batch under
        DDP), delta (1/rows unless given) and, for a target epsilon, the noise that spends it in `steps`; a
        one-line ConfigError when the target cannot be met."""
        from opacus.accountants import create_accountant
        from opacus.accountants.utils import get_noise_multiplier

        if batch_size * replicas > rows:
            raise ConfigError(
                f"privacy=dp: data.batch_size={batch_size} x {replicas} processes exceeds the {rows} training rows: "
                "lower it"
            )
        self.batch_size, self.sample_rate = batch_size, batch_size * replicas / rows
        self.delta = self.delta if self.delta is not None else 1 / rows
        if self.target_epsilon is not None:
            try:
                self.noise_multiplier = get_noise_multiplier(
                    target_epsilon=self.target_epsilon,
                    target_delta=self.delta,
                    sample_rate=self.sample_rate,
                    steps=steps,
                    accountant=self.accountant_name,
                )
            except ValueError as err:
                raise ConfigError(
                    f"privacy.target_epsilon={self.target_epsilon} cannot be met in trainer.max_steps={steps} steps "
                    f"at sampling rate {self.sample_rate:.4g} ({err}): raise the target, train fewer steps or use "
                    "a smaller data.batch_size"
                ) from err
        self.accountant = create_accountant(self.accountant_name)

    def attach(self, model: nn.Module, probe: Callable[[nn.Module], torch.Tensor], rows: int) -> None:
        """Hook `model` for per-sample gradients (in place), then check on one batch of `rows` rows (`probe`
        returns its loss) that every trainable weight got one gradient per row; name the first that did not.
        Trainable weights the loss does not reach are frozen (they would not change anyway)."""
        from opacus import GradSampleModule

        # Opacus's hooks warn that they fire on module outputs (token-id inputs): filtered with the run's other
        # known-harmless warnings (log.KNOWN_HARMLESS_WARNINGS)
        for module in model.modules():  # tables every row shares (T5's relative position bias): looked up per row
            if hasattr(module, "per_row_gradients"):
                module.per_row_gradients = True
        try:
            self.hooks = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        except (NotImplementedError, ValueError) as err:  # opacus.validators.UnsupportedModuleError is a ValueError
            raise ConfigError(f"privacy=dp cannot take per-sample gradients of this model: {err}") from err
        probe(model).backward()
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if param.grad is None:  # not used by this objective (e.g. BERT's pooler under MLM): it stays as it is
                param.requires_grad_(False)
                continue
            grads = getattr(param, "grad_sample", None)
            if grads is None or grads.shape[0] != rows:
                got = "none" if grads is None else f"{grads.shape[0]} for {rows} rows"
                raise ConfigError(
                    f"privacy=dp: the trainable weight {name} gets no per-row gradient ({got}; it is shared across "
                    "the batch): freeze it (a finetune method that does not train it) or use another model"
                )
        model.zero_grad(set_to_none=True)
        for param in model.parameters():
            param.grad_sample = None

    # -- training --------------------------------------------------------------------------------------
    def wrap_loader(self, loader: DataLoader) -> DataLoader:
        """Poisson-sampled batches over the loader's rows: each row joins each batch with probability
        `sample_rate` (Opacus's UniformWithReplacementSampler; under DDP each process draws from its own share
        of the rows); its collate, workers and seed are kept."""
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler

        seed = torch.initial_seed() % 2**62
        if distributed_world() > 1:
            sampler = _rank_poisson_sampler(len(loader.dataset), self.sample_rate, seed)
        else:
            generator = torch.Generator().manual_seed(seed)
            sampler = UniformWithReplacementSampler(
                num_samples=len(loader.dataset), sample_rate=self.sample_rate, generator=generator
            )
        return DataLoader(
            loader.dataset,
            batch_sampler=sampler,
            collate_fn=_SkipEmpty(loader.collate_fn),
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
        )

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimizer as a DP optimizer: clip each row's gradient, add noise, count the step."""

        def account_empty() -> None:
            self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

        private = _noise_only_optimizer(
            optimizer,
            account_empty,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.batch_size,
            loss_reduction="mean",
        )
        private.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
        return private

    def epsilon(self) -> float:
        """The epsilon spent so far (at `delta`)."""
        return float(self.accountant.get_epsilon(delta=self.delta)) if self.accountant.history else 0.0

    def state_dict(self) -> dict[str, Any]:
        """The accountant's history as plain data (it goes into checkpoints, so a resumed run keeps counting)."""
        return {"history": [list(entry) for entry in self.accountant.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [tuple(entry) for entry in state.get("history", [])]

    def summary(self) -> dict[str, Any]:
        """What results.json records: the guarantee and how it was reached."""
        steps = sum(int(entry[2]) for entry in self.accountant.history) if self.accountant else 0
        return {
            "epsilon": round(self.epsilon(), 4) if self.accountant else 0.0,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.batch_size,
            "steps": steps,
            "accountant": self.accountant_name,
        }
