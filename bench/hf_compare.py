"""Part 1: one training step of our GPT vs `transformers.GPT2LMHeadModel` of exactly the same shape.

A step is forward + cross-entropy + backward + AdamW step + zero_grad, on the same batches in the same
process; the two models alternate step by step (A B, then B A, ...) so that a busy CPU slows both alike.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from bench.common import Row, Sample, build_model, paired_ratio, span, stamp
from lightning_llm.models import GPT
from lightning_llm.objectives.base import token_cross_entropy
from lightning_llm.training.optim import parameter_groups

MIN_STEPS = 5  # measured steps per model before a time budget may stop a comparison early
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Shape:
    """Model and batch shape of one comparison."""

    name: str
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    batch_size: int

    def describe(self) -> str:
        return (
            f"{self.n_layer} layers, {self.n_head} heads, n_embd {self.n_embd}, block {self.block_size}, "
            f"vocab {self.vocab_size}, batch {self.batch_size}"
        )


def default_shape(cfg: DictConfig) -> Shape:
    """The default experiment's model (conf/model/gpt.yaml) and batch size (conf/data)."""
    m = cfg.model
    return Shape("default", m.block_size, m.n_layer, m.n_head, m.n_embd, cfg.tokenizer.vocab_size, cfg.data.batch_size)


# About 10M parameters: 10.7M without the embedding tables, 12.3M with them (vocab 4096).
TEN_M = Shape("~10M", block_size=256, n_layer=6, n_head=6, n_embd=384, vocab_size=4096, batch_size=8)


def build_ours(cfg: DictConfig, shape: Shape) -> GPT:
    """Our GPT from conf/model/gpt.yaml with the shape's sizes (every other option as configured).

    That it is GPT-2 (tanh GELU, pre-norm LayerNorm, learned positions, biases, tied head) is checked by
    `compare`: the same weights must give HF's logits.
    """
    sizes = {k: getattr(shape, k) for k in ("block_size", "n_layer", "n_head", "n_embd", "vocab_size")}
    return build_model(cfg.model, **sizes, dropout=0.0)


