"""QLoRA: LoRA over base linear layers stored in 4-bit NF4 (Dettmers et al. 2023) or int8, via bitsandbytes.

bitsandbytes' `Linear4bit` runs forward and backward on CPU as well as CUDA, and in our measurement it was
about 5x faster on CPU than torchao's NF4 tensor, so it is the backend here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.extras import require
from lightning_llm.finetune.base import replace_module
from lightning_llm.finetune.lora import LoRA, plain_linear
from lightning_llm.finetune.quantize import dequantized_weight, quantize_4bit, quantize_int8
from lightning_llm.models import LanguageModel

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class QLoRA(LoRA):
    """LoRA whose frozen base layers are 4-bit NF4 (or FP4), or int8 with `bits: 8`; LoRA weights stay in full
    precision."""

    name: ClassVar[str] = "qlora"
    quantized_base: ClassVar[bool] = True
    compute_dtype: str = "float32"
    quant_type: str = "nf4"
    bits: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        require("bitsandbytes", "finetune=qlora")
        if self.bits not in (4, 8):
            raise ConfigError(f"finetune.bits={self.bits} is not supported: use 4 (NF4/FP4) or 8 (int8)")
        if self.compute_dtype not in _DTYPES:
            raise ConfigError(f"finetune.compute_dtype={self.compute_dtype!r} is unknown: use one of {list(_DTYPES)}")
        if self.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"finetune.quant_type={self.quant_type!r} is unknown: use nf4 or fp4")

    def wrap_base(self, linear: nn.Linear) -> nn.Module:
        if self.bits == 8:
            return quantize_int8(linear)
        return quantize_4bit(linear, _DTYPES[self.compute_dtype], self.quant_type)

    def apply(self, model: LanguageModel) -> LanguageModel:
        """LoRA on the target layers, then every other linear layer of the block stacks is quantized too
        (embeddings, the LM head and task heads stay as they are)."""
        super().apply(model)
        for stack in model.layer_stacks():
            for name, module in list(stack.named_modules()):
                if type(module) is nn.Linear and not module.weight.requires_grad:
                    replace_module(stack, name, self.wrap_base(module))
        for param in model.parameters():  # the rest in memory of its own, so that a memory-mapped checkpoint
            if type(param) is nn.Parameter:  # is unmapped once nothing reads it (its pages leave the RSS)
                param.data = param.data.clone()
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Dequantize: LoRA layers fold into float32 weights, the other quantized layers are unpacked."""
        import bitsandbytes as bnb

        super().merge(model)
        for name, module in list(model.named_modules()):
            if isinstance(module, bnb.nn.Linear4bit | bnb.nn.Linear8bitLt):
                replace_module(model, name, plain_linear(module, self.base_weight(module)))
        return model

    def base_weight(self, base: nn.Module) -> torch.Tensor:
        return dequantized_weight(base)
