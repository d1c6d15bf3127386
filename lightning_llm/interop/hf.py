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

from lightning_llm.errors import ConfigError
from lightning_llm.interop.folder import TensorSource, read_config, resolve_folder
from lightning_llm.models import Family, LanguageModel, families, family_of
from lightning_llm.models.hf_mapping import Entry, HFArchitecture, HFConverter
from lightning_llm.tokenizers import Tokenizer
from lightning_llm.tokenizers.export import export_tokenizer

_SHOWN = 5  # names listed in an error line before "and N more"


@dataclass
class ImportInfo:
    """What `load_hf_model` did."""

    family: str  # ours (a registered family's name)
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


def architecture_of(hf: dict[str, Any], where: str) -> tuple[str, HFArchitecture, Family]:
    """The (class name, architecture, family) config.json describes; ConfigError naming it when no family reads it."""
    converters = {
        name: family for family in families().values() if family.converter for name in family.converter.architectures
    }
    names = hf.get("architectures") or []
    name = names[0] if names else None
    if name is None:
        defaults = {
            model_type: cls
            for family in families().values()
            if family.converter
            for model_type, cls in family.converter.default_architecture.items()
        }
        name = defaults.get(str(hf.get("model_type")))
    if name not in converters:
        what = f"architecture {name!r}" if name else f"model_type {hf.get('model_type')!r}"
        raise ConfigError(f"{where}: {what} is not supported: use one of {', '.join(converters)}")
    family = converters[name]
    return name, family.converter.architectures[name], family


def config_from_hf(hf: dict[str, Any], where: str) -> tuple[Any, list[str], str, HFArchitecture, Family]:
    """Our ModelConfig for a config.json (plus notes, the class name, its architecture and our family)."""
    name, arch, family = architecture_of(hf, where)
    config, notes = family.converter.config_from_hf(hf, arch, where)
    return config, notes, name, arch, family


def load_hf_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[LanguageModel, ImportInfo]:
    """Build our model from a Hugging Face model folder (or hub id) and load its converted weights.

    Reads every architecture a registered family's converter lists (GPT-2, Llama, Mistral, Qwen2, BERT with or
    without pooler / MLM head, T5 v1.0 and v1.1). The model comes back in eval mode, in `dtype`; its config
    carries the checkpoint's dropout. Unknown architectures, missing files or tensors and shape mismatches raise
    ConfigError.
    """
    folder = resolve_folder(path)
    hf_config = read_config(folder)
    config, notes, name, arch, family = config_from_hf(hf_config, str(folder))
    converter: HFConverter = family.converter
    source = TensorSource(folder)
    names, aliases = converter.canonical_names(source.keys(), arch)
    entries = converter.layout(config, arch)

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

    model = family.build(config)
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
        family=family.name,
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


def export_hf(model: LanguageModel, out_dir: str | os.PathLike, tokenizer: Tokenizer | None = None) -> Path:
    """Write `model` as a Hugging Face model folder: config.json, model.safetensors and, given one, the tokenizer.

    The family's converter picks the class (GPT: GPT2LMHeadModel or LlamaForCausalLM / Qwen2ForCausalLM; BERT:
    BertForMaskedLM plus its pooler; T5: T5ForConditionalGeneration). A config with no Hugging Face equivalent
    raises ConfigError naming the knob. Returns the folder.
    """
    converter = family_of(model).converter
    if converter is None:
        raise ConfigError(f"model family {model.family!r} has no Hugging Face mapping: it cannot be exported")
    if model.prefix is not None or model.task_head is not None:
        raise ConfigError("the model has a prompt-tuning prefix or a task head, which Hugging Face models lack")
    ids = {name: getattr(tokenizer or Tokenizer, f"{name}_id") for name in ("pad", "unk", "bos", "eos")}
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size={model.config.vocab_size}: "
            "export the tokenizer the model was trained with"
        )
    arch_name, hf_config, hf_view = converter.config_to_hf(model, ids)
    arch = converter.architectures[arch_name]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, torch.Tensor] = {}
    for entry in converter.layout(hf_view, arch):
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
    tensors.update(converter.extra_export_tensors(arch_name, hf_view, _dtype(state)))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_config["dtype"] = hf_config["torch_dtype"] = str(_dtype(state)).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        frame_with_bos = model.architecture == "decoder"  # as the decoder objectives frame a text
        export_tokenizer(tokenizer, out, model_max_length=hf_view.block_size, frame_with_bos=frame_with_bos)
    return out


def _dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    return next(t.dtype for t in state.values() if t.is_floating_point())
