"""The shared vocabulary of Hugging Face conversion; each family's convert.py uses it to map its checkpoints.

A layout is a list of `Entry`s, one per tensor of ours: the Hugging Face tensors it is made of (concatenated
along the output dimension: q, k, v -> our fused qkv; gate, up -> our gated fc) and whether they are transposed
(GPT-2's Conv1D stores (in, out)). The same layout serves import (concatenate) and export (split).
Names are canonical: with the prefix of the LM-head class (`transformer.`, `model.`, `bert.`); a checkpoint of
the bare model (GPT2Model, LlamaModel, BertModel) is renamed to them first (`HFConverter.canonical_names`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
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
class HFArchitecture:
    kind: str  # gpt2, llama, mistral, qwen2, bert, t5
    base: bool  # the bare model class, without an LM head


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


def required(hf: dict[str, Any], key: str, where: str) -> Any:
    """A config.json value that must be there."""
    if hf.get(key) is None:
        raise ConfigError(f"{where}: config.json has no {key!r}")
    return hf[key]


def activation(name: Any, key: str, where: str) -> str:
    """Our activation for a config.json activation name."""
    if name not in HF_ACTIVATIONS:
        raise ConfigError(f"{where}: config.json {key}={name!r} is not supported: use one of {list(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def no_equivalent(knob: str, value: Any, target: str, hint: str = "") -> ConfigError:
    """The error for a knob of ours that the Hugging Face class cannot express."""
    return ConfigError(f"model.{knob}={value!r} has no {target} equivalent" + (f": {hint}" if hint else ""))


def default_scale(config: ModelConfig) -> bool:
    """Whether attention scales by 1/sqrt(head_dim), the Hugging Face default."""
    return config.attn_scale is None or math.isclose(config.attn_scale, config.head_dim**-0.5)


def check_pre_norm(c: ModelConfig, target: str) -> None:
    if c.norm_position != "pre":
        raise no_equivalent("norm_position", c.norm_position, target, "it is pre-norm")


def linear(
    ours: str, hf: list[str], bias: bool = False, transpose: bool = False, group: str | None = None
) -> list[Entry]:
    """Entries for a Linear (or norm) of ours made of the HF modules `hf` (concatenated in order)."""
    out = [Entry(f"{ours}.weight", tuple(f"{h}.weight" for h in hf), transpose, group)]
    if bias:
        out.append(Entry(f"{ours}.bias", tuple(f"{h}.bias" for h in hf), group=group))
    return out


def mlp_hidden(model: nn.Module) -> int:
    """The MLP's hidden width as built (the config may leave it to a default)."""
    return model.layer_stacks()[0][0].mlp.proj.in_features


class HFConverter:
    """A family's Hugging Face mapping: which classes it reads, config.json both ways, tensor layouts."""

    architectures: ClassVar[dict[str, HFArchitecture]]  # HF class name -> architecture
    default_architecture: ClassVar[dict[str, str]]  # config.json model_type -> class, when `architectures` is absent
    auto_class: ClassVar[str]  # the transformers Auto class that loads an export (for verification)
    aliases: ClassVar[tuple[tuple[str, str], ...]] = ()  # (canonical name, a name that may stand in for it)

    def config_from_hf(self, hf: dict[str, Any], arch: HFArchitecture, where: str) -> tuple[ModelConfig, list[str]]:
        """Our ModelConfig for a config.json, and notes on anything approximated."""
        raise NotImplementedError

    def config_to_hf(self, model: nn.Module, ids: dict[str, int | None]) -> tuple[str, dict[str, Any], ModelConfig]:
        """(architecture, config.json, our config as the HF model sees it: all biases it has); ConfigError names
        the first knob that has no Hugging Face equivalent."""
        raise NotImplementedError

    def layout(self, config: ModelConfig, arch: HFArchitecture) -> list[Entry]:
        """Every tensor of ours for `arch` with config `config`, with the HF tensors it comes from."""
        raise NotImplementedError

    def name_prefix(self, arch: HFArchitecture) -> tuple[str, tuple[str, ...]]:
        """The prefix of the bare model's tensors in the LM-head class, and the tensors that live outside it."""
        return "", ()

    def rename(self, name: str) -> str:
        """A checkpoint's tensor name as the layout spells it (old spellings)."""
        return name

    def extra_export_tensors(self, arch_name: str, config: ModelConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Tensors the Hugging Face class needs that ours lacks (zeros that keep the function the same)."""
        return {}

    def compare_logits(
        self, ours: nn.Module, hf: nn.Module, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Our logits and the transformers model's on the same padded batch (what verification compares)."""
        return ours(ids, mask), hf(input_ids=ids, attention_mask=mask).logits

    def canonical_names(self, keys: list[str], arch: HFArchitecture) -> tuple[dict[str, str], dict[str, str]]:
        """Map canonical HF names (as in `layout`) to the checkpoint's own names.

        Also returns the aliases used for absent names (canonical name -> the checkpoint name standing in for it).
        """
        prefix, outside = self.name_prefix(arch)
        has_prefix = not prefix or any(k.startswith(prefix) for k in keys)
        names = {self.rename(key if has_prefix or key.startswith(outside) else prefix + key): key for key in keys}
        aliases: dict[str, str] = {}
        for name, alias in self.aliases:
            if name not in names and alias in names:
                names[name] = names[alias]
                aliases[name] = names[alias]
        return names, aliases
