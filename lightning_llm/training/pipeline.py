"""Pipeline parallel inside the LightningModule: Lightning has no pipeline strategy, so each rank keeps its own
stage of the model (`LanguageModel.pipeline_stages`) and `training_step` runs the batch through a
`torch.distributed.pipelining` schedule (GPipe or 1F1B) as microbatches, forward and backward; Lightning then
clips, steps the optimizer and the schedule as usual (the module's `backward` has nothing left to do).

The loss is the token cross-entropy of the last stage's logits over the whole batch (each microbatch adds its
share: its summed loss over the batch's scored tokens), so the gradients are the one-device batch's exactly.
The other stages' weights live on the meta device while the pipeline runs; `join` gathers every stage's
weights and optimizer states onto every rank when fit ends, so evaluation and generation run on a whole model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from torch.distributed.tensor import DTensor, Partial

from lightning_llm.models import LanguageModel
from lightning_llm.objectives.base import IGNORE_INDEX
from lightning_llm.training.parallel import local_optimizer_state

SCHEDULE_CLASSES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


class Pipeline:
    """This rank's stage of `model` on the `mesh` of pipeline ranks, and the schedule that runs it."""

    def __init__(
        self, model: LanguageModel, mesh: DeviceMesh, microbatches: int, schedule: str, device: torch.device
    ) -> None:
        self.mesh, self.index, self.size, self.device = mesh, mesh.get_local_rank(), mesh.size(), device
        stages = model.pipeline_stages(self.size)
        own = {id(p) for p in stages[self.index].parameters()}
        staged = {id(p) for stage in stages for p in stage.parameters()}
        for module in model.modules():  # the other stages' weights leave this rank (weights outside any stay)
            for name, param in list(module.named_parameters(recurse=False)):
                if id(param) in staged and id(param) not in own:
                    meta = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
                    setattr(module, name, meta)
        self.split = True  # until `join`
        stage = PipelineStage(stages[self.index], self.index, self.size, device, group=mesh.get_group())
        self.schedule = SCHEDULE_CLASSES[schedule](stage, microbatches, loss_fn=self._loss, scale_grads=False)
        self.microbatches = microbatches
        self.rows: int | None = None  # rows per batch, fixed by the first: the stages' buffers have that shape
        self.scored_tokens = 1

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A microbatch's share of the batch's mean token loss."""
        flat = logits.flatten(0, -2).float()
        loss = F.cross_entropy(flat, labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return loss / self.scored_tokens

    def _rows(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels with as many rows as every batch has (padding rows score nothing)."""
        ids, labels = batch["input_ids"], batch["labels"]
        self.rows = self.rows or self.microbatches * math.ceil(ids.size(0) / self.microbatches)
        missing = self.rows - ids.size(0)
        if missing < 0:
            raise ValueError(
                f"a batch of {ids.size(0)} rows after batches of {self.rows}: the stages' shapes are fixed"
            )
        if missing:
            ids = torch.cat((ids, ids.new_zeros(missing, ids.size(1))))
            labels = torch.cat((labels, labels.new_full((missing, labels.size(1)), IGNORE_INDEX)))
        return ids, labels

    def run(self, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        """The batch's mean token loss, on every rank, after running it through the stages (with backward when
        training: the gradients are in the stage's weights)."""
        ids, labels = self._rows(batch)
        self.scored_tokens = int((labels != IGNORE_INDEX).sum().clamp(min=1))
        losses: list[torch.Tensor] = []
        args = (ids,) if self.index == 0 else ()
        target = labels if self.index == self.size - 1 else None
        (self.schedule.step if train else self.schedule.eval)(*args, target=target, losses=losses)
        loss = torch.stack(losses).sum().detach() if losses else torch.zeros((), device=self.device)
        return DTensor.from_local(loss.reshape(1), self.mesh, [Partial()]).full_tensor().reshape(())

    def join(self, model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
        """Give every rank the whole model: each stage's weights and optimizer states, from its own rank."""
        group = self.mesh.get_group()
        weights: list[Any] = [None] * self.size
        local = {k: v.detach().cpu() for k, v in model.state_dict().items() if not v.is_meta}
        dist.all_gather_object(weights, local, group=group)
        every = {k: v for part in weights for k, v in part.items()}
        replaced: dict[int, nn.Parameter] = {}
        for prefix, module in model.named_modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if param.is_meta:
                    whole = every[f"{prefix}.{name}" if prefix else name].to(self.device, param.dtype)
                    replaced[id(param)] = nn.Parameter(whole, requires_grad=param.requires_grad)
                    setattr(module, name, replaced[id(param)])
        for optimizer in optimizers:
            states: list[Any] = [None] * self.size
            dist.all_gather_object(states, local_optimizer_state(optimizer), group=group)
            for param_group in optimizer.param_groups:
                param_group["params"] = [replaced.get(id(p), p) for p in param_group["params"]]
            optimizer.load_state_dict({**states[0], "state": {k: v for s in states for k, v in s["state"].items()}})
        self.split = False
