"""Import Hugging Face checkpoints into our models, and export ours as Hugging Face model folders.

Needs only safetensors, json and torch: `transformers` is never imported here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from lightning_llm.data.tokenizer import Tokenizer
from lightning_llm.errors import ConfigError
from lightning_llm.interop.checkpoint import TensorSource, read_config, resolve_folder
from lightning_llm.interop.families import (
    ARCHITECTURES,
    Entry,
    architecture_of,
    canonical_names,
    config_from_hf,
    config_to_hf,
    layout,
)
from lightning_llm.interop.tokenizer import export_tokenizer
from lightning_llm.models import MODEL_CLASSES

_SHOWN = 5  # names listed in an error line before "and N more"


@dataclass
class ImportInfo:
    """What `load_hf_model` did."""

    family: str  # ours: gpt, bert or t5
    architecture: str  # the source class, e.g. LlamaForCausalLM
    model_type: str  # config.json's model_type
    source: str  # the local folder read
    weight_files: list[str]
    missing: list[str] = field(default_factory=list)  # our tensors absent from the checkpoint: left at fresh init
    ignored: list[str] = field(default_factory=list)  # checkpoint tensors not used (buffers, other heads)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _combine(tensors: list[torch.Tensor], entry: Entry) -> torch.Tensor | None:
    """The HF tensors of one entry as our tensor (None when their shapes cannot be concatenated)."""
    if entry.transpose:
        tensors = [t.t() for t in tensors]
    if any(t.shape[1:] != tensors[0].shape[1:] for t in tensors):
        return None
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=0)


def load_hf_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, ImportInfo]:
    """Build our model from a Hugging Face model folder (or hub id) and load its converted weights.

    Supports GPT-2, Llama, Mistral, Qwen2, BERT (with or without pooler / MLM head) and T5 (v1.0 and v1.1).
    The model comes back in eval mode, in `dtype`; its config carries the checkpoint's dropout.
    Unknown architectures, missing files or tensors and shape mismatches raise ConfigError.
    """
    folder = resolve_folder(path)
    hf_config = read_config(folder)
    name, arch = architecture_of(hf_config, str(folder))
    config, notes = config_from_hf(hf_config, arch, str(folder))
    source = TensorSource(folder)
    names, aliases = canonical_names(source.keys(), arch)
    entries = layout(config, arch)

    missing_groups = set()
    for group in {e.group for e in entries if e.group}:
        wanted = [h for e in entries if e.group == group for h in e.hf]
        absent = [h for h in wanted if h not in names]
        if len(absent) == len(wanted):
            missing_groups.add(group)
        elif absent:
            raise ConfigError(f"{folder}: {name} checkpoint has part of its {group} but lacks {_listing(absent)}")
    absent = [h for e in entries if e.group not in missing_groups for h in e.hf if h not in names]
    if absent:
        raise ConfigError(f"{folder}: {name} checkpoint lacks {len(absent)} tensors: {_listing(absent)}")

    model = MODEL_CLASSES[arch.family](config)
    state = model.state_dict()
    used: set[str] = set()
    mismatched = []
    with torch.no_grad():
        for entry in entries:
            if entry.group in missing_groups:
                continue
            parts = [source.get(names[h]) for h in entry.hf]
            used.update(names[h] for h in entry.hf)
            tensor = _combine(parts, entry)
            if tensor is None or tensor.shape != state[entry.ours].shape:
                shapes = " + ".join(str(tuple(t.shape)) for t in parts)
                mismatched.append(
                    f"{entry.ours} needs {tuple(state[entry.ours].shape)} but {'+'.join(entry.hf)} is {shapes}"
                )
            else:
                state[entry.ours].copy_(tensor)
    if mismatched:
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise ConfigError(f"{folder}: shape mismatch: {mismatched[0]}{more}")

    loaded = {e.ours for e in entries if e.group not in missing_groups}
    loaded |= {"lm_head.weight"} if config.tie_embeddings else set()
    info = ImportInfo(
        family=arch.family,
        architecture=name,
        model_type=str(hf_config.get("model_type")),
        source=str(folder),
        weight_files=source.files,
        missing=sorted(set(state) - loaded),
        ignored=sorted(set(source.keys()) - used),
        notes=notes,
    )
    wanted = {h for e in entries if e.group not in missing_groups for h in e.hf}
    for canonical, actual in aliases.items():
        if canonical in wanted:
            info.notes.append(f"{canonical} is absent: used {actual} (tied)")
    for group in sorted(missing_groups):
        info.notes.append(f"no {group} in the checkpoint: it keeps its fresh initialisation")
    return model.to(dtype).eval(), info


def export_hf(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` as a Hugging Face model folder: config.json, model.safetensors and, given one, the tokenizer.

    GPT becomes GPT2LMHeadModel (learned positions, layernorm) or LlamaForCausalLM (RoPE, RMSNorm, gated MLP;
    Qwen2ForCausalLM with biases on q/k/v only); BERT becomes BertForMaskedLM (plus its pooler, which BertModel
    loads); T5 becomes T5ForConditionalGeneration. A config with no Hugging Face equivalent raises ConfigError
    naming the knob. Returns the folder.
    """
    if getattr(model, "prefix", None) is not None:
        raise ConfigError("the model has a prompt-tuning prefix (model.prefix), which Hugging Face models lack")
    ids = {name: getattr(tokenizer or Tokenizer, f"{name}_id") for name in ("pad", "unk", "bos", "eos")}
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size={model.config.vocab_size}: "
            "export the tokenizer the model was trained with"
        )
    arch_name, hf_config, hf_view = config_to_hf(model, ids)
    arch = ARCHITECTURES[arch_name]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    for entry in layout(hf_view, arch):
        tensor = state.get(entry.ours)
        if tensor is None:  # a bias the Hugging Face class has and ours does not: zeros are the same function
            tensor = torch.zeros(state[entry.ours.removesuffix(".bias") + ".weight"].shape[0], dtype=_dtype(state))
        if entry.transpose:
            tensor = tensor.t()
        sizes = [tensor.shape[0] // len(entry.hf)] * len(entry.hf)  # gate/up, k/v: equal halves
        if len(entry.hf) == 3:  # q, k, v (k and v smaller with grouped-query attention)
            q = hf_view.n_head * hf_view.head_dim
            sizes = [q, (tensor.shape[0] - q) // 2, (tensor.shape[0] - q) // 2]
        parts = tensor.split(sizes, dim=0) if len(entry.hf) > 1 else [tensor]
        for hf_name, part in zip(entry.hf, parts, strict=True):
            tensors[hf_name] = part.clone().contiguous()
    if arch_name == "BertForMaskedLM" and not hf_view.n_token_types:
        tensors["bert.embeddings.token_type_embeddings.weight"] = torch.zeros(1, hf_view.n_embd, dtype=_dtype(state))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config["dtype"] = hf_config["torch_dtype"] = str(_dtype(state)).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        export_tokenizer(tokenizer, out, model_max_length=hf_view.block_size)
    return out


def _dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    return next(t.dtype for t in state.values() if t.is_floating_point())
