"""Weight quantization with bitsandbytes (CPU and CUDA): int8 (LLM.int8 vector-wise) and 4-bit (NF4, FP4) frozen
linear layers, for QLoRA's base and for inference (`quantize=` of generation and evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.extras import require
from lightning_llm.finetune.base import replace_module
from lightning_llm.memory import drop_pages, file_mappings
from lightning_llm.models import LanguageModel

#: `quantize=` options: weights of the transformer blocks' linear layers in 8 or 4 bits (embeddings, heads stay)
SCHEMES = ("none", "int8", "nf4", "fp4")


def quantize_4bit(linear: nn.Linear, compute_dtype: torch.dtype, quant_type: str = "nf4") -> nn.Module:
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
    quantized = quantized.to(linear.weight.device)
    release_file_pages(linear.weight.data)
    return quantized


def quantize_int8(linear: nn.Linear) -> nn.Module:
    """A frozen bitsandbytes Linear8bitLt: int8 weights with one scale per output row (no outlier split)."""
    import bitsandbytes as bnb

    quantized = bnb.nn.Linear8bitLt(
        linear.in_features, linear.out_features, bias=linear.bias is not None, has_fp16_weights=False, threshold=0.0
    )
    quantized.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False)
    if linear.bias is not None:
        quantized.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    release_file_pages(linear.weight.data)
    return quantized.to(linear.weight.device)


def release_file_pages(tensor: torch.Tensor) -> None:
    """Take the pages of a tensor memory-mapped from a checkpoint file out of this process's resident memory
    (`lightning_llm.memory`; a later read maps them in again from the file). Called once a weight is quantized, so
    that the float32 checkpoint is never resident as a whole. Tensors in ordinary (anonymous) memory are left
    alone: dropping their pages would lose their values."""
    if tensor.device.type != "cpu" or not tensor.numel():
        return
    start = tensor.untyped_storage().data_ptr()
    end = start + tensor.untyped_storage().nbytes()
    if any(m.start <= start and end <= m.end for m in file_mappings()):
        drop_pages(start, end)


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The float32 weight a quantized (or plain) linear layer computes with."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    if isinstance(module, bnb.nn.Linear4bit):
        return bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    if isinstance(module, bnb.nn.Linear8bitLt):
        scale = module.state.SCB if module.state.SCB is not None else module.weight.SCB
        return module.weight.data.float() * scale.float()[:, None] / 127.0
    return module.weight.float()


def quantize_model(model: LanguageModel, scheme: str, compute_dtype: torch.dtype = torch.float32) -> LanguageModel:
    """Store the linear layers of every block stack in `scheme` (int8, nf4, fp4), in place, for inference."""
    if scheme not in SCHEMES:
        raise ConfigError(f"quantize={scheme!r} is unknown: use one of {', '.join(SCHEMES)}")
    if scheme == "none":
        return model
    require("bitsandbytes", f"quantize={scheme}")
    for stack in model.layer_stacks():
        for name, module in list(stack.named_modules()):
            if type(module) is nn.Linear:
                new = quantize_int8(module) if scheme == "int8" else quantize_4bit(module, compute_dtype, scheme)
                replace_module(stack, name, new)
    return model.requires_grad_(False)


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's parameters and buffers take in memory (packed 4-bit and int8 weights as stored)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
