"""The LightningModule: a model, an objective and an optimizer; nothing else about training lives here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_llm.errors import TrainingDiverged
from lightning_llm.finetune.base import FinetuneMethod
from lightning_llm.objectives import Objective
from lightning_llm.optim import parameter_groups


class LanguageModelModule(pl.LightningModule):
    """Trains `model` with `objective`; logs train/val loss, the objective's metrics and tokens seen."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        finetune: FinetuneMethod | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.finetune = finetune or FinetuneMethod()
        # e.g. the fine-tuning method's config and the base checkpoint, so a small checkpoint can be rebuilt
        self.checkpoint_extras: dict[str, Any] = {}
        # a checkpoint of a parameter-efficient method holds only trained weights: load it non-strictly
        self.strict_loading = not self.finetune.saves_trainable_only
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = objective.metrics(model.config.vocab_size).clone(prefix="val/")
        self.tokens_seen = 0
        self.flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor for MFU

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def configure_model(self) -> None:
        """Under ModelParallelStrategy (trainer=fsdp): shard each transformer block, then the rest (FSDP2)."""
        if self.device_mesh is None or getattr(self, "_sharded", False):
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = self.device_mesh["data_parallel"]
        precision = str(self.trainer.precision)
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if (precision == "bf16-mixed")
            else MixedPrecisionPolicy()
        )
        for name in ("blocks", "encoder", "decoder"):
            for block in getattr(self.model, name, []):
                fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(self.model, mesh=mesh, mp_policy=policy)
        self._sharded = True

    def on_train_start(self) -> None:
        datamodule = self.trainer.datamodule
        flops_per_token = getattr(self.model, "flops_per_token", None)
        if flops_per_token is not None and datamodule is not None:
            tokens = datamodule.batch_size * datamodule.block_size
            self.flops_per_batch = flops_per_token(datamodule.block_size) * tokens

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.objective.forward(self.model, batch)
        if not torch.isfinite(out.loss):
            raise TrainingDiverged(
                f"train/loss is {out.loss.item()} at step {self.global_step}: the run stops here and the last "
                "good checkpoint is kept; lower optimizer.lr, keep trainer.gradient_clip_val, or try bf16-mixed"
            )
        self.tokens_seen += out.num_tokens * self.trainer.world_size
        self.log("train/loss", out.loss, prog_bar=True, batch_size=out.labels.size(0))
        self.log("train/tokens", float(self.tokens_seen), batch_size=out.labels.size(0))
        return out.loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.objective.forward(self.model, batch)
        self.val_metrics.update(out.logits.float(), out.labels)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=out.labels.size(0), sync_dist=True)
        self.log_dict(self.val_metrics, batch_size=out.labels.size(0))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(parameter_groups(self.model))
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make a checkpoint self-describing (model family and config, tokenizer, tokens seen); a
        parameter-efficient run keeps only its trained weights plus a reference to the base checkpoint."""
        if self.finetune.saves_trainable_only:
            keep = {f"model.{k}" for k in self.finetune.trainable_state_dict(self.model)}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint.update(self.checkpoint_extras)
        # the global RNG drives data masking/corruption: a resumed run continues the same random stream
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        config = getattr(self.model, "config", None)
        checkpoint["model_family"] = getattr(self.model, "family", type(self.model).__name__.lower())
        checkpoint["model_config"] = config.to_dict() if config is not None else None
        checkpoint["tokens_seen"] = self.tokens_seen
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "tokenizer", None) is not None:
            checkpoint["tokenizer"] = datamodule.tokenizer.to_bytes()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        rng = checkpoint.get("rng_state", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
