"""Merge a parameter-efficient checkpoint into its base and save a full checkpoint.

    python -m lightning_llm.finetune.merge <run dir or PEFT .ckpt> <out.ckpt>

The output is a checkpoint of ours that `model.pretrained=` (and the exporter) accept.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from lightning_llm.checkpoints import MODEL_PREFIX, load_pretrained
from lightning_llm.errors import ConfigError


def merge_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Write the merged model (base + trained weights folded in) to `out`; return its path."""
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists: choose a new output path (nothing is overwritten)")
    pretrained = load_pretrained(source)
    checkpoint = {
        "model_family": pretrained.family,
        "model_config": pretrained.config,
        "state_dict": {MODEL_PREFIX + k: v for k, v in pretrained.state_dict.items()},
        "tokenizer": pretrained.tokenizer.to_bytes() if pretrained.tokenizer else None,
        "merged_from": str(source),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(out)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m lightning_llm.finetune.merge <run dir or .ckpt> <out.ckpt>", file=sys.stderr)
        return 2
    try:
        print(f"merged: {merge_checkpoint(*argv)}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
