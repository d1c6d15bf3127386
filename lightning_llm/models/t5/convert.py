"""T5's Hugging Face mapping (T5ForConditionalGeneration, v1.0 and v1.1), config.json and tensor names both ways."""

from __future__ import annotations

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
    linear,
    mlp_hidden,
    no_equivalent,
    required,
)

# T5's feed_forward_proj for a gated MLP ("gated-gelu" means the tanh approximation there)
T5_GATED = {"gelu_tanh": "gated-gelu", "gelu": "gated-gelu_python", "relu": "gated-relu", "silu": "gated-silu"}


class T5Converter(HFConverter):
    architectures = {"T5ForConditionalGeneration": HFArchitecture("t5", False)}
    default_architecture = {"t5": "T5ForConditionalGeneration"}
    auto_class = "AutoModelForSeq2SeqLM"
    aliases = (
        ("shared.weight", "encoder.embed_tokens.weight"),
        ("shared.weight", "decoder.embed_tokens.weight"),
        ("lm_head.weight", "shared.weight"),  # transformers 5 always ties T5's head and saves it once
    )

    def config_from_hf(self, hf: dict[str, Any], arch: HFArchitecture, where: str) -> tuple[ModelConfig, list[str]]:
        proj = hf.get("feed_forward_proj", "relu")
        parts = proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ConfigError(f"{where}: config.json feed_forward_proj={proj!r} is not valid")
        act = "gelu_new" if proj == "gated-gelu" else parts[-1]
        # transformers 5 always ties the head and says whether to rescale; 4.x said both with tie_word_embeddings
        scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
        config = ModelConfig(
            vocab_size=required(hf, "vocab_size", where),
            block_size=hf.get("n_positions") or 512,
            n_layer=required(hf, "num_layers", where),
            n_decoder_layer=hf.get("num_decoder_layers") or hf["num_layers"],
            n_head=required(hf, "num_heads", where),
            head_dim=required(hf, "d_kv", where),
            n_embd=required(hf, "d_model", where),
            mlp_hidden=required(hf, "d_ff", where),
            activation=activation(act, "feed_forward_proj", where),
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
        return config, []

    def config_to_hf(self, model: nn.Module, ids: dict[str, int | None]) -> tuple[str, dict[str, Any], ModelConfig]:
        c: ModelConfig = model.config
        target = "T5"
        if c.norm != "rmsnorm":
            raise no_equivalent("norm", c.norm, target, "T5 uses rmsnorm")
        if c.norm_position != "pre":
            raise no_equivalent("norm_position", c.norm_position, target, "T5 is pre-norm")
        if c.attn_scale != 1.0:
            raise no_equivalent("attn_scale", c.attn_scale, target, "T5 does not scale attention (1.0)")
        if c.bias or c.attn_bias or c.qkv_bias:
            raise no_equivalent("bias", True, target, "T5 has no biases")
        if c.n_kv_head != c.n_head:
            raise no_equivalent("n_kv_head", c.n_kv_head, target, "T5 has no grouped-query attention")
        proj = T5_GATED[c.activation] if c.gated else OUR_ACTIVATIONS[c.activation]
        hf = {
            "architectures": ["T5ForConditionalGeneration"],
            "model_type": "t5",
            "vocab_size": c.vocab_size,
            "d_model": c.n_embd,
            "d_kv": c.head_dim,
            "d_ff": mlp_hidden(model),
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
            "pad_token_id": ids.get("pad"),
            "eos_token_id": ids.get("eos"),
            "decoder_start_token_id": ids.get("pad"),  # our span objective starts the decoder with pad, as T5
        }
        return "T5ForConditionalGeneration", hf, c

    def layout(self, config: ModelConfig, arch: HFArchitecture) -> list[Entry]:
        c = config
        relative = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"  # in the first layer only
        out = [
            Entry("wte.weight", ("shared.weight",)),
            Entry("encoder_bias.embedding.weight", (f"encoder.{relative}",)),
            Entry("decoder_bias.embedding.weight", (f"decoder.{relative}",)),
        ]
        for stack, n, mlp_layer in (("encoder", c.n_layer, 1), ("decoder", c.n_decoder_layer, 2)):
            for i in range(n):
                o, h = f"{stack}.{i}.", f"{stack}.block.{i}.layer."
                out += linear(f"{o}norm_attn", [f"{h}0.layer_norm"])
                out += linear(f"{o}attn.qkv", [f"{h}0.SelfAttention.{x}" for x in "qkv"])
                out += linear(f"{o}attn.proj", [f"{h}0.SelfAttention.o"])
                if stack == "decoder":
                    out += linear(f"{o}norm_cross", [f"{h}1.layer_norm"])
                    out += linear(f"{o}cross_attn.q", [f"{h}1.EncDecAttention.q"])
                    out += linear(f"{o}cross_attn.kv", [f"{h}1.EncDecAttention.k", f"{h}1.EncDecAttention.v"])
                    out += linear(f"{o}cross_attn.proj", [f"{h}1.EncDecAttention.o"])
                ff = f"{h}{mlp_layer}.DenseReluDense."
                out += linear(f"{o}norm_mlp", [f"{h}{mlp_layer}.layer_norm"])
                out += linear(f"{o}mlp.fc", [f"{ff}wi_0", f"{ff}wi_1"] if c.gated else [f"{ff}wi"])
                out += linear(f"{o}mlp.proj", [f"{ff}wo"])
            out += linear(f"{stack}_norm", [f"{stack}.final_layer_norm"])
        if not c.tie_embeddings:
            out.append(Entry("lm_head.weight", ("lm_head.weight",)))
        return out

    def compare_logits(
        self, ours: nn.Module, hf: nn.Module, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random decoder inputs against the padded encoder batch."""
        dec = torch.randint(0, ours.config.vocab_size, (ids.size(0), ids.size(1) // 2 + 1), generator=generator)
        return ours(ids, dec, mask), hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
