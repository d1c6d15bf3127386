"""Callbacks of our own (the rest come from Lightning through conf/callbacks)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, ThroughputMonitor
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_llm.files import link_atomic
from lightning_llm.log import get_logger

log = get_logger(__name__)


def _batch_size(batch: dict[str, torch.Tensor] | None) -> int:
    return 0 if batch is None else batch["input_ids"].size(0)  # None: an empty DP-SGD (Poisson) batch


def _batch_tokens(batch: dict[str, torch.Tensor] | None) -> int:
    return 0 if batch is None else batch["input_ids"].numel()


class TokenThroughputMonitor(ThroughputMonitor):
    """Lightning's ThroughputMonitor counting tokens: logs `train/device/items_per_sec` (tokens/s) and MFU on GPUs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_batch_tokens, **kwargs)


class StepProgressBar(RichProgressBar):
    """Rich's bar for terminals, titled with steps of max_steps (not "Epoch 0/-2" of an endless epoch)."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else "?"
        return f"step {trainer.global_step}/{total}"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(0))


class TextProgress(pl.Callback):
    """Plain progress lines for logs that are not a terminal (`make train > log`, nohup, SLURM), where a live bar
    prints nothing readable: in training every `every_n_steps` steps or `every_n_seconds`, whichever comes first
    (step, loss, tokens/s, elapsed, ETA), so a run of minutes per step still says where it is; in validation every
    `every_n_seconds` (batches done of all). The recipe uses it instead of the bar when stdout is not a TTY."""

    def __init__(
        self, every_n_steps: int = 50, every_n_seconds: float = 30, only_without_terminal: bool = True
    ) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self.every_n_seconds = every_n_seconds
        self.enabled = not (only_without_terminal and sys.stdout.isatty())
        self.started: float | None = None
        self.first_step = 0
        self.first_tokens = 0
        self.last_line = time.perf_counter()  # when a line was last written
        self.last_step = -1  # the step of the last training line (a step of several micro-batches writes once)
        self.val_batches, self.val_started = 0, self.last_line  # batches done in this validation, and since when

    def _due(self, now: float) -> bool:
        return now - self.last_line >= self.every_n_seconds

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.global_step
        self.first_tokens = getattr(pl_module, "tokens_seen", 0)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *args: Any, **kwargs: Any
    ) -> None:
        step, now = trainer.global_step, time.perf_counter()
        if not self.enabled or step == self.last_step:
            return
        if step % self.every_n_steps and step != trainer.max_steps and not self._due(now):
            return
        elapsed = now - (self.started if self.started is not None else now)
        done = max(1, step - self.first_step)
        tokens_per_s = (getattr(pl_module, "tokens_seen", 0) - self.first_tokens) / max(elapsed, 1e-9)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs  # this step's, not the last logged
        parts = [f"step {step}/{trainer.max_steps}" if trainer.max_steps > 0 else f"step {step}"]
        if isinstance(loss, torch.Tensor):  # Lightning divides it by the micro-batches of a step
            parts.append(f"loss {float(loss) * trainer.accumulate_grad_batches:.4f}")
        parts += [f"{tokens_per_s:,.0f} tokens/s", f"elapsed {_clock(elapsed)}"]
        if trainer.max_steps > 0:
            parts.append(f"ETA {_clock(elapsed / done * (trainer.max_steps - step))}")
        log.info(" | ".join(parts))
        self.last_line, self.last_step = now, step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.val_batches, self.val_started = 0, time.perf_counter()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self.val_batches += 1
        now = time.perf_counter()
        if not self.enabled or trainer.sanity_checking or not self._due(now):
            return
        total = sum(n for n in trainer.num_val_batches if n != float("inf"))
        of = f"/{total}" if total else ""
        log.info(
            f"validation at step {trainer.global_step} | batch {self.val_batches}{of} | "
            f"elapsed {_clock(now - self.val_started)}"
        )
        self.last_line = now


class ValidationSummary(pl.Callback):
    """One line per validation, in a terminal and in logs alike: the step and every `val/` metric (the loss first,
    then the objective's: perplexity, accuracy, ...; a mixture's per-source losses) and the seconds it took. Under a
    live bar the line is printed above it through rich's console (a plain log line would be drawn over) and written
    to the log files."""

    def __init__(self) -> None:
        self.started: float | None = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        if not metrics:
            return
        names = sorted(metrics, key=lambda k: (k != "val/loss", k.count("/"), k))
        parts = [f"validation at step {trainer.global_step}", *(f"{k} {metrics[k]:.4f}" for k in names)]
        if self.started is not None:
            parts.append(f"{time.perf_counter() - self.started:.1f} s")
        line = " | ".join(parts)
        progress = getattr(trainer.progress_bar_callback, "progress", None)
        if progress is None or not progress.live.is_started:
            log.info(line)
            return
        progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`: rewritten at every validation, and also when fit ends or is interrupted (Ctrl-C, SIGTERM)
    after steps it has not saved yet, so every run that trained leaves a checkpoint to resume, fine-tune or
    export from, whatever its validation interval. (Lightning's save_last refreshes only on improvement.)"""

    def __init__(self, dirpath: str, **kwargs: Any) -> None:
        # one last.ckpt, replaced in place (never last-v1.ckpt beside an old one, also on a resume)
        kwargs = {"enable_version_counter": False, **kwargs}
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, **kwargs)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """When another checkpoint callback has just written this step's full checkpoint (the best one by validation
        loss, before this callback in the order), last.ckpt becomes a hard link to it: the same bytes, which each
        validation otherwise wrote twice. Anything else is written."""
        written = self._written_this_step(trainer)
        linked = written is not None and trainer.strategy.broadcast(
            trainer.is_global_zero and link_atomic(written, filepath)
        )
        if not linked:
            super()._save_checkpoint(trainer, filepath)
            return
        self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _written_this_step(self, trainer: pl.Trainer) -> str | None:
        for callback in trainer.checkpoint_callbacks:
            if (
                callback is not self
                and isinstance(callback, ModelCheckpoint)
                and callback.save_weights_only == self.save_weights_only
                and callback._last_global_step_saved == trainer.global_step
                and callback._last_checkpoint_saved
            ):
                return callback._last_checkpoint_saved
        return None

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


