"""Shared transformer building blocks: norms, positions, attention, MLP and the transformer block.

Every architecture file only wires these together. Each knob is a field of `ModelConfig`, so a model
(GPT-2, Llama, BERT, T5 flavours) is described entirely in YAML.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from lightning_llm.errors import ConfigError, unknown_key
from lightning_llm.models.cache import LayerCache

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2, T5 v1.1 ("gelu_new")
    "gelu": F.gelu,  # BERT (exact, erf)
    "relu": F.relu,  # T5 v1.0
    "silu": F.silu,  # Llama (with gated=True: SwiGLU)
}
_CHOICES = {
    "activation": tuple(ACTIVATIONS),
    "norm": ("layernorm", "rmsnorm"),
    "norm_position": ("pre", "post"),
    "positions": ("learned", "rope", "relative"),
}


@dataclass
class ModelConfig:
    """Shape and flavour of a transformer; the same fields serve every architecture."""

    vocab_size: int = 4096
    block_size: int = 256  # longest sequence (learned positions, RoPE tables, the data's block size)
    n_layer: int = 4  # decoder layers (GPT), encoder layers (BERT, T5)
    n_decoder_layer: int | None = None  # T5's decoder layers; default n_layer
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention when smaller than n_head
    head_dim: int | None = None  # default n_embd // n_head (T5 v1.1 sets it apart)
    n_embd: int = 256
    mlp_hidden: int | None = None  # default 4 * n_embd, or 8/3 * n_embd (rounded up to 64) when gated
    activation: Literal["gelu_tanh", "gelu", "relu", "silu"] = "gelu_tanh"
    gated: bool = False  # gated MLP: act(x W) * (x V), e.g. SwiGLU with silu, GEGLU with gelu_tanh
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    norm_position: Literal["pre", "post"] = "pre"  # post: BERT's x = norm(x + f(x))
    positions: Literal["learned", "rope", "relative"] = "learned"  # relative: T5's bucketed bias
    rope_base: float = 10000.0
    relative_buckets: int = 32
    relative_max_distance: int = 128
    attn_scale: float | None = None  # default 1/sqrt(head_dim); T5 uses 1.0
    n_token_types: int = 0  # BERT's segment embeddings (2); 0 = none
    embed_norm: bool = False  # BERT normalises the summed embeddings
    bias: bool = True
    attn_bias: bool | None = None  # biases of the attention projections (q, k, v, output); default `bias`
    qkv_bias: bool | None = None  # biases of q, k, v only (Qwen2: true with bias false); default `attn_bias`
    dropout: float = 0.0
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        self.n_kv_head = self.n_kv_head or self.n_head
        self.n_decoder_layer = self.n_decoder_layer or self.n_layer
        self.attn_bias = self.bias if self.attn_bias is None else self.attn_bias
        self.qkv_bias = self.attn_bias if self.qkv_bias is None else self.qkv_bias
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} is unknown: use one of {list(allowed)}")
        if self.head_dim is None:
            if self.n_embd % self.n_head:
                raise ConfigError(f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}")
            self.head_dim = self.n_embd // self.n_head
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"model.n_head={self.n_head} is not a multiple of model.n_kv_head={self.n_kv_head}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ConfigError(f"model.positions=rope needs an even head dimension, not {self.head_dim}")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> ModelConfig:
        """Build from loose keyword arguments, naming any key that is not a model option."""
        known = {f.name for f in fields(cls)}
        for key in kwargs:
            if key not in known:
                raise unknown_key(f"model.{key}", known, "the model (a ModelConfig field)")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias), as in T5 and Llama."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def dropout(p: float) -> nn.Module:
    """Dropout, or nothing at all when p is 0 (a p=0 dropout still costs a kernel per call in training)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def build_norm(config: ModelConfig) -> nn.Module:
    """The norm layer a config asks for."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotates query/key channel pairs by position-dependent angles.

    Halves-split layout (channel i pairs with i + head_dim/2, as Hugging Face's Llama): x·cos + swap(x)·sin, with
    the tables full width and the sign folded in (`cos` = [cos, cos], `sin` = [-sin, sin] per position), computed
    once for every position: a call only slices them, swaps the halves and takes two products."""

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        # real (on the CPU) even while a model is built on the meta device: no checkpoint holds these
        device = "cpu" if torch.get_default_device().type == "meta" else None
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32, device=device), inv_freq)
        self.register_buffer("cos", torch.cat((angles.cos(), angles.cos()), dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat((-angles.sin(), angles.sin()), dim=-1), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate `x` of shape (batch, heads, time, head_dim); `positions` (batch or 1, time) are the absolute
        positions (default 0..time-1)."""
        if positions is None:
            t = x.size(-2)
            cos, sin = self.cos[:t], self.sin[:t]
        else:
            cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        if cos.dtype != x.dtype:  # reduced precision (the tables stay float32, as Hugging Face's are computed)
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((x2, x1), dim=-1) * sin


class RelativePositionBias(nn.Module):
    """T5's learned attention bias per head, indexed by log-bucketed relative distance."""

    def __init__(self, config: ModelConfig, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets, self.max_distance = config.relative_buckets, config.relative_max_distance
        self.embedding = nn.Embedding(config.relative_buckets, config.n_head)
        # every row of a batch shares this table; DP-SGD sets this to look it up once per row, so that each row's
        # gradient of it can be taken (Opacus's embedding hooks see batch-first ids)
        self.per_row_gradients = False

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """Map key-minus-query distances to buckets: exact for small ones, logarithmic up to max_distance."""
        num_buckets, buckets = self.num_buckets, torch.zeros_like(relative)
        if self.bidirectional:
            num_buckets //= 2
            buckets += (relative > 0).long() * num_buckets
            relative = relative.abs()
        else:
            relative = -relative.clamp(max=0)
        max_exact = num_buckets // 2
        log_ratio = torch.log(relative.float() / max_exact + 1e-20) / math.log(self.max_distance / max_exact)
        large = (max_exact + (log_ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
        return buckets + torch.where(relative < max_exact, relative, large)

    def forward(self, q_len: int, k_len: int, q_offset: int = 0, rows: int = 1) -> torch.Tensor:
        """The additive bias, shape (1, heads, q_len, k_len), or (rows, heads, q_len, k_len) with
        `per_row_gradients`; queries start at position `q_offset` (a cache)."""
        device = self.embedding.weight.device
        queries = torch.arange(q_offset, q_offset + q_len, device=device)
        buckets = self.bucket(torch.arange(k_len, device=device)[None, :] - queries[:, None])
        if self.per_row_gradients:
            return self.embedding(buckets.expand(rows, q_len, k_len)).permute(0, 3, 1, 2)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


def prepend_prefix(
    prefix: nn.Module | None, x: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Run a model's prefix seam (e.g. prompt tuning's virtual tokens) on token embeddings (batch, time, dim).

    Returns the longer embeddings, the padding mask extended to cover the prefix, and the prefix length.
    """
    if prefix is None:
        return x, attention_mask, 0
    out = prefix(x)
    n = out.size(1) - x.size(1)
    if attention_mask is not None:
        attention_mask = torch.cat((attention_mask.new_ones(x.size(0), n), attention_mask), dim=1)
    return out, attention_mask, n


def attention_bias(
    padding_mask: torch.Tensor | None,
    causal: bool,
    q_len: int,
    k_len: int,
    bias: torch.Tensor | None = None,
    document_ids: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """One SDPA mask from key padding (batch, k_len; True = real token), causality, documents and a bias.

    `document_ids` (batch, k_len) confine attention to the query's own document (packed rows: block-diagonal);
    keys with a negative id (a prefix) stay visible to every query. Returns None when plain causal (or no)
    attention suffices, so SDPA can take its fastest path; a boolean mask for documents alone (every query sees
    itself); otherwise an additive mask whose masked scores get the dtype's lowest value rather than -inf, so a
    row with no visible key (left padding) stays finite.
    """
    if padding_mask is None and bias is None and document_ids is None:
        return None
    device = next(t.device for t in (bias, padding_mask, document_ids) if t is not None)
    visible = torch.ones(q_len, k_len, dtype=torch.bool, device=device)
    if causal:
        visible = visible.tril(diagonal=k_len - q_len)
    visible = visible[None, None]
    if padding_mask is not None:
        visible = visible & padding_mask.bool()[:, None, None, :]
    if document_ids is not None:
        queries, keys = document_ids[:, None, -q_len:, None], document_ids[:, None, None, :]
        visible = visible & ((queries == keys) | (keys < 0))
        if padding_mask is None and bias is None:
            return visible
    dtype = bias.dtype if bias is not None else torch.float32
    mask = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)
    return mask if bias is None else mask + bias


def prefix_documents(document_ids: torch.Tensor | None, n_prefix: int) -> torch.Tensor | None:
    """Document ids extended over a prefix of `n_prefix` positions, which every document may read (id -1)."""
    if document_ids is None or not n_prefix:
        return document_ids
    return F.pad(document_ids, (n_prefix, 0), value=-1)


class Attention(nn.Module):
    """Multi-head (optionally grouped-query) self- or cross-attention through `scaled_dot_product_attention`."""

    def __init__(
        self, config: ModelConfig, causal: bool, rope: RotaryEmbedding | None = None, cross: bool = False
    ) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.causal, self.rope, self.cross = causal, rope, cross
        self.dropout, self.scale = config.dropout, config.attn_scale
        q_dim, kv_dim = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
        if cross:
            self.q = nn.Linear(config.n_embd, q_dim, bias=config.qkv_bias)
            self.kv = nn.Linear(config.n_embd, 2 * kv_dim, bias=config.qkv_bias)
        else:
            self.qkv = nn.Linear(config.n_embd, q_dim + 2 * kv_dim, bias=config.qkv_bias)
        self.proj = nn.Linear(q_dim, config.n_embd, bias=config.attn_bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, heads x head_dim) -> (batch, heads, time, head_dim). The head count is read off the
        tensor: under tensor parallelism a rank holds only its own heads (`models.parallel`)."""
        return x.view(x.size(0), x.size(1), -1, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`x` (batch, time, n_embd); `memory` is the encoder output for cross-attention; with a `cache`, the new
        keys/values join the cached ones (cross-attention's are computed from `memory` once); `positions` are
        the absolute positions of `x` for rotary embeddings."""
        if self.cross:
            q = self._heads(self.q(x))
            if cache is not None and cache.keys is not None:
                k, v = cache.keys, cache.values
            else:
                k, v = (self._heads(t) for t in self.kv(memory).chunk(2, dim=-1))
                if cache is not None:
                    cache.append(k, v)
        else:
            qkv = self.qkv(x)  # [q | k | v] of this rank's heads (all heads on one device)
            kv_dim = qkv.size(-1) * self.n_kv_head // (self.n_head + 2 * self.n_kv_head)
            q, k, v = (self._heads(t) for t in qkv.split([qkv.size(-1) - 2 * kv_dim, kv_dim, kv_dim], dim=-1))
            if self.rope is not None:
                q, k = self.rope(q, positions), self.rope(k, positions)
            if cache is not None:
                k, v = cache.append(k, v)
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            # a cached step's queries see every cached key: causality needs no mask for them
            is_causal=self.causal and attn_mask is None and q.size(-2) == k.size(-2),
            scale=self.scale,
            enable_gqa=self.n_kv_head != self.n_head,
        )
        return self.proj(y.transpose(1, 2).reshape(x.size(0), x.size(1), -1))


def mlp_width(config: ModelConfig) -> int:
    """The MLP's hidden width: `mlp_hidden`, else 4 x n_embd, or 8/3 x n_embd rounded up to 64 when gated."""
    return config.mlp_hidden or (64 * math.ceil(8 * config.n_embd / 3 / 64) if config.gated else 4 * config.n_embd)


class MLP(nn.Module):
    """Feed-forward block: act(x W1) W2, or gated act(x W) * (x V) W2 (SwiGLU, GEGLU)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gated, self.act = config.gated, ACTIVATIONS[config.activation]
        hidden = mlp_width(config)
        self.fc = nn.Linear(config.n_embd, (2 if self.gated else 1) * hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.proj(self.act(gate) * up)
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """Transformer block: self-attention, optional cross-attention, MLP; each a residual branch.

    Pre-norm (GPT, Llama, T5): x + f(norm(x)). Post-norm (BERT): norm(x + f(x)).
    """

    def __init__(
        self, config: ModelConfig, causal: bool, rope: RotaryEmbedding | None = None, cross: bool = False
    ) -> None:
        super().__init__()
        self.post_norm = config.norm_position == "post"
        self.norm_attn = build_norm(config)
        self.attn = Attention(config, causal=causal, rope=rope)
        self.norm_cross = build_norm(config) if cross else None
        self.cross_attn = Attention(config, causal=False, cross=True) if cross else None
        self.norm_mlp = build_norm(config)
        self.mlp = MLP(config)
        self.dropout = dropout(config.dropout)

    def _residual(self, x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor], norm: nn.Module):
        if self.post_norm:
            return norm(x + self.dropout(branch(x)))
        return x + self.dropout(branch(norm(x)))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: tuple[LayerCache, LayerCache | None] | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`cache`: this block's (self-attention, cross-attention) caches while generating."""
        own, cross = cache if cache is not None else (None, None)
        x = self._residual(x, lambda h: self.attn(h, attn_mask, cache=own, positions=positions), self.norm_attn)
        if self.cross_attn is not None:
            x = self._residual(x, lambda h: self.cross_attn(h, memory_mask, memory, cache=cross), self.norm_cross)
        return self._residual(x, self.mlp, self.norm_mlp)


def run_block(block: nn.Module, checkpointing: bool, *args: torch.Tensor | None, **kwargs: object) -> torch.Tensor:
    """Call a block; with activation checkpointing its activations are recomputed in backward, not stored."""
    if checkpointing and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)


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
