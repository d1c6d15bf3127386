"""Merge a parameter-efficient checkpoint into its base and save a full checkpoint of ours."""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_llm.checkpoints.pretrained import MODEL_PREFIX, load_pretrained
from lightning_llm.errors import ConfigError
from lightning_llm.files import atomic_path


def merge_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Write the merged model (base + trained weights folded in) to `out`; return its path.

    The output is a checkpoint that `model.pretrained=` (and the exporter) accept.
    """
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists: choose a new output path (nothing is overwritten)")
    pretrained = load_pretrained(source, key="the checkpoint argument")
    checkpoint = {
        "model_family": pretrained.family,
        "model_config": pretrained.config,
        "state_dict": {MODEL_PREFIX + k: v for k, v in pretrained.state_dict.items()},
        "tokenizer": pretrained.tokenizer.to_bytes() if pretrained.tokenizer else None,
        "merged_from": str(source),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return out
