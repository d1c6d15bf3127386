"""Reading pretrained weights: one function turns `model.pretrained` into (family, config, weights, tokenizer).

Accepted: a checkpoint written by one of our runs (`.ckpt`), a run folder (its checkpoints/last.ckpt), a
fine-tuning checkpoint that holds only trained weights plus a reference to its base (merged on load), or a
Hugging Face model folder / hub id (converted by the family that reads its architecture). Files are untrusted:
tensors load with weights_only, the fine-tuning method is rebuilt from an allow-list, and nothing is
instantiated from a path or name inside a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_llm.checkpoints.io import load_torch_file
from lightning_llm.errors import ConfigError
from lightning_llm.finetune import FinetuneMethod, method_from_description
from lightning_llm.interop.folder import read_config, resolve_folder
from lightning_llm.interop.hf import config_from_hf, load_hf_model
from lightning_llm.models import LanguageModel, get_family
from lightning_llm.tokenizers import HFTokenizer, Tokenizer, tokenizer_from_bytes

MODEL_PREFIX = "model."


@dataclass
class Pretrained:
    """What a pretrained checkpoint provides."""

    family: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer | None
    source: str
    finetune: FinetuneMethod | None = None  # a method that cannot fold into plain weights (adapter, prompt)


def resolve_checkpoint_path(path: str | Path, key: str = "model.pretrained") -> Path:
    """A .ckpt file, or a run folder's checkpoints/last.ckpt; `key` names the argument in errors."""
    p = Path(path).expanduser()
    if p.is_dir():
        last = p / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last
        raise ConfigError(
            f"{key}={str(path)!r} is a folder without checkpoints/last.ckpt: give a run folder that trained "
            "(every run that trains writes one) or a .ckpt file"
        )
    if not p.is_file():
        raise ConfigError(f"{key}={str(path)!r} does not exist: give a .ckpt file or a run folder")
    return p


def read_checkpoint(path: str | Path, key: str = "model.pretrained") -> dict[str, Any]:
    """Load one of our checkpoints onto the CPU (weights_only), checking it describes its model."""
    p = resolve_checkpoint_path(path, key)
    checkpoint = load_torch_file(p, f"{key}={str(p)!r}")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model_config"), dict):
        raise ConfigError(f"{key}={str(p)!r} is not a lightning-llm checkpoint (it has no model_config)")
    if not isinstance(checkpoint.get("model_family"), str) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{key}={str(p)!r} is not a lightning-llm checkpoint (no model_family or state_dict)")
    return checkpoint


def is_hf_source(path: str | Path) -> bool:
    """A Hugging Face model folder (config.json inside), or a name that is no local path (a hub id)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return (p / "config.json").is_file() and not (p / "checkpoints").is_dir()
    return not p.exists() and p.suffix != ".ckpt" and not str(path).startswith((".", "/", "~"))


def describe_pretrained(source: str | Path) -> tuple[str, dict[str, Any]]:
    """(family, model config) of `model.pretrained` without loading its weights (for the checks that run first)."""
    if is_hf_source(source):
        folder = resolve_folder(source)
        config, _, _, _, family = config_from_hf(read_config(folder), str(folder))
        return family.name, config.to_dict()
    checkpoint = read_checkpoint(source)  # memory-mapped: the tensors are not read
    return checkpoint["model_family"], dict(checkpoint["model_config"])


def build_model(family: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> LanguageModel:
    """A model of `family` with `config` (a task head too, if the weights have one), weights not yet loaded."""
    model = get_family(family).build(config)
    head = state_dict.get("task_head.weight")
    if head is not None:
        model.attach_task_head(head.size(0))
    return model


def load_weights(model: LanguageModel, state_dict: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
    """Load base weights strictly (a task head the checkpoint lacks may stay fresh); name what differs.

    `assign`: the model was built on the meta device and takes the checkpoint's tensors as its parameters (cast to
    its dtypes) instead of copying them into freshly initialised ones, so the weights exist once, not twice; tied
    parameters stay tied and a task head the checkpoint lacks is made fresh."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.startswith("task_head.")]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        key = (missing or unexpected or wrong)[0]
        what = "lacks" if missing else "has an unexpected" if unexpected else "has a differently shaped"
        detail = f" ({tuple(state_dict[key].shape)} vs {tuple(own[key].shape)})" if wrong and not missing else ""
        raise ConfigError(f"model.pretrained={source!r} {what} weight {key!r}{detail}: is it the same architecture?")
    if not assign:
        model.load_state_dict(state_dict, strict=False)
        return
    ties = tied_parameters(model)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=False, assign=True)
    for first, *aliases in ties:
        for alias in aliases:
            owner, _, name = alias.rpartition(".")
            setattr(model.get_submodule(owner), name, model.get_parameter(first))
    head = model.task_head
    if head is not None and head.weight.is_meta:
        model.attach_task_head(head.out_features)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{left[0]} (and {len(left) - 1} more) were not loaded from {source}")


def tied_parameters(model: nn.Module) -> list[list[str]]:
    """The names under which one parameter appears more than once (e.g. an LM head tied to the embedding)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def load_hf_pretrained(path: str | Path) -> Pretrained:
    """A Hugging Face checkpoint as our model's weights, with its tokenizer when the folder has one."""
    folder = resolve_folder(path)
    model, _ = load_hf_model(folder)
    try:
        tokenizer = HFTokenizer.from_pretrained(folder)
    except ConfigError:
        tokenizer = None
    return Pretrained(model.family, model.config.to_dict(), model.state_dict(), tokenizer, str(path))


def load_pretrained(path: str | Path, key: str = "model.pretrained") -> Pretrained:
    """Resolve `model.pretrained`; a fine-tuning checkpoint is merged into its base on the way."""
    if is_hf_source(path):
        return load_hf_pretrained(path)
    checkpoint = read_checkpoint(path, key)
    family, config = checkpoint["model_family"], checkpoint["model_config"]
    state = {k[len(MODEL_PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    tokenizer = tokenizer_from_bytes(checkpoint["tokenizer"]) if checkpoint.get("tokenizer") else None
    base_path = checkpoint.get("base_checkpoint")
    if base_path:  # only the trained weights are here: rebuild base + method, then merge
        if not isinstance(base_path, str):
            raise ConfigError(f"{key}={str(path)!r}: its base_checkpoint is not a path")
        method = method_from_description(checkpoint.get("finetune"), str(path))
        base = load_pretrained(base_path, f"the base checkpoint of {path}")
        model = build_model(family, config, state)
        load_weights(model, base.state_dict, base.source)
        method.apply(model)
        method.load_trainable(model, state)
        state = method.merge(model).state_dict()
        tokenizer = tokenizer or base.tokenizer
        kept = None if method.mergeable else method  # its modules stay: a model is rebuilt with them
        return Pretrained(family, config, state, tokenizer, str(path), kept)
    return Pretrained(family, config, state, tokenizer, str(path))


def model_from_pretrained(pretrained: Pretrained) -> LanguageModel:
    """The model a `Pretrained` describes (built on the meta device, then given its tensors), in eval mode (an
    adapter or prompt kept as such)."""
    with torch.device("meta"):
        model = build_model(pretrained.family, pretrained.config, pretrained.state_dict)
        if pretrained.finetune is not None:
            pretrained.finetune.apply(model)
    load_weights(model, pretrained.state_dict, pretrained.source, assign=True)
    return model.eval()
