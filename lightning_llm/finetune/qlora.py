"""QLoRA: LoRA over base linear layers stored in 4-bit NF4 (Dettmers et al. 2023), via bitsandbytes.

bitsandbytes' `Linear4bit` runs forward and backward on CPU as well as CUDA, and in our measurement it was
about 5x faster on CPU than torchao's NF4 tensor, so it is the backend here.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import replace_module
from lightning_llm.finetune.lora import LoRA, plain_linear

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _in_blocks(name: str) -> bool:
    """Linear layers inside transformer blocks (embeddings, the LM head and task heads stay as they are)."""
    return name.split(".")[0] in ("blocks", "encoder", "decoder")


def quantize_nf4(linear: nn.Linear, compute_dtype: torch.dtype, quant_type: str = "nf4") -> nn.Module:
    """A frozen bitsandbytes Linear4bit holding `linear`'s weight in 4 bits (quantized when moved to a device)."""
    import bitsandbytes as bnb

    quantized = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=compute_dtype,
        quant_type=quant_type,
    )
    quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type=quant_type)
    if linear.bias is not None:
        quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    # bitsandbytes repacks CPU weights for inference on the first eval-mode call and keeps that layout,
    # which then breaks training (validation runs between training steps): keep the trainable layout.
    quantized.support_avx512bf16_for_cpu = False
    return quantized.to(linear.weight.device)


class QLoRA(LoRA):
    """LoRA whose frozen base layers are 4-bit NF4; LoRA weights stay in full precision."""

    name = "qlora"

    def __init__(self, compute_dtype: str = "float32", quant_type: str = "nf4", **lora: object) -> None:
        super().__init__(**lora)
        if compute_dtype not in _DTYPES:
            raise ConfigError(f"finetune.compute_dtype={compute_dtype!r} is unknown: use one of {list(_DTYPES)}")
        if quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"finetune.quant_type={quant_type!r} is unknown: use nf4 or fp4")
        self.compute_dtype, self.quant_type = _DTYPES[compute_dtype], quant_type

    def wrap_base(self, linear: nn.Linear) -> nn.Module:
        return quantize_nf4(linear, self.compute_dtype, self.quant_type)

    def apply(self, model: nn.Module) -> nn.Module:
        """LoRA on the target layers, then every other block linear layer is stored in 4 bits as well."""
        super().apply(model)
        for name, module in list(model.named_modules()):
            if type(module) is nn.Linear and not module.weight.requires_grad and _in_blocks(name):
                replace_module(model, name, quantize_nf4(module, self.compute_dtype, self.quant_type))
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """Dequantize: LoRA layers fold into float32 weights, the other 4-bit layers are unpacked."""
        import bitsandbytes as bnb

        super().merge(model)
        for name, module in list(model.named_modules()):
            if isinstance(module, bnb.nn.Linear4bit):
                replace_module(model, name, plain_linear(module, self.base_weight(module)))
        return model

    def base_weight(self, base: nn.Module) -> torch.Tensor:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
