"""Reading pretrained weights: one function turns `model.pretrained` into (family, config, weights, tokenizer).

Accepted: a checkpoint written by one of our runs (`.ckpt`), a run folder (its checkpoints/last.ckpt), a
fine-tuning checkpoint that holds only trained weights plus a reference to its base (merged on load), or a
Hugging Face model folder / hub id (GPT-2, Llama-family, BERT, T5; converted by `lightning_llm.interop`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.fabric.plugins import TorchCheckpointIO
from torch import nn

from lightning_llm.data.tokenizer import Tokenizer
from lightning_llm.errors import ConfigError
from lightning_llm.finetune.base import TASK_HEAD, FinetuneMethod
from lightning_llm.interop.checkpoint import resolve_folder
from lightning_llm.interop.hf import load_hf_model
from lightning_llm.interop.tokenizer import HFTokenizer, load_tokenizer_bytes
from lightning_llm.models import MODEL_CLASSES, ModelConfig


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes that a crash cannot half-finish: write a temporary file, then rename it over the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


MODEL_PREFIX = "model."


@dataclass
class Pretrained:
    """What a pretrained checkpoint provides."""

    family: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer | None
    source: str


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A .ckpt file, or a run folder's checkpoints/last.ckpt."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "checkpoints" / "last.ckpt").is_file():
        return p / "checkpoints" / "last.ckpt"
    if not p.is_file():
        raise ConfigError(f"model.pretrained={str(path)!r} does not exist: give a .ckpt file or a run folder")
    return p


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one of our checkpoints onto the CPU, checking it describes its model."""
    p = resolve_checkpoint_path(path)
    try:
        checkpoint = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(f"cannot read {p}: {type(err).__name__}: {str(err).strip().splitlines()[0]}") from err
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint:
        raise ConfigError(f"model.pretrained={str(p)!r} is not a lightning-llm checkpoint (it has no model_config)")
    return checkpoint


def build_model(family: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A model of `family` with `config` (a task head too, if the weights have one), weights not yet loaded."""
    model = MODEL_CLASSES[family](ModelConfig(**config))
    head = state_dict.get(f"{TASK_HEAD}.weight")
    if head is not None:
        setattr(model, TASK_HEAD, nn.Linear(head.size(1), head.size(0)))
    return model


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load base weights strictly (a task head the checkpoint lacks may stay fresh); name what differs."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.startswith(TASK_HEAD)]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        key = (missing or unexpected or wrong)[0]
        what = "lacks" if missing else "has an unexpected" if unexpected else "has a differently shaped"
        detail = f" ({tuple(state_dict[key].shape)} vs {tuple(own[key].shape)})" if wrong and not missing else ""
        raise ConfigError(f"model.pretrained={source!r} {what} weight {key!r}{detail}: is it the same architecture?")
    model.load_state_dict(state_dict, strict=False)


def is_hf_source(path: str | Path) -> bool:
    """A Hugging Face model folder (config.json inside), or a name that is no local path (a hub id)."""
    p = Path(path).expanduser()
    return (p / "config.json").is_file() or (not p.exists() and p.suffix != ".ckpt" and not str(path).startswith("."))


def load_hf_pretrained(path: str | Path) -> Pretrained:
    """A Hugging Face checkpoint as our model's weights, with its tokenizer when the folder has one."""
    folder = resolve_folder(path)
    model, _ = load_hf_model(folder)
    try:
        tokenizer = HFTokenizer.from_pretrained(folder)
    except ConfigError:
        tokenizer = None
    return Pretrained(model.family, model.config.to_dict(), model.state_dict(), tokenizer, str(path))


def load_pretrained(path: str | Path) -> Pretrained:
    """Resolve `model.pretrained`; a fine-tuning checkpoint is merged into its base on the way."""
    if is_hf_source(path) and not (Path(path) / "checkpoints").is_dir():
        return load_hf_pretrained(path)
    checkpoint = read_checkpoint(path)
    family, config = checkpoint["model_family"], checkpoint["model_config"]
    state = {k[len(MODEL_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    tokenizer = load_tokenizer_bytes(checkpoint["tokenizer"]) if checkpoint.get("tokenizer") else None
    base_path = checkpoint.get("base_checkpoint")
    if base_path:  # only the trained weights are here: rebuild base + method, then merge
        base = load_pretrained(base_path)
        model = build_model(family, config, state)
        load_weights(model, base.state_dict, base.source)
        method: FinetuneMethod = instantiate(checkpoint["finetune"])
        method.apply(model)
        method.load_trainable(model, state)
        state = method.merge(model).state_dict()
        tokenizer = tokenizer or base.tokenizer
    return Pretrained(family, config, state, tokenizer, str(path))
