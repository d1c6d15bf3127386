"""How each Hugging Face architecture maps onto ours: config.json <-> ModelConfig, and tensor names both ways.

A layout is a list of `Entry`s, one per tensor of ours: the Hugging Face tensors it is made of (concatenated
along the output dimension: q, k, v -> our fused qkv; gate, up -> our gated fc) and whether they are transposed
(GPT-2's Conv1D stores (in, out)). The same layout serves import (concatenate) and export (split).
Names are canonical: with the prefix of the LM-head class (`transformer.`, `model.`, `bert.`); a checkpoint of
the bare model (GPT2Model, LlamaModel, BertModel) is renamed to them first (`canonical_names`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.models.blocks import ModelConfig


@dataclass(frozen=True)
class Entry:
    ours: str
    hf: tuple[str, ...]
    transpose: bool = False
    group: str | None = None  # an optional part (pooler, MLM head): absent as a whole -> left at fresh init


@dataclass(frozen=True)
class Architecture:
    kind: str  # gpt2, llama, mistral, qwen2, bert, t5
    family: str  # ours: gpt, bert, t5
    base: bool  # the bare model class, without an LM head


ARCHITECTURES = {
    "GPT2LMHeadModel": Architecture("gpt2", "gpt", False),
    "GPT2Model": Architecture("gpt2", "gpt", True),
    "LlamaForCausalLM": Architecture("llama", "gpt", False),
    "LlamaModel": Architecture("llama", "gpt", True),
    "MistralForCausalLM": Architecture("mistral", "gpt", False),
    "MistralModel": Architecture("mistral", "gpt", True),
    "Qwen2ForCausalLM": Architecture("qwen2", "gpt", False),
    "Qwen2Model": Architecture("qwen2", "gpt", True),
    "BertForMaskedLM": Architecture("bert", "bert", False),
    "BertForPreTraining": Architecture("bert", "bert", False),
    "BertModel": Architecture("bert", "bert", True),
    "T5ForConditionalGeneration": Architecture("t5", "t5", False),
}
DEFAULT_ARCHITECTURE = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "bert": "BertModel",
    "t5": "T5ForConditionalGeneration",
}
# The prefix of the base model's tensors in the LM-head class, and the tensors that live outside it.
PREFIXES = {
    "gpt2": ("transformer.", ("lm_head.",)),
    "llama": ("model.", ("lm_head.",)),
    "bert": ("bert.", ("cls.",)),
    "t5": ("", ()),
}
HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "gelu_python": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
OUR_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
# T5's feed_forward_proj for a gated MLP ("gated-gelu" means the tanh approximation there)
T5_GATED = {"gelu_tanh": "gated-gelu", "gelu": "gated-gelu_python", "relu": "gated-relu", "silu": "gated-silu"}


def architecture_of(hf: dict[str, Any], where: str) -> tuple[str, Architecture]:
    """The (name, Architecture) config.json describes; ConfigError naming it when we cannot import it."""
    names = hf.get("architectures") or []
    name = names[0] if names else DEFAULT_ARCHITECTURE.get(str(hf.get("model_type")))
    if name not in ARCHITECTURES:
        what = f"architecture {name!r}" if name else f"model_type {hf.get('model_type')!r}"
        raise ConfigError(f"{where}: {what} is not supported: use one of {', '.join(ARCHITECTURES)}")
    return name, ARCHITECTURES[name]


def prefix_kind(kind: str) -> str:
    return "llama" if kind in ("llama", "mistral", "qwen2") else kind


def _req(hf: dict[str, Any], key: str, where: str) -> Any:
    if hf.get(key) is None:
        raise ConfigError(f"{where}: config.json has no {key!r}")
    return hf[key]


def _activation(name: Any, key: str, where: str) -> str:
    if name not in HF_ACTIVATIONS:
        raise ConfigError(f"{where}: config.json {key}={name!r} is not supported: use one of {list(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


# ---------------------------------------------------------------------------------------------- config.json -> ours


def config_from_hf(hf: dict[str, Any], arch: Architecture, where: str) -> tuple[ModelConfig, list[str]]:
    """Our ModelConfig for a config.json, and notes on anything approximated."""
    notes: list[str] = []
    if arch.kind == "gpt2":
        if hf.get("scale_attn_by_inverse_layer_idx"):
            raise ConfigError(f"{where}: config.json scale_attn_by_inverse_layer_idx=true is not supported")
        if hf.get("add_cross_attention"):
            raise ConfigError(f"{where}: config.json add_cross_attention=true is not supported")
        config = ModelConfig(
            vocab_size=_req(hf, "vocab_size", where),
            block_size=hf.get("n_positions") or _req(hf, "n_ctx", where),
            n_layer=_req(hf, "n_layer", where),
            n_head=_req(hf, "n_head", where),
            n_embd=_req(hf, "n_embd", where),
            mlp_hidden=hf.get("n_inner"),
            activation=_activation(hf.get("activation_function", "gelu_new"), "activation_function", where),
            norm="layernorm",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            positions="learned",
            attn_scale=None if hf.get("scale_attn_weights", True) else 1.0,
            bias=True,
            dropout=hf.get("resid_pdrop", 0.1),
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    elif arch.kind in ("llama", "mistral", "qwen2"):
        config = _llama_config(hf, arch.kind, where, notes)
    elif arch.kind == "bert":
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(
                f"{where}: config.json position_embedding_type={hf['position_embedding_type']!r} "
                "is not supported: only 'absolute'"
            )
        if hf.get("is_decoder"):
            raise ConfigError(f"{where}: config.json is_decoder=true (a causal BERT) is not supported")
        config = ModelConfig(
            vocab_size=_req(hf, "vocab_size", where),
            block_size=hf.get("max_position_embeddings", 512),
            n_layer=_req(hf, "num_hidden_layers", where),
            n_head=_req(hf, "num_attention_heads", where),
            n_embd=_req(hf, "hidden_size", where),
            mlp_hidden=_req(hf, "intermediate_size", where),
            activation=_activation(hf.get("hidden_act", "gelu"), "hidden_act", where),
            norm="layernorm",
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            norm_position="post",
            positions="learned",
            n_token_types=hf.get("type_vocab_size", 2),
            embed_norm=True,
            bias=True,
            dropout=hf.get("hidden_dropout_prob", 0.1),
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    else:
        config = _t5_config(hf, where)
    return config, notes


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
    n_head = _req(hf, "num_attention_heads", where)
    n_embd = _req(hf, "hidden_size", where)
    block_size = _req(hf, "max_position_embeddings", where)
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
        vocab_size=_req(hf, "vocab_size", where),
        block_size=block_size,
        n_layer=_req(hf, "num_hidden_layers", where),
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        head_dim=hf.get("head_dim") or n_embd // n_head,
        n_embd=n_embd,
        mlp_hidden=_req(hf, "intermediate_size", where),
        activation=_activation(hf.get("hidden_act", "silu"), "hidden_act", where),
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


def _t5_config(hf: dict[str, Any], where: str) -> ModelConfig:
    proj = hf.get("feed_forward_proj", "relu")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ConfigError(f"{where}: config.json feed_forward_proj={proj!r} is not valid")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    # transformers 5 always ties the head and says whether to rescale; 4.x said both with tie_word_embeddings
    scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    return ModelConfig(
        vocab_size=_req(hf, "vocab_size", where),
        block_size=hf.get("n_positions") or 512,
        n_layer=_req(hf, "num_layers", where),
        n_decoder_layer=hf.get("num_decoder_layers") or hf["num_layers"],
        n_head=_req(hf, "num_heads", where),
        head_dim=_req(hf, "d_kv", where),
        n_embd=_req(hf, "d_model", where),
        mlp_hidden=_req(hf, "d_ff", where),
        activation=_activation(act, "feed_forward_proj", where),
        gated=len(parts) == 2,
        norm="rmsnorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        positions="relative",
        relative_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_max_distance=hf.get("relative_attention_max_distance", 128),
        attn_scale=1.0,
        bias=False,
        dropout=hf.get("dropout_rate", 0.1),
        tie_embeddings=bool(scale),
    )


# ---------------------------------------------------------------------------------------------- ours -> config.json


def _no(knob: str, value: Any, target: str, hint: str = "") -> ConfigError:
    return ConfigError(f"model.{knob}={value!r} has no {target} equivalent" + (f": {hint}" if hint else ""))


def _default_scale(config: ModelConfig) -> bool:
    return config.attn_scale is None or math.isclose(config.attn_scale, config.head_dim**-0.5)


def config_to_hf(model: nn.Module, ids: dict[str, int | None]) -> tuple[str, dict[str, Any], ModelConfig]:
    """(architecture, config.json, our config as the HF model sees it: all biases it has) for one of our models.

    ConfigError names the first knob that has no Hugging Face equivalent.
    """
    c: ModelConfig = model.config
    family = getattr(model, "family", type(model).__name__.lower())
    hidden = model.blocks[0].mlp.proj.in_features if family != "t5" else model.encoder[0].mlp.proj.in_features
    tokens = {f"{name}_token_id": ids.get(name) for name in ("bos", "eos", "pad")}
    if family == "gpt":
        if c.positions == "learned":
            return _gpt2_config(c, hidden, tokens)
        if c.positions == "rope":
            return _llama_export_config(c, hidden, tokens)
        raise _no("positions", c.positions, "decoder-only Hugging Face", "use learned (GPT-2) or rope (Llama)")
    if family == "bert":
        return _bert_export_config(c, hidden, tokens)
    if family == "t5":
        return _t5_export_config(c, hidden, tokens, ids)
    raise ConfigError(f"cannot export a {type(model).__name__}: only GPT, BERT and T5 models")


def _check_pre_norm(c: ModelConfig, target: str) -> None:
    if c.norm_position != "pre":
        raise _no("norm_position", c.norm_position, target, "it is pre-norm")


def _gpt2_config(c: ModelConfig, hidden: int, tokens: dict[str, Any]) -> tuple[str, dict[str, Any], ModelConfig]:
    target = "GPT-2 (learned positions)"
    _check_pre_norm(c, target)
    if c.norm != "layernorm":
        raise _no("norm", c.norm, target, "GPT-2 uses layernorm; Llama export needs positions=rope with rmsnorm")
    if c.gated:
        raise _no("gated", c.gated, target, "GPT-2's MLP is not gated; Llama export needs positions=rope")
    if c.n_kv_head != c.n_head:
        raise _no("n_kv_head", c.n_kv_head, target, "GPT-2 has no grouped-query attention")
    if c.head_dim * c.n_head != c.n_embd:
        raise _no("head_dim", c.head_dim, target, "GPT-2 needs head_dim = n_embd / n_head")
    if not (_default_scale(c) or c.attn_scale == 1.0):
        raise _no("attn_scale", c.attn_scale, target, "GPT-2 scales by 1/sqrt(head_dim) or not at all")
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
        "scale_attn_weights": _default_scale(c),
        "tie_word_embeddings": c.tie_embeddings,
        **tokens,
    }
    return "GPT2LMHeadModel", hf, dataclasses.replace(c, bias=True, attn_bias=True, qkv_bias=True)


def _llama_export_config(
    c: ModelConfig, hidden: int, tokens: dict[str, Any]
) -> tuple[str, dict[str, Any], ModelConfig]:
    target = "Llama (rope positions)"
    _check_pre_norm(c, target)
    if c.norm != "rmsnorm":
        raise _no("norm", c.norm, target, "Llama uses rmsnorm; GPT-2 export needs positions=learned")
    if not c.gated:
        raise _no("gated", c.gated, target, "Llama's MLP is gated (SwiGLU); GPT-2 export needs positions=learned")
    if not _default_scale(c):
        raise _no("attn_scale", c.attn_scale, target, "Llama scales by 1/sqrt(head_dim)")
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


def _bert_export_config(c: ModelConfig, hidden: int, tokens: dict[str, Any]) -> tuple[str, dict[str, Any], ModelConfig]:
    target = "BERT"
    if c.norm_position != "post":
        raise _no("norm_position", c.norm_position, target, "BERT is post-norm")
    if c.norm != "layernorm":
        raise _no("norm", c.norm, target, "BERT uses layernorm")
    if not c.embed_norm:
        raise _no("embed_norm", c.embed_norm, target, "BERT normalises the embeddings")
    if c.gated:
        raise _no("gated", c.gated, target)
    if c.n_kv_head != c.n_head:
        raise _no("n_kv_head", c.n_kv_head, target, "BERT has no grouped-query attention")
    if c.head_dim * c.n_head != c.n_embd:
        raise _no("head_dim", c.head_dim, target, "BERT needs head_dim = n_embd / n_head")
    if not _default_scale(c):
        raise _no("attn_scale", c.attn_scale, target)
    hf = {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "intermediate_size": hidden,
        "hidden_act": OUR_ACTIVATIONS[c.activation],
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.dropout,
        "max_position_embeddings": c.block_size,
        "type_vocab_size": max(c.n_token_types, 1),  # no segments: one all-zero segment embedding
        "layer_norm_eps": c.norm_eps,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": c.tie_embeddings,
        "pad_token_id": tokens["pad_token_id"],
    }
    return "BertForMaskedLM", hf, dataclasses.replace(c, bias=True, attn_bias=True, qkv_bias=True)


def _t5_export_config(
    c: ModelConfig, hidden: int, tokens: dict[str, Any], ids: dict[str, int | None]
) -> tuple[str, dict[str, Any], ModelConfig]:
    target = "T5"
    if c.norm != "rmsnorm":
        raise _no("norm", c.norm, target, "T5 uses rmsnorm")
    if c.norm_position != "pre":
        raise _no("norm_position", c.norm_position, target, "T5 is pre-norm")
    if c.attn_scale != 1.0:
        raise _no("attn_scale", c.attn_scale, target, "T5 does not scale attention (1.0)")
    if c.bias or c.attn_bias or c.qkv_bias:
        raise _no("bias", True, target, "T5 has no biases")
    if c.n_kv_head != c.n_head:
        raise _no("n_kv_head", c.n_kv_head, target, "T5 has no grouped-query attention")
    proj = T5_GATED[c.activation] if c.gated else OUR_ACTIVATIONS[c.activation]
    hf = {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": c.vocab_size,
        "d_model": c.n_embd,
        "d_kv": c.head_dim,
        "d_ff": hidden,
        "num_layers": c.n_layer,
        "num_decoder_layers": c.n_decoder_layer,
        "num_heads": c.n_head,
        "relative_attention_num_buckets": c.relative_buckets,
        "relative_attention_max_distance": c.relative_max_distance,
        "dropout_rate": c.dropout,
        "layer_norm_epsilon": c.norm_eps,
        "feed_forward_proj": proj,
        "is_encoder_decoder": True,
        "tie_word_embeddings": c.tie_embeddings,
        "scale_decoder_outputs": c.tie_embeddings,  # transformers 5 reads this; 4.x reads tie_word_embeddings
        "n_positions": c.block_size,
        "pad_token_id": tokens["pad_token_id"],
        "eos_token_id": tokens["eos_token_id"],
        "decoder_start_token_id": ids.get("pad"),  # our span objective starts the decoder with pad, as T5
    }
    return "T5ForConditionalGeneration", hf, c


# ---------------------------------------------------------------------------------------------- tensor layouts


def _linear(
    ours: str, hf: list[str], bias: bool = False, transpose: bool = False, group: str | None = None
) -> list[Entry]:
    """Entries for a Linear (or norm) of ours made of the HF modules `hf` (concatenated in order)."""
    out = [Entry(f"{ours}.weight", tuple(f"{h}.weight" for h in hf), transpose, group)]
    if bias:
        out.append(Entry(f"{ours}.bias", tuple(f"{h}.bias" for h in hf), group=group))
    return out


def layout(c: ModelConfig, arch: Architecture) -> list[Entry]:
    """Every tensor of ours for architecture `arch` with config `c`, with the HF tensors it comes from."""
    kind = prefix_kind(arch.kind)
    if kind == "gpt2":
        return _gpt2_layout(c, arch)
    if kind == "llama":
        return _llama_layout(c, arch)
    if kind == "bert":
        return _bert_layout(c)
    return _t5_layout(c)


def _head(c: ModelConfig, arch: Architecture) -> list[Entry]:
    """The untied LM head: optional in a bare-model checkpoint (fresh init then), required otherwise."""
    if c.tie_embeddings:
        return []
    return [Entry("lm_head.weight", ("lm_head.weight",), group="lm_head" if arch.base else None)]


def _gpt2_layout(c: ModelConfig, arch: Architecture) -> list[Entry]:
    p = "transformer."
    out = [Entry("wte.weight", (f"{p}wte.weight",)), Entry("wpe.weight", (f"{p}wpe.weight",))]
    for i in range(c.n_layer):
        o, h = f"blocks.{i}.", f"{p}h.{i}."
        out += _linear(f"{o}norm_attn", [f"{h}ln_1"], bias=c.bias)
        out += _linear(f"{o}attn.qkv", [f"{h}attn.c_attn"], bias=c.qkv_bias, transpose=True)
        out += _linear(f"{o}attn.proj", [f"{h}attn.c_proj"], bias=c.attn_bias, transpose=True)
        out += _linear(f"{o}norm_mlp", [f"{h}ln_2"], bias=c.bias)
        out += _linear(f"{o}mlp.fc", [f"{h}mlp.c_fc"], bias=c.bias, transpose=True)
        out += _linear(f"{o}mlp.proj", [f"{h}mlp.c_proj"], bias=c.bias, transpose=True)
    return out + _linear("norm_f", [f"{p}ln_f"], bias=c.bias) + _head(c, arch)


def _llama_layout(c: ModelConfig, arch: Architecture) -> list[Entry]:
    p = "model."
    out = [Entry("wte.weight", (f"{p}embed_tokens.weight",))]
    for i in range(c.n_layer):
        o, h = f"blocks.{i}.", f"{p}layers.{i}."
        qkv = [f"{h}self_attn.{x}_proj" for x in "qkv"]
        out += _linear(f"{o}norm_attn", [f"{h}input_layernorm"])
        out += _linear(f"{o}attn.qkv", qkv, bias=c.qkv_bias)
        out += _linear(f"{o}attn.proj", [f"{h}self_attn.o_proj"], bias=c.attn_bias)
        out += _linear(f"{o}norm_mlp", [f"{h}post_attention_layernorm"])
        out += _linear(f"{o}mlp.fc", [f"{h}mlp.gate_proj", f"{h}mlp.up_proj"], bias=c.bias)
        out += _linear(f"{o}mlp.proj", [f"{h}mlp.down_proj"], bias=c.bias)
    return out + _linear("norm_f", [f"{p}norm"]) + _head(c, arch)


def _bert_layout(c: ModelConfig) -> list[Entry]:
    p, e = "bert.", "bert.embeddings."
    out = [
        Entry("wte.weight", (f"{e}word_embeddings.weight",)),
        Entry("wpe.weight", (f"{e}position_embeddings.weight",)),
    ]
    if c.n_token_types:
        out.append(Entry("wtte.weight", (f"{e}token_type_embeddings.weight",)))
    out += _linear("embed_norm", [f"{e}LayerNorm"], bias=c.bias)
    for i in range(c.n_layer):
        o, h = f"blocks.{i}.", f"{p}encoder.layer.{i}."
        qkv = [f"{h}attention.self.{x}" for x in ("query", "key", "value")]
        out += _linear(f"{o}attn.qkv", qkv, bias=c.qkv_bias)
        out += _linear(f"{o}attn.proj", [f"{h}attention.output.dense"], bias=c.attn_bias)
        out += _linear(f"{o}norm_attn", [f"{h}attention.output.LayerNorm"], bias=c.bias)
        out += _linear(f"{o}mlp.fc", [f"{h}intermediate.dense"], bias=c.bias)
        out += _linear(f"{o}mlp.proj", [f"{h}output.dense"], bias=c.bias)
        out += _linear(f"{o}norm_mlp", [f"{h}output.LayerNorm"], bias=c.bias)
    out += _linear("pooler", [f"{p}pooler.dense"], bias=True, group="pooler")
    head = "cls.predictions."
    out += _linear("mlm_dense", [f"{head}transform.dense"], bias=True, group="mlm_head")
    out += _linear("mlm_norm", [f"{head}transform.LayerNorm"], bias=c.bias, group="mlm_head")
    out += [Entry("lm_head.bias", (f"{head}bias",), group="mlm_head")]
    if not c.tie_embeddings:
        out.append(Entry("lm_head.weight", (f"{head}decoder.weight",), group="mlm_head"))
    return out


def _t5_layout(c: ModelConfig) -> list[Entry]:
    relative = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"  # in the first layer only
    out = [
        Entry("wte.weight", ("shared.weight",)),
        Entry("encoder_bias.embedding.weight", (f"encoder.{relative}",)),
        Entry("decoder_bias.embedding.weight", (f"decoder.{relative}",)),
    ]
    for stack, n, mlp_layer in (("encoder", c.n_layer, 1), ("decoder", c.n_decoder_layer, 2)):
        for i in range(n):
            o, h = f"{stack}.{i}.", f"{stack}.block.{i}.layer."
            out += _linear(f"{o}norm_attn", [f"{h}0.layer_norm"])
            out += _linear(f"{o}attn.qkv", [f"{h}0.SelfAttention.{x}" for x in "qkv"])
            out += _linear(f"{o}attn.proj", [f"{h}0.SelfAttention.o"])
            if stack == "decoder":
                out += _linear(f"{o}norm_cross", [f"{h}1.layer_norm"])
                out += _linear(f"{o}cross_attn.q", [f"{h}1.EncDecAttention.q"])
                out += _linear(f"{o}cross_attn.kv", [f"{h}1.EncDecAttention.k", f"{h}1.EncDecAttention.v"])
                out += _linear(f"{o}cross_attn.proj", [f"{h}1.EncDecAttention.o"])
            ff = f"{h}{mlp_layer}.DenseReluDense."
            out += _linear(f"{o}norm_mlp", [f"{h}{mlp_layer}.layer_norm"])
            out += _linear(f"{o}mlp.fc", [f"{ff}wi_0", f"{ff}wi_1"] if c.gated else [f"{ff}wi"])
            out += _linear(f"{o}mlp.proj", [f"{ff}wo"])
        out += _linear(f"{stack}_norm", [f"{stack}.final_layer_norm"])
    if not c.tie_embeddings:
        out.append(Entry("lm_head.weight", ("lm_head.weight",)))
    return out


def canonical_names(keys: list[str], arch: Architecture) -> tuple[dict[str, str], dict[str, str]]:
    """Map canonical HF names (as in `layout`) to the checkpoint's own names.

    Also returns the aliases used for absent names (canonical name -> the checkpoint name standing in for it):
    T5's embedding saved as encoder.embed_tokens, a head transformers ties (T5's lm_head = shared), BERT's bias.
    """
    kind = prefix_kind(arch.kind)
    prefix, outside = PREFIXES[kind]
    has_prefix = not prefix or any(k.startswith(prefix) for k in keys)
    names: dict[str, str] = {}
    for key in keys:
        name = key if has_prefix or key.startswith(outside) else prefix + key
        if kind == "bert":  # the original TF-converted checkpoints call LayerNorm parameters gamma and beta
            name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        names[name] = key
    aliases: dict[str, str] = {}
    candidates = {
        "t5": [
            ("shared.weight", "encoder.embed_tokens.weight"),
            ("shared.weight", "decoder.embed_tokens.weight"),
            ("lm_head.weight", "shared.weight"),  # transformers 5 always ties T5's head and saves it once
        ],
        "bert": [("cls.predictions.bias", "cls.predictions.decoder.bias")],
    }
    for name, alias in candidates.get(kind, []):
        if name not in names and alias in names:
            names[name] = names[alias]
            aliases[name] = names[alias]
    return names, aliases