def build_hf(ours: GPT, attn_implementation: str = "sdpa", activation: str = "gelu_new") -> tuple[nn.Module, str]:
    """GPT2LMHeadModel of the same shape as `ours`, with its weights copied; returns it and the attention used.

    `gelu_new` is GPT-2's tanh GELU written out in Python ops; `gelu_pytorch_tanh` is the same function as
    one fused `F.gelu(approximate="tanh")`, which is what ours calls.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    c = ours.config
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=None,  # 4 * n_embd, as ours
        activation_function=activation,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=c.norm_eps,
        tie_word_embeddings=True,
        use_cache=False,  # training: no KV cache
        bos_token_id=None,
        eos_token_id=None,
    )
    try:
        hf = GPT2LMHeadModel._from_config(config, attn_implementation=attn_implementation)
    except (ValueError, ImportError):
        hf = GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    copy_weights(ours, hf)
    return hf.train(), str(hf.config._attn_implementation)


@torch.no_grad()
def copy_weights(ours: GPT, hf: nn.Module) -> None:
    """Load our weights into HF GPT-2 (its Conv1D stores Linear weights transposed)."""
    t = hf.transformer
    t.wte.weight.copy_(ours.wte.weight)
    t.wpe.weight.copy_(ours.wpe.weight)
    pairs: list[tuple[nn.Module, nn.Module, bool]] = [(t.ln_f, ours.norm_f, False)]
    for h, b in zip(t.h, ours.blocks, strict=True):
        pairs += [
            (h.ln_1, b.norm_attn, False),
            (h.attn.c_attn, b.attn.qkv, True),
            (h.attn.c_proj, b.attn.proj, True),
            (h.ln_2, b.norm_mlp, False),
            (h.mlp.c_fc, b.mlp.fc, True),
            (h.mlp.c_proj, b.mlp.proj, True),
        ]
    for dst, src, transpose in pairs:
        dst.weight.copy_(src.weight.t() if transpose else src.weight)
        dst.bias.copy_(src.bias)


def forward_ours(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids)


def forward_hf(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids).logits


def make_batches(shape: Shape, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`n` batches of random token blocks, laid out as the CLM objective collates them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.block_size + 1), generator=g)
        out.append({"input_ids": tokens[:, :-1], "labels": tokens[:, 1:]})
    return out


def train_step(
    model: nn.Module, forward: Forward, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]
) -> None:
    """forward + cross-entropy + backward + optimizer step + zero_grad."""
    loss = token_cross_entropy(forward(model, batch["input_ids"]), batch["labels"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def compare(
    cfg: DictConfig,
    shape: Shape,
    warmup: int,
    steps: int,
    attn_implementation: str = "sdpa",
    extra_activations: tuple[str, ...] = (),
    budget_s: float = float("inf"),
) -> tuple[list[Row], dict[str, str]]:
    """Time interleaved training steps of ours and HF (gelu_new, then any `extra_activations`) after `warmup`
    each; the order of the models rotates every step. Measures `steps` steps, more (up to 3x, within `budget_s`)
    until each model has `steps` quiet ones; past `budget_s` it stops once MIN_STEPS are in. Returns rows and
    facts to report."""
    deadline = time.perf_counter() + budget_s
    torch.manual_seed(0)
    ours = build_ours(cfg, shape).train()
    n_ours = ours.num_parameters()
    batches = make_batches(shape, warmup + steps)
    optimizer_factory = instantiate(cfg.optimizer)  # conf/optimizer/adamw.yaml, as training uses it
    group = f"step: {shape.name} ({n_ours / 1e6:.1f}M params)"
    tokens = shape.batch_size * shape.block_size
    rows = [Row(group, "ours (lightning_llm GPT)", [], tokens, reference=True)]
    runs: list[tuple[nn.Module, Forward, torch.optim.Optimizer, list[Sample]]] = [
        (ours, forward_ours, optimizer_factory(parameter_groups(ours)), rows[0].samples)
    ]
    facts = {f"{shape.name} shape": f"{shape.describe()}; {n_ours:,} parameters in ours and in HF"}
    for activation in ("gelu_new", *extra_activations):
        hf, attn = build_hf(ours, attn_implementation, activation)
        n_hf = sum(p.numel() for p in hf.parameters())
        assert n_ours == n_hf, f"parameter counts differ: ours {n_ours:,}, HF {n_hf:,}"
        with torch.no_grad():
            x = batches[0]["input_ids"]
            max_diff = (forward_ours(ours, x) - forward_hf(hf, x)).abs().max().item()
        assert max_diff < 1e-3, (
            f"same weights, different logits (max |diff| = {max_diff:.2e}): conf/model/gpt.yaml is no longer "
            "GPT-2 (tanh GELU, pre-norm LayerNorm, learned positions, biases, tied head), HF GPT-2 cannot mirror it"
        )
        facts[f"{shape.name} HF {activation}"] = f"attention {attn}; same weights, max |logits - ours| = {max_diff:.1e}"
        rows.append(Row(group, "HF GPT2LMHeadModel", [], tokens, note=f"{attn}, {activation}"))
        runs.append((hf, forward_hf, optimizer_factory(parameter_groups(hf)), rows[-1].samples))

    gc.collect()
    i = 0
    while True:
        measured, late = i - warmup, time.perf_counter() > deadline
        if measured >= steps and (min(r.quiet for r in rows) >= steps or late or measured >= 3 * steps):
            break
        if late and measured >= MIN_STEPS:
            facts[f"{shape.name} stopped early"] = f"{measured} of {steps} steps measured within {budget_s:.0f} s"
            break
        for model, forward, optimizer, samples in runs[i % len(runs) :] + runs[: i % len(runs)]:
            start = stamp()
            train_step(model, forward, optimizer, batches[i % len(batches)])
            if i >= warmup:
                samples.append(span(start, stamp()))
        i += 1
    for row in rows[1:]:
        row.paired = paired_ratio(row.samples, rows[0].samples)
    return rows, facts


def profile(cfg: DictConfig, shape: Shape, steps: int = 3, top: int = 15) -> str:
    """torch.profiler tables (self CPU time) of a few training steps of ours and of HF."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    ours = build_ours(cfg, shape).train()
    hf, _ = build_hf(ours)
    optimizer_factory = instantiate(cfg.optimizer)
    batches = make_batches(shape, steps + 2)
    out = []
    for name, model, forward in (("ours", ours, forward_ours), ("HF", hf, forward_hf)):
        optimizer = optimizer_factory(parameter_groups(model))
        for batch in batches[:2]:
            train_step(model, forward, optimizer, batch)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[2:]:
                train_step(model, forward, optimizer, batch)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
        out.append(f"--- {name}: {shape.describe()}, {steps} steps ---\n{table}")
    return "\n".join(out)
