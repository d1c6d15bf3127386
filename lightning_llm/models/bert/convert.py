"""BERT's Hugging Face mapping (BertModel, BertForMaskedLM, BertForPreTraining), config.json and tensor names
both ways."""

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
    default_scale,
    linear,
    mlp_hidden,
    no_equivalent,
    required,
)


class BERTConverter(HFConverter):
    architectures = {
        "BertForMaskedLM": HFArchitecture("bert", False),
        "BertForPreTraining": HFArchitecture("bert", False),
        "BertModel": HFArchitecture("bert", True),
    }
    default_architecture = {"bert": "BertModel"}
    auto_class = "AutoModelForMaskedLM"
    aliases = (("cls.predictions.bias", "cls.predictions.decoder.bias"),)

    def config_from_hf(self, hf: dict[str, Any], arch: HFArchitecture, where: str) -> tuple[ModelConfig, list[str]]:
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(
                f"{where}: config.json position_embedding_type={hf['position_embedding_type']!r} "
                "is not supported: only 'absolute'"
            )
        if hf.get("is_decoder"):
            raise ConfigError(f"{where}: config.json is_decoder=true (a causal BERT) is not supported")
        config = ModelConfig(
            vocab_size=required(hf, "vocab_size", where),
            block_size=hf.get("max_position_embeddings", 512),
            n_layer=required(hf, "num_hidden_layers", where),
            n_head=required(hf, "num_attention_heads", where),
            n_embd=required(hf, "hidden_size", where),
            mlp_hidden=required(hf, "intermediate_size", where),
            activation=activation(hf.get("hidden_act", "gelu"), "hidden_act", where),
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
        return config, []

    def config_to_hf(self, model: nn.Module, ids: dict[str, int | None]) -> tuple[str, dict[str, Any], ModelConfig]:
        c: ModelConfig = model.config
        target = "BERT"
        if c.norm_position != "post":
            raise no_equivalent("norm_position", c.norm_position, target, "BERT is post-norm")
        if c.norm != "layernorm":
            raise no_equivalent("norm", c.norm, target, "BERT uses layernorm")
        if not c.embed_norm:
            raise no_equivalent("embed_norm", c.embed_norm, target, "BERT normalises the embeddings")
        if c.gated:
            raise no_equivalent("gated", c.gated, target)
        if c.n_kv_head != c.n_head:
            raise no_equivalent("n_kv_head", c.n_kv_head, target, "BERT has no grouped-query attention")
        if c.head_dim * c.n_head != c.n_embd:
            raise no_equivalent("head_dim", c.head_dim, target, "BERT needs head_dim = n_embd / n_head")
        if not default_scale(c):
            raise no_equivalent("attn_scale", c.attn_scale, target)
        hf = {
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            "vocab_size": c.vocab_size,
            "hidden_size": c.n_embd,
            "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head,
            "intermediate_size": mlp_hidden(model),
            "hidden_act": OUR_ACTIVATIONS[c.activation],
            "hidden_dropout_prob": c.dropout,
            "attention_probs_dropout_prob": c.dropout,
            "max_position_embeddings": c.block_size,
            "type_vocab_size": max(c.n_token_types, 1),  # no segments: one all-zero segment embedding
            "layer_norm_eps": c.norm_eps,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": c.tie_embeddings,
            "pad_token_id": ids.get("pad"),
        }
        return "BertForMaskedLM", hf, dataclasses.replace(c, bias=True, attn_bias=True, qkv_bias=True)

    def layout(self, config: ModelConfig, arch: HFArchitecture) -> list[Entry]:
        c, p, e = config, "bert.", "bert.embeddings."
        out = [
            Entry("wte.weight", (f"{e}word_embeddings.weight",)),
            Entry("wpe.weight", (f"{e}position_embeddings.weight",)),
        ]
        if c.n_token_types:
            out.append(Entry("wtte.weight", (f"{e}token_type_embeddings.weight",)))
        out += linear("embed_norm", [f"{e}LayerNorm"], bias=c.bias)
        for i in range(c.n_layer):
            o, h = f"blocks.{i}.", f"{p}encoder.layer.{i}."
            qkv = [f"{h}attention.self.{x}" for x in ("query", "key", "value")]
            out += linear(f"{o}attn.qkv", qkv, bias=c.qkv_bias)
            out += linear(f"{o}attn.proj", [f"{h}attention.output.dense"], bias=c.attn_bias)
            out += linear(f"{o}norm_attn", [f"{h}attention.output.LayerNorm"], bias=c.bias)
            out += linear(f"{o}mlp.fc", [f"{h}intermediate.dense"], bias=c.bias)
            out += linear(f"{o}mlp.proj", [f"{h}output.dense"], bias=c.bias)
            out += linear(f"{o}norm_mlp", [f"{h}output.LayerNorm"], bias=c.bias)
        out += linear("pooler", [f"{p}pooler.dense"], bias=True, group="pooler")
        head = "cls.predictions."
        out += linear("mlm_dense", [f"{head}transform.dense"], bias=True, group="mlm_head")
        out += linear("mlm_norm", [f"{head}transform.LayerNorm"], bias=c.bias, group="mlm_head")
        out += [Entry("lm_head.bias", (f"{head}bias",), group="mlm_head")]
        if not c.tie_embeddings:
            out.append(Entry("lm_head.weight", (f"{head}decoder.weight",), group="mlm_head"))
        return out

    def name_prefix(self, arch: HFArchitecture) -> tuple[str, tuple[str, ...]]:
        return "bert.", ("cls.",)

    def rename(self, name: str) -> str:
        """The original TF-converted checkpoints call LayerNorm parameters gamma and beta."""
        return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")

    def extra_export_tensors(self, arch_name: str, config: ModelConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if config.n_token_types:
            return {}
        return {"bert.embeddings.token_type_embeddings.weight": torch.zeros(1, config.n_embd, dtype=dtype)}
