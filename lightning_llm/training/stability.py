"""Loss spikes: detect a training loss far above its recent history, and log it, skip its update or stop.

As llm-foundry's kill-loss-spike callback and OLMo's stability monitoring: a step's loss above the mean plus
`k` standard deviations of the previous `window` steps is a spike. It is judged in `on_before_optimizer_step`,
after backward and before the update, so "skip" can drop that very update and "rollback" can stop the run
before the weights take it.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from lightning_llm.errors import ConfigError, TrainingDiverged
from lightning_llm.log import get_logger

log = get_logger(__name__)
ACTIONS = ("log", "skip", "rollback")
#: The window's standard deviation is floored at this fraction of its mean, so the rounding noise of a flat
#: curve is not a spike.
MIN_RELATIVE_STD = 1e-3


class LossSpikeRollback(TrainingDiverged):
    """A loss spike stopped the run before its update (`callbacks.loss_spike.action=rollback`); the message names
    the last checkpoint to resume from. Exit code 3, as a divergence."""

    exit_code = 3


def mean_and_std(values: deque[float]) -> tuple[float, float]:
    """The mean and population standard deviation of `values` in exact float sums (math.fsum): a quarter of the
    cost of the statistics module, which works in fractions, at every step."""
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in values) / len(values))


def newest_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint file the trainer's checkpoint callbacks have written, if any; of equally new ones
    (last.ckpt is a hard link to the best checkpoint of its step) the one a callback without a monitor keeps:
    last.ckpt, which resume=auto reads."""
    found = [
        (Path(p).stat().st_mtime_ns, cb.monitor is None, p)
        for cb in trainer.checkpoint_callbacks
        for p in (cb.last_model_path, cb.best_model_path)
        if p and Path(p).is_file()
    ]
    return max(found)[2] if found else None


class LossSpikeMonitor(pl.Callback):
    """Flags a step whose training loss exceeds mean + k x std of the previous `window` step losses (once
    `min_steps` losses are known): logs `train/loss_spike` = 1 at that step, warns, records it in `self.spikes`
    and then, by `action`: "log" only; "skip" drops that optimizer update (the gradients are removed, so the
    optimizer leaves the weights and its state as they were); "rollback" raises LossSpikeRollback naming the
    last checkpoint. Every step's loss joins the window, spikes too, so a lasting level shift is absorbed.

    Under gradient accumulation a step's loss is the mean over its micro-batches; with several processes it
    is averaged across them, so every rank takes the same decision.
    """

    def __init__(self, window: int = 100, k: float = 6.0, min_steps: int = 20, action: str = "log") -> None:
        if not (isinstance(window, int) and window >= 2):
            raise ConfigError(f"callbacks.loss_spike.window={window!r} must be an integer >= 2")
        if not (isinstance(k, int | float) and k > 0):
            raise ConfigError(f"callbacks.loss_spike.k={k!r} must be a number > 0 (standard deviations)")
        if not (isinstance(min_steps, int) and 2 <= min_steps <= window):
            raise ConfigError(f"callbacks.loss_spike.min_steps={min_steps!r} must be an integer from 2 to window")
        if action not in ACTIONS:
            raise ConfigError(f"callbacks.loss_spike.action={action!r} is unknown: use one of {', '.join(ACTIONS)}")
        self.window, self.k, self.min_steps, self.action = window, float(k), min_steps, action
        self.losses: deque[float] = deque(maxlen=window)
        self.spikes: list[dict[str, Any]] = []
        self._micro_losses: list[torch.Tensor] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.action == "skip" and isinstance(trainer.strategy, DeepSpeedStrategy):
            raise ConfigError(
                "callbacks.loss_spike.action=skip cannot drop an update under DeepSpeed (its engine owns the "
                "gradients): use action=log or action=rollback"
            )

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        # Lightning divides each micro-batch's loss by accumulate_grad_batches (their sum is the step's mean) and,
        # under 16-mixed, has multiplied it by the gradient scaler's scale already
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._micro_losses.append(loss.detach() / scaler.get_scale() if scaler is not None else loss.detach())

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._micro_losses:
            return
        loss = torch.stack(self._micro_losses).sum().float()
        self._micro_losses = []
        if trainer.world_size > 1:
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
        value = float(loss)
        if not math.isfinite(value):
            return  # not a spike but a divergence: the module's own checks stop the run
        history = len(self.losses)
        spike = self.judge(value, trainer.global_step)
        self.losses.append(value)
        if spike is None:
            return
        for logger in trainer.loggers:
            logger.log_metrics({"train/loss_spike": 1.0}, step=trainer.global_step)
        if self.action == "skip":  # optimizers pass over parameters without a gradient: no update, no state change
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
        elif self.action == "rollback":
            good = newest_checkpoint(trainer)
            where = f"the last checkpoint is {good}" if good else "no checkpoint was written before it"
            raise LossSpikeRollback(
                f"loss spike at step {spike['step']} (loss {value:.4g} > mean {spike['mean']:.4g} + {self.k:g} x std "
                f"{spike['std']:.3g} of the last {history} steps): the run stops before its update; {where}; resume "
                "it (resume=auto) with a lower optimizer.lr (the same batches follow), or use "
                "callbacks.loss_spike.action=skip"
            )

    def judge(self, loss: float, step: int) -> dict[str, Any] | None:
        """The spike record for `loss` at `step` against the current window (None when it is no spike)."""
        if len(self.losses) < self.min_steps:
            return None
        mean, std = mean_and_std(self.losses)
        std = max(std, MIN_RELATIVE_STD * abs(mean))
        if loss <= mean + self.k * std:
            return None
        spike = {"step": step, "loss": loss, "mean": mean, "std": std}
        self.spikes.append(spike)
        log.warning(
            "loss spike at step %d: %.4g > mean %.4g + %g x std %.3g of the last %d steps (action: %s)",
            step,
            loss,
            mean,
            self.k,
            std,
            len(self.losses),
            self.action,
        )
        return spike

    def summary(self) -> dict[str, Any]:
        """What results.json records: the spikes found and how they were judged and handled."""
        return {"spikes": list(self.spikes), "action": self.action, "window": self.window, "k": self.k}

    def state_dict(self) -> dict[str, Any]:
        """The window and the spikes so far travel in checkpoints: a resumed run judges against the same history."""
        return {"losses": list(self.losses), "spikes": list(self.spikes)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.losses = deque(state_dict.get("losses", []), maxlen=self.window)
        self.spikes = list(state_dict.get("spikes", []))
