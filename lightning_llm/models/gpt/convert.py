"""GPT's Hugging Face mapping: GPT-2 (learned positions) and the Llama family (Llama, Mistral, Qwen2: RoPE,
RMSNorm, gated MLP, grouped-query attention), config.json and tensor names both ways."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.models.blocks import ModelConfig
from lightning_llm.models.hf_mapping import (
    OUR_ACTIVATIONS,
    Entry,
    HFArchitecture,
    HFConverter,
    activation,
    check_pre_norm,
    default_scale,
    linear,
    mlp_hidden,
    no_equivalent,
    required,
)

LLAMA_KINDS = ("llama", "mistral", "qwen2")


class GPTConverter(HFConverter):
    architectures = {
        "GPT2LMHeadModel": HFArchitecture("gpt2", False),
        "GPT2Model": HFArchitecture("gpt2", True),
        "LlamaForCausalLM": HFArchitecture("llama", False),
        "LlamaModel": HFArchitecture("llama", True),
        "MistralForCausalLM": HFArchitecture("mistral", False),
        "MistralModel": HFArchitecture("mistral", True),
        "Qwen2ForCausalLM": HFArchitecture("qwen2", False),
        "Qwen2Model": HFArchitecture("qwen2", True),
    }
    default_architecture = {
        "gpt2": "GPT2LMHeadModel",
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
    }
    auto_class = "AutoModelForCausalLM"

    def config_from_hf(self, hf: dict[str, Any], arch: HFArchitecture, where: str) -> tuple[ModelConfig, list[str]]:
        notes: list[str] = []
        if arch.kind in LLAMA_KINDS:
            return _llama_config(hf, arch.kind, where, notes), notes
        if hf.get("scale_attn_by_inverse_layer_idx"):
            raise ConfigError(f"{where}: config.json scale_attn_by_inverse_layer_idx=true is not supported")
        if hf.get("add_cross_attention"):
            raise ConfigError(f"{where}: config.json add_cross_attention=true is not supported")
        config = ModelConfig(
            vocab_size=required(hf, "vocab_size", where),
            block_size=hf.get("n_positions") or required(hf, "n_ctx", where),
            n_layer=required(hf, "n_layer", where),
            n_head=required(hf, "n_head", where),
            n_embd=required(hf, "n_embd", where),
            mlp_hidden=hf.get("n_inner"),
            activation=activation(hf.get("activation_function", "gelu_new"), "activation_function", where),
            norm="layernorm",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            positions="learned",
            attn_scale=None if hf.get("scale_attn_weights", True) else 1.0,
            bias=True,
            dropout=hf.get("resid_pdrop", 0.1),
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
        return config, notes

    def config_to_hf(self, model: nn.Module, ids: dict[str, int | None]) -> tuple[str, dict[str, Any], ModelConfig]:
        c: ModelConfig = model.config
        tokens = {f"{name}_token_id": ids.get(name) for name in ("bos", "eos", "pad")}
        if c.positions == "learned":
            return _gpt2_export_config(c, mlp_hidden(model), tokens)
        if c.positions == "rope":
            return _llama_export_config(c, mlp_hidden(model), tokens)
        raise no_equivalent(
            "positions", c.positions, "decoder-only Hugging Face", "use learned (GPT-2) or rope (Llama)"
        )

    def layout(self, config: ModelConfig, arch: HFArchitecture) -> list[Entry]:
        return _llama_layout(config, arch) if arch.kind in LLAMA_KINDS else _gpt2_layout(config, arch)

    def name_prefix(self, arch: HFArchitecture) -> tuple[str, tuple[str, ...]]:
        return ("model." if arch.kind in LLAMA_KINDS else "transformer."), ("lm_head.",)

    def compare_logits(
        self, ours: nn.Module, hf: nn.Module, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compare the unpadded positions (padding on the right does not change them)."""
        a, b = ours(ids, mask), hf(input_ids=ids, attention_mask=mask).logits
        return a * mask[..., None], b * mask[..., None]


def _llama_config(hf: dict[str, Any], kind: str, where: str, notes: list[str]) -> ModelConfig:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if "full_attention" in rope:  # per-layer-type parameters (transformers 5)
        rope = rope["full_attention"]
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(
            f"{where}: config.json rope type {rope_type!r} (RoPE scaling) is not supported: only 'default'"
        )
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConfigError(f"{where}: config.json partial_rotary_factor is not supported (rotary on all channels only)")
    n_head = required(hf, "num_attention_heads", where)
    n_embd = required(hf, "hidden_size", where)
    block_size = required(hf, "max_position_embeddings", where)
    layer_types = set(hf.get("layer_types") or [])
    window = hf.get("sliding_window")
    if kind == "qwen2" and not hf.get("use_sliding_window", False):
        window = None
    if layer_types == {"full_attention"}:
        window = None
    if window and window < block_size:
        notes.append(
            f"sliding_window={window} < max_position_embeddings={block_size}: block_size limited to {window}, "
            "within which full attention equals sliding-window attention"
        )
        block_size = window
    qwen = kind == "qwen2"
    return ModelConfig(
        vocab_size=required(hf, "vocab_size", where),
        block_size=block_size,
        n_layer=required(hf, "num_hidden_layers", where),
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        head_dim=hf.get("head_dim") or n_embd // n_head,
        n_embd=n_embd,
        mlp_hidden=required(hf, "intermediate_size", where),
        activation=activation(hf.get("hidden_act", "silu"), "hidden_act", where),
        gated=True,
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        positions="rope",
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        bias=bool(hf.get("mlp_bias", False)),
        attn_bias=False if qwen else bool(hf.get("attention_bias", False)),
        qkv_bias=True if qwen else None,
        dropout=hf.get("attention_dropout", 0.0) or 0.0,
        tie_embeddings=hf.get("tie_word_embeddings", False),
    )