#: what a sample continues when the data has no held-out prompts (text)
DEFAULT_PROMPT = "The"


class SampleGeneration(pl.Callback):
    """At the end of fit, sample the model's answers to `prompts` held-out prompts of the data in the task's own
    format (a supervised task's validation prompts, rendered as its training rows are, e.g. through the chat
    template), or continue `prompt` (text data, or when given); print them, log them and write each with its prompt
    to samples.txt."""

    def __init__(
        self,
        prompt: str | None = None,
        prompts: int = 2,
        max_new_tokens: int = 100,
        temperature: float = 0.8,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int = 0,
    ) -> None:
        self.prompt, self.prompts, self.max_new_tokens = prompt, prompts, max_new_tokens
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed
        self.samples: list[dict[str, Any]] = []

    def prompts_for(self, trainer: pl.Trainer) -> list[str]:
        """`prompt` when given, else the data's held-out prompts, else "The"."""
        if self.prompt is not None:
            return [self.prompt]
        datamodule = getattr(trainer, "datamodule", None)
        held_out = datamodule.sample_prompts(self.prompts) if hasattr(datamodule, "sample_prompts") else []
        return held_out or [DEFAULT_PROMPT]

    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prompt: str) -> str:
        """One sample from the current weights, as the objective shows it (deterministic for a seed)."""
        model = pl_module.model
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = model.training
        model.eval()
        with trainer.precision_plugin.forward_context():
            text = pl_module.objective.sample(
                model,
                prompt,
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                generator=generator,
            )
        model.train(was_training)
        return text

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        prompts = self.prompts_for(trainer)
        texts = [self.generate(trainer, pl_module, p) for p in prompts]  # every rank: a sharded model needs them all
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        out_dir = Path(trainer.default_root_dir)
        for prompt, text in zip(prompts, texts, strict=True):
            self.samples.append({"step": step, "prompt": prompt, "text": text})
            print(f"\n--- sample at step {step}: prompt ---\n{prompt}\n--- sample ---\n{text}\n---")
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_text("samples", columns=["step", "prompt", "text"], data=[[step, prompt, text]])
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_text("sample", text, step)
            with (out_dir / "samples.txt").open("a", encoding="utf-8") as f:
                f.write(f"--- step {step}: prompt ---\n{prompt}\n--- step {step}: sample ---\n{text}\n")
