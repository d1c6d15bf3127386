"""Export a decoder to GGUF, llama.cpp's file (also Ollama's and LM Studio's), with the `gguf` package's writer.

The model goes through its Hugging Face export first (interop.hf), so the tensors come in the layout llama.cpp's
own converter (convert_hf_to_gguf.py) reads: GPT-2-style models (learned positions, LayerNorm, GELU) become the
`gpt2` architecture, Llama-style ones (RoPE, RMSNorm, SwiGLU, grouped-query attention) `llama`, and those with
biases on q/k/v only `qwen2`. As that converter does, Llama's q and k rows are permuted to llama.cpp's rotary
layout, GPT-2's Conv1D weights transposed back, and one-dimensional tensors (norms, biases) kept in float32.
The tokenizer comes along (a SentencePiece model as llama.cpp's `llama` vocabulary, a GPT-2 byte-level BPE as
`gpt2` with its merges), with its special tokens, whether it adds <s>, and its chat template.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from lightning_llm.errors import ConfigError
from lightning_llm.extras import require
from lightning_llm.interop.hf import export_hf
from lightning_llm.models import LanguageModel
from lightning_llm.tokenizers import Tokenizer

#: Hugging Face model_type of our export -> llama.cpp architecture
ARCHITECTURES = {"gpt2": "gpt2", "llama": "llama", "qwen2": "qwen2"}
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
#: the file types llama.cpp records (gguf.LlamaFileType): f32, mostly f16, mostly bf16, mostly q8_0
FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}
GPT2_TRANSPOSED = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


@dataclass
class GGUFExport:
    """What `export_gguf` wrote."""

    path: Path
    architecture: str
    outtype: str
    tensors: int
    tokenizer: str  # llama.cpp's tokenizer model: llama (SentencePiece) or gpt2 (byte-level BPE)
    chat_template: bool
    bytes: int


def export_gguf(model: LanguageModel, tokenizer: Tokenizer | None, out: str | Path, outtype: str = "f16") -> GGUFExport:
    """Write `model` and its tokenizer to the GGUF file `out`; ConfigError for what llama.cpp cannot express."""
    require("gguf", "export --format gguf")
    import gguf

    if outtype not in OUTTYPES:
        raise ConfigError(f"--outtype {outtype} is not one of {', '.join(OUTTYPES)}")
    if model.architecture != "decoder":
        raise ConfigError(
            f"GGUF export covers the decoders llama.cpp runs (GPT-2 and Llama style); model family {model.family!r} "
            f"is an {model.architecture}: export a Hugging Face folder instead (lightning-llm export <out dir>)"
        )
    if tokenizer is None:
        raise ConfigError("the checkpoint has no tokenizer: a GGUF file needs one (llama.cpp reads text)")
    with tempfile.TemporaryDirectory(prefix="lightning-llm-gguf-") as tmp:
        folder = export_hf(model, tmp, tokenizer)
        hf = json.loads((folder / "config.json").read_text())
        arch = architecture_of(hf, model)
        writer = gguf.GGUFWriter(str(out), arch)
        writer.add_name(Path(out).stem)
        writer.add_file_type(FILE_TYPES[outtype])
        write_hyperparameters(writer, arch, hf)
        vocabulary, template = write_tokenizer(writer, folder, hf["vocab_size"], hf.get("model_type"))
        tensors = load_file(str(folder / "model.safetensors"))
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], block_count(hf))
        for name, tensor in tensors.items():
            gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ConfigError(f"tensor {name} has no place in llama.cpp's {arch} architecture")
            data, qtype = encode(llama_cpp_layout(arch, name, tensor.float(), hf), outtype, gguf)
            writer.add_tensor(gguf_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = Path(out).stat().st_size
    return GGUFExport(Path(out), arch, outtype, len(tensors), vocabulary, template, size)


def architecture_of(hf: dict[str, Any], model: LanguageModel) -> str:
    """llama.cpp's architecture for our export's config.json, refusing what it would compute differently."""
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        raise ConfigError(f"model type {kind!r} has no llama.cpp architecture here: use {', '.join(ARCHITECTURES)}")
    if kind == "gpt2" and hf.get("activation_function") != "gelu_new":
        raise ConfigError(
            f"llama.cpp's gpt2 computes GELU with the tanh approximation; model.activation="
            f"{model.config.activation} would differ: train with activation=gelu_tanh, or use positions=rope"
        )
    if kind == "gpt2" and not hf.get("scale_attn_weights", True):
        raise ConfigError("llama.cpp's gpt2 scales attention by 1/sqrt(head_dim): model.attn_scale=1 has no place")
    if kind == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
        raise ConfigError(
            "a Llama-style model with biases (model.bias, attn_bias) has no GGUF reader that keeps them: train "
            "without them, or with q/k/v biases only (model.qkv_bias=true: Qwen2)"
        )
    if kind == "llama" and hf.get("hidden_act") != "silu":
        raise ConfigError(f"llama.cpp's llama uses SwiGLU (silu); model.activation={model.config.activation} differs")
    return ARCHITECTURES[kind]


def block_count(hf: dict[str, Any]) -> int:
    return hf.get("num_hidden_layers") or hf["n_layer"]


def write_hyperparameters(writer: Any, arch: str, hf: dict[str, Any]) -> None:
    """The `<arch>.*` keys llama.cpp reads for this architecture (as convert_hf_to_gguf.py writes them)."""
    writer.add_block_count(block_count(hf))
    writer.add_vocab_size(hf["vocab_size"])
    if arch == "gpt2":
        writer.add_context_length(hf["n_positions"])
        writer.add_embedding_length(hf["n_embd"])
        writer.add_feed_forward_length(hf["n_inner"])
        writer.add_head_count(hf["n_head"])
        writer.add_layer_norm_eps(hf["layer_norm_epsilon"])
        return
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    writer.add_rope_freq_base(hf["rope_theta"])
    writer.add_rope_dimension_count(hf["head_dim"])
    if hf["head_dim"] * hf["num_attention_heads"] != hf["hidden_size"]:
        writer.add_key_length(hf["head_dim"])
        writer.add_value_length(hf["head_dim"])


def llama_cpp_layout(arch: str, name: str, tensor: torch.Tensor, hf: dict[str, Any]) -> torch.Tensor:
    """A Hugging Face tensor as llama.cpp stores it: Llama's q/k rows in its rotary order (pairs of the two halves
    interleaved per head), GPT-2's Conv1D weights as (out, in)."""
    if arch == "gpt2" and name.endswith(GPT2_TRANSPOSED):
        return tensor.t().contiguous()
    if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
        heads = hf["num_attention_heads"] if "q_proj" in name else hf["num_key_value_heads"]
        rows = tensor.reshape(heads, 2, tensor.size(0) // heads // 2, *tensor.shape[1:])
        return rows.swapaxes(1, 2).reshape(tensor.shape)
    return tensor


def encode(tensor: torch.Tensor, outtype: str, gguf: Any) -> tuple[np.ndarray, Any]:
    """The tensor's bytes in `outtype` (gguf's own quantizer); vectors stay float32, and q8_0 needs rows that are
    whole blocks of 32 (else float16), as llama.cpp's converter does."""
    kinds = gguf.GGMLQuantizationType
    qtype = {"f32": kinds.F32, "f16": kinds.F16, "bf16": kinds.BF16, "q8_0": kinds.Q8_0}[outtype]
    if tensor.dim() < 2:
        qtype = kinds.F32
    elif qtype == kinds.Q8_0 and tensor.size(-1) % 32:
        qtype = kinds.F16
    return gguf.quants.quantize(tensor.numpy(), qtype), qtype


def write_tokenizer(writer: Any, folder: Path, n_vocab: int, model_type: str | None) -> tuple[str, bool]:
    """The vocabulary (padded with unused tokens to the model's size), special tokens, BOS framing and chat
    template, read from the exported folder by gguf's vocabulary classes. Returns (tokenizer model, template?)."""
    import gguf

    if (folder / "tokenizer.model").is_file():
        vocab, pre = gguf.SentencePieceVocab(folder), None
    else:
        config = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        if config["model"]["type"] == "BPE" and config["model"].get("byte_fallback"):
            if importlib.util.find_spec("transformers") is None:  # gguf reads this tokenizer through it
                raise ConfigError(
                    "a Hugging Face Llama tokenizer needs transformers here: pip install 'lightning-llm[gguf]'"
                )
            vocab, pre = gguf.LlamaHfVocab(folder), None
        elif (config.get("pre_tokenizer") or {}).get("type") == "ByteLevel" and model_type != "qwen2":
            vocab, pre = gguf.BpeVocab(folder), "gpt-2"
        else:
            raise ConfigError(
                "this tokenizer has no GGUF form here: SentencePiece (ours, Llama's) and GPT-2's byte-level BPE are "
                "written (a character tokenizer or a BPE with its own split pattern is not)"
            )
    tokens, scores, types = [], [], []
    for text, score, kind in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(kind)
    for i in range(len(tokens), n_vocab):  # rows of the embedding no token uses
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(vocab.tokenizer_model)
    writer.add_tokenizer_pre(pre or "default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    return vocab.tokenizer_model, special.chat_template is not None


def compare_with_transformers(model: LanguageModel, tokenizer: Tokenizer, path: str | Path) -> dict[str, Any]:
    """Read the file back with transformers' GGUF loader (an independent reader: its own dequantizer, tensor
    processors and tokenizer builder): the largest logit difference from ours on a few texts, and whether its
    tokenizer encodes them to our ids."""
    import transformers

    path = Path(path)
    # transformers maps gpt2.context_length to n_ctx only, leaving GPT-2's 1024 learned positions: say the size
    positions = {"n_positions": model.config.block_size} if model.config.positions == "learned" else {}
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, **positions
    ).eval()
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = ["The for statement is used to iterate", "def f(x):\n    return x + 1", "A dictionary maps keys."]
    diff, same_ids = 0.0, True
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.sequence_start + tokenizer.encode(text)
            same_ids &= theirs(text)["input_ids"] == ids
            batch = torch.tensor([ids[: model.context_length]])
            diff = max(diff, float((model(batch) - hf(input_ids=batch).logits).abs().max()))
    return {"max_logit_diff": diff, "same_token_ids": same_ids, "hf_model": hf, "hf_tokenizer": theirs}
