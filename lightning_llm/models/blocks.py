"""Shared transformer building blocks: norms, positions, attention, MLP and the pre-norm block.

Every architecture file wires these together; each knob is a field of `ModelConfig`, so a model
(GPT-2 style, Llama style, ...) is described entirely in YAML.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_llm.errors import ConfigError


@dataclass
class ModelConfig:
    """Shape and flavour of a transformer; the same fields serve every architecture."""

    vocab_size: int = 4096
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention when smaller than n_head
    n_embd: int = 256
    mlp: Literal["gelu", "swiglu"] = "gelu"
    mlp_hidden: int | None = None  # default: 4 * n_embd (gelu) or 8/3 * n_embd rounded (swiglu)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    positions: Literal["learned", "rope"] = "learned"
    rope_base: float = 10000.0
    bias: bool = True
    dropout: float = 0.0
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        self.n_kv_head = self.n_kv_head or self.n_head
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"model.n_head={self.n_head} is not a multiple of model.n_kv_head={self.n_kv_head}")
        for key, allowed in (
            ("mlp", ("gelu", "swiglu")),
            ("norm", ("layernorm", "rmsnorm")),
            ("positions", ("learned", "rope")),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} is unknown: use one of {allowed}")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> ModelConfig:
        """Build from loose keyword arguments, naming any key that is not a model option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(f"model.{unknown[0]} is not a model option: known options are {sorted(known)}")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias), as in T5 and Llama."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def build_norm(config: ModelConfig) -> nn.Module:
    """The norm layer a config asks for."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotates query/key channel pairs by position-dependent angles."""

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate `x` of shape (batch, heads, time, head_dim), halves-split layout."""
        t = x.size(-2)
        cos = self.cos[offset : offset + t].to(x.dtype)
        sin = self.sin[offset : offset + t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    """Multi-head (optionally grouped-query) attention through `scaled_dot_product_attention`."""

    def __init__(self, config: ModelConfig, causal: bool, rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.causal = causal
        self.rope = rope
        self.dropout = config.dropout
        qkv_out = (config.n_head + 2 * config.n_kv_head) * config.head_dim
        self.qkv = nn.Linear(config.n_embd, qkv_out, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim],
            dim=-1,
        )
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and attn_mask is None,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """Feed-forward block: GELU (GPT/BERT) or SwiGLU (Llama)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gated = config.mlp == "swiglu"
        hidden = config.mlp_hidden or (
            4 * config.n_embd if not self.gated else 64 * math.ceil(8 * config.n_embd / 3 / 64)
        )
        self.fc = nn.Linear(config.n_embd, (2 if self.gated else 1) * hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, causal: bool, rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.norm_attn = build_norm(config)
        self.attn = Attention(config, causal=causal, rope=rope)
        self.norm_mlp = build_norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_attn(x), attn_mask))
        return x + self.mlp(self.norm_mlp(x))


def init_weights(module: nn.Module, n_layer: int) -> None:
    """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layer)."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(".proj") else 0.02
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=0.02)
