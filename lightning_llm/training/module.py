"""The LightningModule: a model, an objective and an optimizer; nothing else about training lives here."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch.distributed.device_mesh import DeviceMesh

from lightning_llm.errors import TrainingDiverged
from lightning_llm.finetune import FinetuneMethod, NoFinetuning
from lightning_llm.log import get_logger
from lightning_llm.models import LanguageModel
from lightning_llm.models.parallel import PackedRows, apply_tensor_parallel
from lightning_llm.objectives import Objective
from lightning_llm.training.optim import parameter_groups
from lightning_llm.training.parallel import ModelParallel, clip_gradients, data_parallel_size, gradient_norm
from lightning_llm.training.pipeline import Pipeline
from lightning_llm.training.stability import newest_checkpoint

log = get_logger(__name__)
#: A validation loss this many times ln(vocabulary size) (a uniform guess) means the weights diverged.
DIVERGED_LOSS_FACTOR = 4.0


def _non_finite(tensors: Any) -> bool:
    """Whether any floating tensor in a nested structure (state dicts, optimizer states) is NaN or infinite."""
    if isinstance(tensors, torch.Tensor):
        return tensors.is_floating_point() and not bool(torch.isfinite(tensors).all())
    if isinstance(tensors, dict):
        return any(_non_finite(v) for v in tensors.values())
    if isinstance(tensors, list | tuple):
        return any(_non_finite(v) for v in tensors)
    return False


class LanguageModelModule(pl.LightningModule):
    """Trains `model` with `objective`; logs train/val loss, the gradient norm, the objective's metrics and tokens.

    A checkpoint never holds non-finite weights or optimizer state: a NaN/inf loss or gradient norm stops the
    run before the optimizer step, and a checkpoint write is refused when anything it would hold is not finite,
    or when the validation loss it follows is worse than DIVERGED_LOSS_FACTOR uniform guesses (finite weights a
    huge learning rate has wrecked).
    """

    def __init__(
        self,
        model: LanguageModel,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        finetune: FinetuneMethod | None = None,
        base_checkpoint: str | None = None,
        privacy: Any = None,
        decay_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.finetune = finetune or NoFinetuning()
        self.base_checkpoint = base_checkpoint  # a parameter-efficient checkpoint is rebuilt from its base
        # a checkpoint of a parameter-efficient method holds only trained weights: load it non-strictly
        self.strict_loading = not self.finetune.saves_trainable_only
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.decay_embeddings = decay_embeddings  # weight decay on embedding tables too (nanoGPT's rule)
        self.val_metrics = objective.metrics(model.config.vocab_size).clone(prefix="val/")
        self.tokens_seen = 0
        self.tokens_at_fit_start = 0  # tokens_seen when this fit started (a resumed run's are restored first)
        self.flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor for MFU
        self.first_step_at: float | None = None  # wall-clock time the first training batch started
        self.validated_at_step: int | None = None  # the step of fit's latest validation (not the sanity check)
        self.source_tokens: torch.Tensor | None = None  # tokens this rank read per source of a data mixture
        # DP-SGD (privacy=dp, lightning_llm.privacy): wraps the optimizer, counts the epsilon spent
        self.privacy = privacy
        self.pipeline: Pipeline | None = None  # this rank's pipeline stage and its schedule (trainer=pp)
        self.packed_rows: PackedRows = {}  # tensor-parallel weights stored rank by rank (checkpoints reorder them)
        self._parallelized = False

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def configure_model(self) -> None:
        """Under ModelParallelStrategy (trainer=fsdp) and our ModelParallel (trainer=tp, fsdp_tp, pp): the model's
        pipeline stage, then tensor parallel inside it, then FSDP2 over the data-parallel ranks (each
        transformer block, then the rest)."""
        if self.device_mesh is None or self._parallelized:
            return
        self._parallelized = True
        strategy, mesh = self.trainer.strategy, self.device_mesh
        if isinstance(strategy, ModelParallel):
            if strategy.pipeline_parallel_size > 1:
                self.pipeline = Pipeline(
                    self.model,
                    mesh["pipeline_parallel"],
                    strategy.microbatches,
                    strategy.pipeline_schedule,
                    strategy.root_device,
                    getattr(self.trainer.datamodule, "block_size", None),
                )
            if mesh["tensor_parallel"].size() > 1:
                rows = apply_tensor_parallel(self.model, mesh["tensor_parallel"], strategy.sequence_parallel)
                self.packed_rows = {f"model.{name}": layout for name, layout in rows.items()}
            if mesh["data_parallel"].size() == 1:
                return
        self._fully_shard(mesh["data_parallel"])

    def _fully_shard(self, mesh: DeviceMesh) -> None:
        """FSDP2 over the data-parallel ranks: each transformer block, then the rest."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if str(self.trainer.precision) == "bf16-mixed"
            else MixedPrecisionPolicy()
        )
        for stack in self.model.layer_stacks():
            for block in stack:
                fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(self.model, mesh=mesh, mp_policy=policy)

    def on_train_start(self) -> None:
        self.tokens_at_fit_start = self.tokens_seen  # restored from the checkpoint by now on a resume
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            tokens = datamodule.batch_size * datamodule.block_size
            # per device: a batch's work is split over the tensor-parallel ranks and pipeline stages reading it
            share = data_parallel_size(self.trainer) / self.trainer.world_size
            self.flops_per_batch = int(self.model.flops_per_token(datamodule.block_size) * tokens * share)

    # -- divergence --------------------------------------------------------------------------------------
    def last_good_checkpoint(self) -> str | None:
        """The newest checkpoint file this run has written, if any."""
        return newest_checkpoint(self.trainer) if self._trainer is not None else None

    def diverged(self, what: str) -> TrainingDiverged:
        good = self.last_good_checkpoint()
        if good:
            fix = f"the last good checkpoint is {good}; resume it (resume=auto) with a lower optimizer.lr"
        else:
            fix = "no checkpoint was written before it; start again (overwrite=true) with a lower optimizer.lr"
        return TrainingDiverged(
            f"{what} at step {self.global_step}: the run stops and {fix}, keep trainer.gradient_clip_val, or try "
            "bf16-mixed"
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
            loop = self.trainer.fit_loop.epoch_loop
            if self.automatic_optimization and loop._batches_that_stepped != self.global_step:
                # Lightning restores its logging step one ahead of global_step from a checkpoint written between
                # a step and the end of its batch (an interrupt): the loggers' rows were labelled one log interval
                # late. With one optimizer both count optimizer steps, so they agree again.
                loop._batches_that_stepped = self.global_step

    def training_step(self, batch: dict[str, torch.Tensor] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # an empty Poisson batch under DP-SGD: the optimizer takes a noise-only step
            if self.trainer.world_size == 1:
                return None
            # under DDP every process must run backward (the others wait in its all-reduce): a zero loss that
            # reaches every trainable weight, with no per-row gradient, so this process adds no rows
            return sum((p.sum() * 0 for p in self.model.parameters() if p.requires_grad), torch.zeros(()))
        if self.pipeline is not None and self.pipeline.split:  # the schedule runs forward and backward
            self.model.zero_grad()
            loss, num_tokens = self.pipeline.run(batch, train=True), batch["input_ids"].numel()
        else:
            out = self.objective.forward(self.model, batch)
            loss, num_tokens = out.loss, out.num_tokens
            self._log_scalars("train", out.scalars, batch["input_ids"].size(0))
        if not torch.isfinite(loss):
            raise self.diverged(f"train/loss is {loss.item()}")
        self.tokens_seen += num_tokens * data_parallel_size(self.trainer)
        rows = batch["input_ids"].size(0)
        if self._logs_this_step():
            self.log("train/loss", loss, prog_bar=True, batch_size=rows)
            self.log("train/tokens", float(self.tokens_seen), batch_size=rows)
        if "source_ids" in batch:
            self._record_sources(batch["source_ids"], batch["input_ids"].size(1))
        return loss

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward of the step's loss; under pipeline parallel the schedule ran it already, microbatch by
        microbatch, so there is nothing left to do."""
        if self.pipeline is None or not self.pipeline.split:
            super().backward(loss, *args, **kwargs)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        """Lightning clears the gradients between `training_step` and `backward`; under pipeline parallel the
        step's backward ran inside `training_step`, which cleared them itself beforehand."""
        if self.pipeline is None or not self.pipeline.split:
            super().optimizer_zero_grad(epoch, batch_idx, optimizer)

    def on_train_epoch_end(self) -> None:
        if self.pipeline is not None and self.pipeline.split and self.trainer.fit_loop.done:
            self.pipeline.join(self.model, self.trainer.optimizers)  # evaluation and samples need all the stages

    def _logs_this_step(self) -> bool:
        """Whether the loggers write this optimizer step (every trainer.log_every_n_steps, and the last step):
        per-step values are logged only then, since each `self.log` costs about half a millisecond."""
        every, step = self.trainer.log_every_n_steps, self.global_step + 1
        return every <= 1 or step % every == 0 or step == self.trainer.max_steps

    def _log_scalars(self, split: str, scalars: dict[str, torch.Tensor], rows: int) -> None:
        """An objective's further scalars (`ObjectiveOutput.scalars`) as `<split>/<name>`; training's on the steps
        the loggers write."""
        if split == "val" or self._logs_this_step():
            for name, value in scalars.items():
                self.log(f"{split}/{name}", value, batch_size=rows, sync_dist=split == "val")

    def _record_sources(self, source_ids: torch.Tensor, row_tokens: int) -> None:
        """Count a mixture's tokens per source and log each source's share so far (`train/mix/<source>`)."""
        names = self.trainer.datamodule.source_names
        counts = torch.bincount(source_ids.cpu(), minlength=len(names)) * row_tokens
        self.source_tokens = counts if self.source_tokens is None else self.source_tokens + counts
        if not self._logs_this_step():
            return
        total = float(self.source_tokens.sum())
        for name, tokens in zip(names, self.source_tokens.tolist(), strict=True):
            self.log(f"train/mix/{name}", tokens / total, batch_size=1)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """One pass over the gradients: their norm (logged as train/grad_norm; a non-finite one stops the run
        before the optimizer step) and, with trainer.gradient_clip_val, clipping by it."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params or self.privacy is not None:  # DP-SGD clips each row's gradient itself (and logs no norm)
            return
        if gradient_clip_algorithm not in (None, "norm"):  # clipping by value: Lightning's own, then the norm
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            gradient_clip_val = None
        pipeline = self.device_mesh["pipeline_parallel"] if self.pipeline is not None else None
        norm = gradient_norm(params, pipeline)  # of the whole model: over every tensor-parallel shard and stage
        if gradient_clip_val:
            clip_gradients(params, gradient_clip_val, norm)
        if not torch.isfinite(norm):
            raise self.diverged(f"the gradient norm is {norm.item()}")
        if self._logs_this_step():
            self.log("train/grad_norm", norm, batch_size=1)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.pipeline is not None and self.pipeline.split:  # the stages' token loss (the objective's metrics
            # read a whole model's outputs: they come once the stages are joined)
            loss = self.pipeline.run(batch, train=False)
            self.log("val/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0), sync_dist=True)
            return
        out = self.objective.forward(self.model, batch)
        self.val_metrics.update(out.logits.float(), out.labels)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=out.rows, sync_dist=True)
        self.log_dict(self.val_metrics, batch_size=out.rows)
        self._log_scalars("val", out.scalars, out.rows)
        if "source_ids" in batch:  # a mixture's batches each hold one source
            name = self.trainer.datamodule.source_names[int(batch["source_ids"][0])]
            self.log(f"val/{name}/loss", out.loss, batch_size=out.rows, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step
        if self.privacy is not None:  # the privacy budget spent so far, next to the validation loss
            self.log("privacy/epsilon", self.privacy.epsilon(), batch_size=1)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(parameter_groups(self.model, self.decay_embeddings))
        if self.privacy is not None:
            optimizer = self.privacy.wrap_optimizer(optimizer)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make a checkpoint self-describing (model family and config, tokenizer, tokens seen, the fine-tuning
        method as plain data); a parameter-efficient run keeps only its trained weights plus the base's path."""
        if _non_finite(checkpoint["state_dict"]) or _non_finite(checkpoint.get("optimizer_states")):
            raise self.diverged("the weights or optimizer state became NaN or infinite (not saved)")
        val_loss = self.trainer.callback_metrics.get("val/loss") if self._trainer is not None else None
        limit = DIVERGED_LOSS_FACTOR * math.log(max(2, self.model.config.vocab_size))
        if val_loss is not None and not (math.isfinite(float(val_loss)) and float(val_loss) <= limit):
            raise self.diverged(f"val/loss is {float(val_loss):.4g}, above {limit:.1f} (not saved)")
        if self.finetune.saves_trainable_only:
            keep = {f"model.{k}" for k in self.finetune.trainable_state_dict(self.model)}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["finetune"] = self.finetune.describe()
        if self.base_checkpoint:
            checkpoint["base_checkpoint"] = self.base_checkpoint
        # the global RNG drives data masking/corruption: a resumed run continues the same random stream
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["model_family"] = self.model.family
        checkpoint["model_config"] = self.model.config.to_dict()
        checkpoint["tokens_seen"] = self.tokens_seen
        if objective_state := self.objective.state_dict():
            checkpoint["objective_state"] = objective_state
        if self.privacy is not None:
            checkpoint["privacy"] = self.privacy.state_dict()
        if self.source_tokens is not None:
            checkpoint["source_tokens"] = self.source_tokens.tolist()
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "tokenizer", None) is not None:
            checkpoint["tokenizer"] = datamodule.tokenizer.to_bytes()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        if "objective_state" in checkpoint:
            self.objective.load_state_dict(checkpoint["objective_state"])
        if self.privacy is not None and "privacy" in checkpoint:
            self.privacy.load_state_dict(checkpoint["privacy"])
        if "source_tokens" in checkpoint:
            self.source_tokens = torch.tensor(checkpoint["source_tokens"])
        rng = checkpoint.get("rng_state", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self._apply_configured_lr(checkpoint)

    def _apply_configured_lr(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run uses the learning rate of its config (e.g. lowered after a divergence): the restored
        optimizer and schedule are rescaled from the checkpoint's base rate to the configured one."""
        configured = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        states = checkpoint.get("optimizer_states") or []
        if configured is None or not states:
            return
        saved = states[0]["param_groups"][0].get("initial_lr", states[0]["param_groups"][0].get("lr"))
        if saved is None or math.isclose(float(saved), float(configured)):
            return
        ratio = float(configured) / float(saved)
        for state in states:
            for group in state["param_groups"]:
                group["lr"] = group["lr"] * ratio
                if "initial_lr" in group:
                    group["initial_lr"] = group["initial_lr"] * ratio
        for scheduler in checkpoint.get("lr_schedulers") or []:
            for key in ("base_lrs", "_last_lr"):
                if key in scheduler:
                    scheduler[key] = [lr * ratio for lr in scheduler[key]]
        log.info("resuming with optimizer.lr=%g (the checkpoint trained with %g)", configured, saved)
