"""Callbacks of our own (the rest come from Lightning through conf/callbacks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return batch["input_ids"].size(0)


def _batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    return batch["input_ids"].numel()


class TokenThroughputMonitor(ThroughputMonitor):
    """Lightning's ThroughputMonitor counting tokens: logs `train/device/items_per_sec` (tokens/s) and MFU on GPUs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_batch_tokens, **kwargs)


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`: rewritten at every validation, and also when fit ends or is interrupted (Ctrl-C, SIGTERM)
    after steps it has not saved yet, so every run that trained leaves a checkpoint to resume, fine-tune or
    export from, whatever its validation interval. (Lightning's save_last refreshes only on improvement.)"""

    def __init__(self, dirpath: str, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, **kwargs)
        self.enable_version_counter = False

    def _save_now(self, trainer: pl.Trainer) -> None:
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            path = self.format_checkpoint_name(self._monitor_candidates(trainer))
            self._save_checkpoint(trainer, path)
            self._last_global_step_saved = trainer.global_step
            self.best_model_path = self.last_model_path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_now(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Only a clean interrupt (between steps) is saved; a failure or a divergence is not."""
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            self._save_now(trainer)


class SampleGeneration(pl.Callback):
    """At the end of fit, sample a continuation of `prompt`; print it, log it and write it to samples.txt."""

    def __init__(
        self,
        prompt: str = "The",
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int = 0,
    ) -> None:
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.samples: list[dict[str, Any]] = []

    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """One sample from the current weights, as the objective shows it (deterministic for a seed)."""
        model = pl_module.model
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = model.training
        model.eval()
        with trainer.precision_plugin.forward_context():
            text = pl_module.objective.sample(
                model,
                self.prompt,
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                generator=generator,
            )
        model.train(was_training)
        return text

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        text = self.generate(trainer, pl_module)  # every rank: a sharded (FSDP) model needs them all
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        self.samples.append({"step": step, "prompt": self.prompt, "text": text})
        print(f"\n--- sample at step {step} ---\n{text}\n---")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text("samples", columns=["step", "prompt", "text"], data=[[step, self.prompt, text]])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("sample", text, step)
        out_dir = Path(trainer.default_root_dir)
        with (out_dir / "samples.txt").open("a", encoding="utf-8") as f:
            f.write(f"--- step {step} ---\n{text}\n")
