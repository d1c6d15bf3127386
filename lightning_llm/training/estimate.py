"""Before a run: parameters, FLOPs, memory per device, time and cost, and whether it fits the device.

Memory per device, in bytes (b micro-batch, s sequence, h width, a heads, d head size, k key/value heads, f MLP
width, V vocabulary, L layers, P parameters, T trainable parameters, w bytes per weight: 4, or 2 under
bf16-true/16-true; a quantized weight counts what it stores, e.g. 0.5 for 4-bit NF4):

- weights: P x w (+ buffers) / shards; under *-mixed also a 2-byte autocast copy of every linear weight
- gradients: T x w / shards; AdamW: two states of the parameter's dtype, 2 x T x w / shards
- activations, kept for backward (Korthikanti et al. 2022 adapted to these blocks: SDPA's fused kernels keep
  no s x s scores, only a log-sum-exp of 4sba bytes), per layer in elements: norm inputs 2sbh (3 with
  cross-attention), per attention sbh + 3sbad + 2sbkd (its input; q, output and the projection's input; k, v),
  MLP sbh + 2sbf (4sbf gated); 2 bytes each under bf16 (norm inputs 4 under *-mixed), else 4; 2sbh bytes of
  dropout masks when dropout > 0. With activation checkpointing a layer keeps only its input (sbh) and one
  layer is recomputed at a time. Final norms and the LM head's input add sbh each; the loss adds 3sbV fp32
  at the start of backward (log-probabilities, their gradient, the logits' gradient).

The total is their sum: an upper bound of the steady-state peak (gradients and activations overlap only in
part), without the CUDA context, allocator fragmentation or kernel workspaces (hence FIT_FRACTION).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn

from lightning_llm.finetune import FinetuneMethod, count_parameters
from lightning_llm.models import LanguageModel
from lightning_llm.training.parallel_estimate import (
    ParallelLayout,
    device_blocks,
    in_flight,
    microbatch_rows,
    summary,
    weight_shares,
)
from lightning_llm.training.peaks import GPU, device_name, device_peak_flops, gpu_peak_flops, precision_dtype

#: Model FLOPs utilisation assumed when no measured throughput is given: typical of a tuned dense run (PaLM
#: reports 46% on TPUs, Megatron 30-50% on A100s; this project's nano GPT measured ~30% of the CPU's matmul peak).
ASSUMED_MFU = 0.35
#: Share of a device's memory the estimate may use; the rest is the CUDA context, fragmentation, workspaces.
FIT_FRACTION = 0.9
GiB = 1024**3


def _is_quantized(param: torch.Tensor) -> bool:
    return getattr(param, "quant_state", None) is not None or param.dtype in (torch.uint8, torch.int8)


def weight_memory(model: nn.Module, precision: str, shares: dict[int, float] | None = None) -> dict[str, int]:
    """Bytes of weights (and buffers), of their gradients, of AdamW's states and of autocast's weight copies;
    with `shares`, of the share of each parameter (by id) one device holds (`parallel_estimate.weight_shares`)."""
    w = 2 if str(precision) in ("bf16-true", "16-true") else 4
    mixed = str(precision).endswith("-mixed")
    linear = {id(p) for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    weights = gradients = copies = 0
    for param in model.parameters():  # tied weights (the LM head and the embedding) once
        quantized, share = _is_quantized(param), 1.0 if shares is None else shares.get(id(param), 0.0)
        weights += param.numel() * share * (param.element_size() if quantized else w)
        gradients += param.numel() * share * w if param.requires_grad else 0
        copies += param.numel() * share * 2 if mixed and id(param) in linear and not quantized else 0
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    return {
        "weights": int(weights),
        "autocast_copies": int(copies),
        "gradients": int(gradients),
        "optimizer": int(2 * gradients),
    }


def activation_memory(
    model: LanguageModel,
    batch_size: int,
    seq_len: int,
    precision: str,
    tensor: int = 1,
    sequence_parallel: bool = False,
    blocks: list[nn.Module] | None = None,
) -> dict[str, int]:
    """Bytes of activations kept for backward, per device (see the module's docstring for the formula); split
    over `tensor` ranks (`parallel_estimate`), for the `blocks` one device runs (default all)."""
    c = model.config
    b, s, h, a, d, k = batch_size, seq_len, c.n_embd, c.n_head, c.head_dim, c.n_kv_head
    f = c.mlp_hidden or (64 * math.ceil(8 * h / 3 / 64) if c.gated else 4 * h)
    precision = str(precision)
    other = 2 if precision.startswith(("bf16", "16")) else 4
    residual = 4 if precision in ("32-true", "32", "64-true") or precision.endswith("-mixed") else 2
    masks = 2 * s * b * h if c.dropout > 0 else 0  # one byte per element of the two residual dropouts
    checkpointing = bool(model.activation_checkpointing)
    kept = largest = 0
    stream = 1 / tensor if sequence_parallel else 1.0  # the residual stream's share (sequence shards)
    for block in blocks if blocks is not None else [block for stack in model.layer_stacks() for block in stack]:
        attentions = 2 if getattr(block, "cross_attn", None) is not None else 1
        norms = (attentions + 1) * s * b * h * stream
        attention = attentions * (s * b * h * stream + (3 * s * b * a * d + 2 * s * b * k * d) / tensor)
        ffn = s * b * h * stream + (4 if c.gated else 2) * s * b * f / tensor
        layer = norms * residual + (attention + ffn) * other + masks * stream + attentions * 4 * s * b * a / tensor
        largest = max(largest, int(layer))
        kept += int(s * b * h * stream * residual if checkpointing else layer)
    head = len(model.layer_stacks()) * s * b * h * residual + s * b * h * other  # final norms, the LM head's input
    loss = 3 * s * b * c.vocab_size * 4
    recompute = largest if checkpointing else 0  # one layer's activations again, after the loss's are freed
    peak = kept + head + max(loss, recompute)
    return {"layers": kept, "head": head, "loss": loss, "recompute": recompute, "peak": peak}


def estimate(
    model: LanguageModel,
    finetune_method: FinetuneMethod | str | None,
    batch_size: int,
    seq_len: int,
    precision: str,
    strategy_shards: int = 1,
    devices: int = 1,
    peak_flops: float | None = None,
    tokens_per_step: int | None = None,
    max_steps: int | None = None,
    price_per_device_hour: float | None = None,
    *,
    mfu: float = ASSUMED_MFU,
    tokens_per_s: float | None = None,
    device_memory_bytes: int | None = None,
    layout: ParallelLayout | None = None,
) -> dict[str, Any]:
    """What one training step costs `model` (as it will train: fine-tuning applied) in FLOPs, memory per device
    and time, and for `max_steps` steps in hours and money. `batch_size` is per data-parallel replica;
    `tokens_per_step` defaults to batch_size x seq_len x devices. Time uses the measured `tokens_per_s` (all
    devices) when given, else devices x `peak_flops` x `mfu`. `layout`: tensor, pipeline and data parallel
    (`parallel_estimate`), which replaces `strategy_shards`."""
    name = finetune_method if isinstance(finetune_method, str) or finetune_method is None else finetune_method.name
    tokens_per_step = tokens_per_step or batch_size * seq_len * devices
    flops_per_token = int(model.flops_per_token(seq_len))
    shards = max(1, strategy_shards)
    if layout is None:
        memory = {key: -(-value // shards) for key, value in weight_memory(model, precision).items()}
        memory["activations"] = activation_memory(model, batch_size, seq_len, precision)["peak"]
    else:
        memory = weight_memory(model, precision, weight_shares(model, layout))
        rows, blocks = microbatch_rows(batch_size, layout), device_blocks(model, layout)
        kept = activation_memory(model, rows, seq_len, precision, layout.tensor, layout.sequence_parallel, blocks)
        memory["activations"] = kept["layers"] * in_flight(layout) + kept["head"] + max(kept["loss"], kept["recompute"])
    memory["total"] = sum(memory.values())
    if tokens_per_s is not None:
        throughput, source = tokens_per_s, "measured tokens/s"
    elif peak_flops:
        throughput, source = devices * peak_flops * mfu / flops_per_token, f"peak x assumed MFU {mfu:.0%}"
    else:
        throughput, source = None, "unknown (no peak FLOP/s for this device and no measured tokens/s)"
    out: dict[str, Any] = {
        "finetune": name or "none",
        "precision": str(precision),
        "devices": devices,
        "shards": shards,
        "activation_checkpointing": bool(model.activation_checkpointing),
        "parameters": {k: v for k, v in count_parameters(model).items() if k != "trainable_percent"},
        "batch_size": batch_size,
        "seq_len": seq_len,
        "tokens_per_step": tokens_per_step,
        "flops_per_token": flops_per_token,
        "flops_per_step": flops_per_token * tokens_per_step,
        "memory_bytes": memory,
        "peak_flops_per_s": peak_flops,
        "tokens_per_s": throughput,
        "throughput_source": source,
    }
    if layout is not None:
        out["parallel"] = summary(model, layout, batch_size, seq_len, precision)
    if throughput:
        out["step_seconds"] = tokens_per_step / throughput
        if max_steps:
            out["max_steps"] = max_steps
            out["total_seconds"] = out["step_seconds"] * max_steps
            out["device_hours"] = devices * out["total_seconds"] / 3600
            if price_per_device_hour is not None:
                out["cost_usd"] = out["device_hours"] * price_per_device_hour
    if device_memory_bytes:
        out["device_memory_bytes"] = device_memory_bytes
        out["fits"], warning = fits(out, device_memory_bytes)
        if warning:
            out["warning"] = warning
    return out


def fits(result: dict[str, Any], device_memory_bytes: int) -> tuple[bool, str | None]:
    """Whether an estimate's total fits FIT_FRACTION of a device's memory; if not, a warning with what to change."""
    memory = result["memory_bytes"]
    usable = FIT_FRACTION * device_memory_bytes
    if memory["total"] <= usable:
        return True, None
    if memory["activations"] > memory["total"] / 2:
        fix = "lower data.batch_size (with trainer.accumulate_grad_batches) or set model.activation_checkpointing=true"
    else:
        fix = "shard it (trainer=fsdp), use precision=bf16-true, or train fewer weights (finetune=lora or qlora)"
    return False, (
        f"needs ~{memory['total'] / GiB:.2f} GiB per device, more than {FIT_FRACTION:.0%} of the device's "
        f"{device_memory_bytes / GiB:.2f} GiB: {fix}"
    )


def device_memory(device: torch.device, processes_per_machine: int = 1) -> int:
    """Memory of one device in bytes: a GPU's total, or a CPU machine's RAM shared by its processes."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(1, processes_per_machine)


@dataclass(frozen=True)
class Hardware:
    """What a run is estimated on: one device in words, its peak FLOP/s (and where that number comes from) and
    memory, the processes that train (`devices`, all nodes) and how many of them shard the weights."""

    device: str
    peak_flops: float | None
    peak_source: str
    memory_bytes: int | None
    devices: int = 1
    shards: int = 1


def local_hardware(
    device: torch.device, precision: str, devices: int = 1, shards: int = 1, cache_dir: str | None = None
) -> Hardware:
    """This machine's CPU (its measured matmul peak, cached in `cache_dir`; RAM shared by the processes) or GPU."""
    peak, source = device_peak_flops(device, precision_dtype(precision), cache_dir)
    memory = device_memory(device, devices if device.type == "cpu" else 1)
    return Hardware(device_name(device), peak, source, memory, devices, shards)


def gpu_hardware(gpu: GPU, precision: str, devices: int = 1, shards: int = 1) -> Hardware:
    """A GPU from the data sheets (lightning_llm.training.peaks.GPUS), not this machine's: nothing touches CUDA."""
    peak, source = gpu_peak_flops(gpu, precision_dtype(precision))
    device = f"{gpu.name.upper()}, {gpu.memory_gib:g} GiB (data sheet)"
    return Hardware(device, peak, source, int(gpu.memory_gib * GiB), devices, shards)


def estimate_on(
    hardware: Hardware,
    model: LanguageModel,
    finetune_method: FinetuneMethod | str | None,
    batch_size: int,
    seq_len: int,
    precision: str,
    accumulate_grad_batches: int = 1,
    max_steps: int | None = None,
    price_per_device_hour: float | None = None,
    tokens_per_s: float | None = None,
    layout: ParallelLayout | None = None,
) -> dict[str, Any]:
    """`estimate` on `hardware`: its devices, shards, peak and memory, with the device named in the result; a
    model-parallel `layout` counts each data-parallel replica's batch once."""
    replicas = layout.data if layout is not None else hardware.devices
    out = estimate(
        model,
        finetune_method,
        batch_size,
        seq_len,
        precision,
        strategy_shards=hardware.shards,
        devices=hardware.devices,
        peak_flops=hardware.peak_flops,
        tokens_per_step=batch_size * seq_len * replicas * accumulate_grad_batches,
        max_steps=max_steps if max_steps and max_steps > 0 else None,
        price_per_device_hour=price_per_device_hour,
        tokens_per_s=tokens_per_s,
        device_memory_bytes=hardware.memory_bytes,
        layout=layout,
    )
    return {"device": hardware.device, "peak_source": hardware.peak_source, **out}


def estimate_for_trainer(
    trainer: pl.Trainer,
    model: LanguageModel,
    finetune_method: FinetuneMethod | str | None,
    batch_size: int,
    seq_len: int,
    cache_dir: str | None = None,
    price_per_device_hour: float | None = None,
    tokens_per_s: float | None = None,
) -> dict[str, Any]:
    """`estimate_on` this machine with the devices, sharding, precision and steps of a configured (not yet
    fitted) Trainer."""
    zero = (getattr(trainer.strategy, "config", None) or {}).get("zero_optimization", {}).get("stage")
    sharded = isinstance(trainer.strategy, FSDPStrategy | ModelParallelStrategy) or zero == 3  # ZeRO-3 shards all
    device = torch.device("cuda", 0) if isinstance(trainer.accelerator, CUDAAccelerator) else torch.device("cpu")
    precision = str(trainer.precision)
    world = trainer.world_size
    hardware = local_hardware(device, precision, world, world if sharded else 1, cache_dir)
    return estimate_on(
        hardware,
        model,
        finetune_method,
        batch_size,
        seq_len,
        precision,
        trainer.accumulate_grad_batches,
        trainer.max_steps,
        price_per_device_hour,
        tokens_per_s,
    )


def format_estimate(d: dict[str, Any]) -> str:
    """A small plain-text table of an estimate."""
    m = d["memory_bytes"]
    rows = [(key, d[key]) for key in ("device", "vocabulary") if d.get(key)]
    rows += [
        ("parameters (total / trainable)", f"{d['parameters']['total']:,} / {d['parameters']['trainable']:,}"),
        ("finetune, precision", f"{d['finetune']}, {d['precision']}"),
        ("devices (shards)", f"{d['devices']} ({d['shards']})"),
        ("tokens per step", f"{d['tokens_per_step']:,} (micro-batch {d['batch_size']} x {d['seq_len']})"),
        ("FLOPs per token / step", f"{d['flops_per_token']:.3g} / {d['flops_per_step']:.3g}"),
    ]
    for key in ("weights", "autocast_copies", "gradients", "optimizer", "activations", "total"):
        if m.get(key):
            rows.append((f"memory per device: {key.replace('_', ' ')}", _size(m[key])))
    parallel = d.get("parallel")
    if parallel:
        rows.append(("layout", parallel["layout"]))
        if parallel["pipeline"] > 1:
            in_flight = f"{parallel['microbatches_in_flight']} in flight"
            rows.append(("microbatch", f"{parallel['microbatch_rows']} rows, {in_flight}"))
            rows.append(("pipeline bubble", f"{parallel['bubble_fraction']:.1%} of each step"))
        for kind, sent in parallel["communication_bytes"].items():
            if sent:
                rows.append((f"sent per device and step: {kind.replace('_', ' ')}", _size(sent)))
    if d.get("device_memory_bytes"):
        verdict = "fits" if d["fits"] else "does NOT fit"
        rows.append(("device memory", f"{_size(d['device_memory_bytes'])}: {verdict}"))
    if d.get("peak_flops_per_s"):
        source = f" ({d['peak_source']})" if d.get("peak_source") else ""
        rows.append(("peak per device", f"{d['peak_flops_per_s'] / 1e12:,.3g} TFLOP/s{source}"))
    if d.get("tokens_per_s"):
        rows.append(("throughput", f"{d['tokens_per_s']:,.0f} tokens/s ({d['throughput_source']})"))
    for key, label in (("step_seconds", "time per step"), ("total_seconds", f"time for {d.get('max_steps')} steps")):
        if d.get(key) is not None:
            rows.append((label, _duration(d[key])))
    if d.get("device_hours") is not None:
        rows.append(("device-hours", f"{d['device_hours']:.3g}"))
    if d.get("cost_usd") is not None:
        rows.append(("cost", f"${d['cost_usd']:,.2f}"))
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines += [f"note: {note}" for note in d.get("notes", [])]
    return "\n".join(lines + ([f"warning: {d['warning']}"] if d.get("warning") else []))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _size(n: int) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 1024**2:.1f} MiB"
