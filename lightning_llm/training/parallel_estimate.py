"""What tensor, sequence and pipeline parallelism change in an estimate (`estimate=true` with trainer=tp,
fsdp_tp, pp): the weights one device holds, its activations per microbatch, the pipeline's bubble and the bytes
each device sends per step.

Per device (t tensor-parallel ranks, p stages, m microbatches, d data-parallel replicas):
- weights, gradients and optimizer state: the linear layers of the blocks and the vocabulary tables split by t,
  the rest (norms, position tables, small heads) whole; the largest stage's under pipeline parallel (plus
  whatever no stage holds); / d more under FSDP.
- activations: each layer's split ones by t (all of them with sequence parallel, the norms' and residual
  inputs whole without); under pipeline parallel a microbatch's (batch / m rows) over the stage's layers, with
  m of them in flight under GPipe and min(m, p) under 1F1B; the logits are gathered whole.
- bubble: the share of a step a stage idles, (p - 1) / (m + p - 1) for both schedules (1F1B saves memory, not
  time, over GPipe).
- communication, bytes sent per device and step (a ring all-reduce of n bytes over k ranks sends 2 n (k-1)/k,
  an all-gather or reduce-scatter n (k-1)/k): tensor parallel all-reduces (with sequence parallel all-gathers
  and reduce-scatters, the same bytes) the residual stream (b s h) twice per layer forward and twice backward,
  three times with cross-attention, and gathers the logits (b s V); pipeline parallel sends one activation
  (b s h) forward and its gradient back per stage boundary; FSDP all-gathers the weights twice (forward,
  backward) and reduce-scatters the gradients, DDP all-reduces the gradients.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from lightning_llm.models import LanguageModel


@dataclass(frozen=True)
class ParallelLayout:
    """How a run splits: tensor-parallel ranks, pipeline stages (microbatches, schedule), data-parallel
    replicas (sharded by FSDP or not)."""

    tensor: int = 1
    pipeline: int = 1
    data: int = 1
    sequence_parallel: bool = True
    microbatches: int = 1
    schedule: str = "1f1b"
    fsdp: bool = False

    def describe(self) -> str:
        parts = [f"data parallel {self.data}{' (FSDP)' if self.fsdp else ''}"]
        if self.tensor > 1:
            parts.append(f"tensor parallel {self.tensor}{' + sequence parallel' if self.sequence_parallel else ''}")
        if self.pipeline > 1:
            parts.append(f"pipeline {self.pipeline} stages, {self.microbatches} microbatches, {self.schedule}")
        return ", ".join(parts)


def device_blocks(model: LanguageModel, layout: ParallelLayout) -> list[nn.Module]:
    """The blocks the most loaded device runs: all of them, or the largest pipeline stage's."""
    if layout.pipeline == 1:
        return [block for stack in model.layer_stacks() for block in stack]
    stages = model.pipeline_stages(layout.pipeline)
    return list(max(stages, key=lambda s: sum(p.numel() for p in s.parameters())).blocks)


def weight_shares(model: LanguageModel, layout: ParallelLayout) -> dict[int, float]:
    """The share of each parameter (by id) the most loaded device holds."""
    held = {id(p) for p in model.parameters()}
    if layout.pipeline > 1:
        stages = model.pipeline_stages(layout.pipeline)
        staged = {id(p) for stage in stages for p in stage.parameters()}
        largest = max(stages, key=lambda s: sum(p.numel() for p in s.parameters()))
        held = (held - staged) | {id(p) for p in largest.parameters()}
    split = {
        id(p)
        for stack in model.layer_stacks()
        for m in stack.modules()
        if isinstance(m, nn.Linear)
        for p in m.parameters(recurse=False)
    }
    split |= {id(model.input_embeddings().weight)}
    head = getattr(model, "lm_head", None)
    split |= {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    fsdp = layout.data if layout.fsdp else 1
    return {id(p): (1 / layout.tensor if id(p) in split else 1.0) / fsdp for p in model.parameters() if id(p) in held}


def microbatch_rows(batch_size: int, layout: ParallelLayout) -> int:
    return math.ceil(batch_size / layout.microbatches) if layout.pipeline > 1 else batch_size


def in_flight(layout: ParallelLayout) -> int:
    """Microbatches whose activations a stage keeps at once (its first stage, the most)."""
    if layout.pipeline == 1:
        return 1
    return layout.microbatches if layout.schedule == "gpipe" else min(layout.microbatches, layout.pipeline)


def bubble_fraction(layout: ParallelLayout) -> float:
    """The share of a step each stage waits: (p - 1) / (m + p - 1)."""
    p, m = layout.pipeline, layout.microbatches
    return (p - 1) / (m + p - 1) if p > 1 else 0.0


def communication(
    model: LanguageModel, layout: ParallelLayout, batch_size: int, seq_len: int, bytes_per_value: int
) -> dict[str, int]:
    """Bytes each device sends per training step, by kind of parallelism (see the module's docstring)."""
    c = model.config
    stream = batch_size * seq_len * c.n_embd * bytes_per_value  # one residual stream: b s h
    t, p, d = layout.tensor, layout.pipeline, layout.data
    out = {"tensor_parallel": 0, "pipeline_parallel": 0, "data_parallel": 0}
    if t > 1:
        reductions = sum(
            4 + (2 if getattr(block, "cross_attn", None) is not None else 0) for block in device_blocks(model, layout)
        )
        logits = batch_size * seq_len * c.vocab_size * bytes_per_value
        out["tensor_parallel"] = int((reductions * 2 * stream + 2 * logits) * (t - 1) / t)
    if p > 1:
        out["pipeline_parallel"] = 2 * stream  # a boundary's activations forward and their gradients back
    if d > 1:
        shares = weight_shares(model, layout)
        held = [(param, shares[id(param)]) for param in model.parameters() if id(param) in shares]
        weights = sum(param.numel() * share for param, share in held)
        trainable = sum(param.numel() * share for param, share in held if param.requires_grad)
        if layout.fsdp:  # the shares are / d already: each all-gather or reduce-scatter moves d times them
            volume = (2 * weights + trainable) * (d - 1) * bytes_per_value
        else:
            volume = 2 * trainable * bytes_per_value * (d - 1) / d
        out["data_parallel"] = int(volume)
    out["total"] = sum(out.values())
    return out


def summary(
    model: LanguageModel, layout: ParallelLayout, batch_size: int, seq_len: int, precision: str
) -> dict[str, Any]:
    """The layout, its bubble and its communication per device and step, for an estimate."""
    bytes_per_value = 2 if str(precision).startswith(("bf16", "16")) else 4
    return {
        **asdict(layout),
        "layout": layout.describe(),
        "microbatch_rows": microbatch_rows(batch_size, layout),
        "microbatches_in_flight": in_flight(layout),
        "bubble_fraction": bubble_fraction(layout),
        "communication_bytes": communication(model, layout, batch_size, seq_len, bytes_per_value),
    }
