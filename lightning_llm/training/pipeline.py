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
        self,
        model: LanguageModel,
        mesh: DeviceMesh,
        microbatches: int,
        schedule: str,
        device: torch.device,
        length: int | None = None,
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
        self.stage_module = stages[self.index]
        stage = PipelineStage(self.stage_module, self.index, self.size, device, group=mesh.get_group())
        self.schedule = SCHEDULE_CLASSES[schedule](stage, microbatches, loss_fn=self._loss, scale_grads=False)
        self.microbatches = microbatches
        # every batch has one shape, the stages' buffers': rows fixed by the first batch, columns `length` (the
        # data's block size: fine-tuning pairs come as long as their batch's longest)
        self.rows: int | None = None
        self.length = length or model.config.block_size
        self.scored_tokens = 1

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A microbatch's share of the batch's mean token loss."""
        flat = logits.flatten(0, -2).float()
        loss = F.cross_entropy(flat, labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return loss / self.scored_tokens

    def _shaped(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels padded to the one shape of every batch: rows and columns at the end, which score
        nothing and which no real token attends to (rows are apart; the stages take causal or full-length rows)."""
        ids, labels = batch["input_ids"], batch["labels"]
        self.rows = self.rows or self.microbatches * math.ceil(ids.size(0) / self.microbatches)
        rows, columns = self.rows - ids.size(0), self.length - ids.size(1)
        if rows < 0 or columns < 0:
            raise ValueError(f"a batch of {tuple(ids.shape)} beyond the pipeline's {(self.rows, self.length)}")
        return F.pad(ids, (0, columns, 0, rows)), F.pad(labels, (0, columns, 0, rows), value=IGNORE_INDEX)

    def run(self, batch: dict[str, torch.Tensor], train: bool) -> torch.Tensor:
        """The batch's mean token loss, on every rank, after running it through the stages (with backward when
        training: the gradients are in the stage's weights)."""
        ids, labels = self._shaped(batch)
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