def _gpt2_export_config(c: ModelConfig, hidden: int, tokens: dict[str, Any]) -> tuple[str, dict[str, Any], ModelConfig]:
    target = "GPT-2 (learned positions)"
    check_pre_norm(c, target)
    if c.norm != "layernorm":
        raise no_equivalent(
            "norm", c.norm, target, "GPT-2 uses layernorm; Llama export needs positions=rope with rmsnorm"
        )
    if c.gated:
        raise no_equivalent("gated", c.gated, target, "GPT-2's MLP is not gated; Llama export needs positions=rope")
    if c.n_kv_head != c.n_head:
        raise no_equivalent("n_kv_head", c.n_kv_head, target, "GPT-2 has no grouped-query attention")
    if c.head_dim * c.n_head != c.n_embd:
        raise no_equivalent("head_dim", c.head_dim, target, "GPT-2 needs head_dim = n_embd / n_head")
    if not (default_scale(c) or c.attn_scale == 1.0):
        raise no_equivalent("attn_scale", c.attn_scale, target, "GPT-2 scales by 1/sqrt(head_dim) or not at all")
    hf = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": hidden,
        "activation_function": OUR_ACTIVATIONS[c.activation],
        "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "scale_attn_weights": default_scale(c),
        "tie_word_embeddings": c.tie_embeddings,
        **tokens,
    }
    return "GPT2LMHeadModel", hf, dataclasses.replace(c, bias=True, attn_bias=True, qkv_bias=True)


def _llama_export_config(
    c: ModelConfig, hidden: int, tokens: dict[str, Any]
) -> tuple[str, dict[str, Any], ModelConfig]:
    target = "Llama (rope positions)"
    check_pre_norm(c, target)
    if c.norm != "rmsnorm":
        raise no_equivalent("norm", c.norm, target, "Llama uses rmsnorm; GPT-2 export needs positions=learned")
    if not c.gated:
        raise no_equivalent(
            "gated", c.gated, target, "Llama's MLP is gated (SwiGLU); GPT-2 export needs positions=learned"
        )
    if not default_scale(c):
        raise no_equivalent("attn_scale", c.attn_scale, target, "Llama scales by 1/sqrt(head_dim)")
    qwen = c.qkv_bias and not c.attn_bias and not c.bias
    arch = "Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"
    hf: dict[str, Any] = {
        "architectures": [arch],
        "model_type": "qwen2" if qwen else "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,
        "hidden_act": OUR_ACTIVATIONS[c.activation],
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_base,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
        "attention_dropout": c.dropout,
        "tie_word_embeddings": c.tie_embeddings,
        **tokens,
    }
    if qwen:
        hf.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.n_layer)
        return arch, hf, c
    attention_bias = bool(c.attn_bias or c.qkv_bias)  # a missing output or q/k/v bias is exported as zeros
    hf.update(attention_bias=attention_bias, mlp_bias=c.bias)
    return arch, hf, dataclasses.replace(c, attn_bias=attention_bias, qkv_bias=attention_bias)


def _head(c: ModelConfig, arch: HFArchitecture) -> list[Entry]:
    """The untied LM head: optional in a bare-model checkpoint (fresh init then), required otherwise."""
    if c.tie_embeddings:
        return []
    return [Entry("lm_head.weight", ("lm_head.weight",), group="lm_head" if arch.base else None)]


def _gpt2_layout(c: ModelConfig, arch: HFArchitecture) -> list[Entry]:
    p = "transformer."
    out = [Entry("wte.weight", (f"{p}wte.weight",)), Entry("wpe.weight", (f"{p}wpe.weight",))]
    for i in range(c.n_layer):
        o, h = f"blocks.{i}.", f"{p}h.{i}."
        out += linear(f"{o}norm_attn", [f"{h}ln_1"], bias=c.bias)
        out += linear(f"{o}attn.qkv", [f"{h}attn.c_attn"], bias=c.qkv_bias, transpose=True)
        out += linear(f"{o}attn.proj", [f"{h}attn.c_proj"], bias=c.attn_bias, transpose=True)
        out += linear(f"{o}norm_mlp", [f"{h}ln_2"], bias=c.bias)
        out += linear(f"{o}mlp.fc", [f"{h}mlp.c_fc"], bias=c.bias, transpose=True)
        out += linear(f"{o}mlp.proj", [f"{h}mlp.c_proj"], bias=c.bias, transpose=True)
    return out + linear("norm_f", [f"{p}ln_f"], bias=c.bias) + _head(c, arch)


def _llama_layout(c: ModelConfig, arch: HFArchitecture) -> list[Entry]:
    p = "model."
    out = [Entry("wte.weight", (f"{p}embed_tokens.weight",))]
    for i in range(c.n_layer):
        o, h = f"blocks.{i}.", f"{p}layers.{i}."
        qkv = [f"{h}self_attn.{x}_proj" for x in "qkv"]
        out += linear(f"{o}norm_attn", [f"{h}input_layernorm"])
        out += linear(f"{o}attn.qkv", qkv, bias=c.qkv_bias)
        out += linear(f"{o}attn.proj", [f"{h}self_attn.o_proj"], bias=c.attn_bias)
        out += linear(f"{o}norm_mlp", [f"{h}post_attention_layernorm"])
        out += linear(f"{o}mlp.fc", [f"{h}mlp.gate_proj", f"{h}mlp.up_proj"], bias=c.bias)
        out += linear(f"{o}mlp.proj", [f"{h}mlp.down_proj"], bias=c.bias)
    return out + linear("norm_f", [f"{p}norm"]) + _head(c, arch)
