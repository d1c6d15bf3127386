"""`python -m lightning_llm.export <checkpoint or run dir> <out dir>`: one of our checkpoints as a Hugging Face
model folder (config.json, model.safetensors, tokenizer files) that transformers' Auto classes load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch import nn

from lightning_llm.checkpoints import build_model, load_pretrained, load_weights, resolve_checkpoint_path
from lightning_llm.data.tokenizer import Tokenizer
from lightning_llm.errors import ConfigError
from lightning_llm.finetune import TASK_HEAD
from lightning_llm.interop.hf import export_hf


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, Tokenizer | None]:
    """Rebuild the model (with its weights; a fine-tuning checkpoint merged into its base) and tokenizer."""
    pretrained = load_pretrained(resolve_checkpoint_path(path))
    extra = sorted(k for k in pretrained.state_dict if k.split(".")[0] in ("prefix", TASK_HEAD))
    if extra:
        raise ConfigError(f"{path}: weights {extra[0]!r} (a prompt prefix or task head) have no Hugging Face place")
    model = build_model(pretrained.family, pretrained.config, pretrained.state_dict)
    load_weights(model, pretrained.state_dict, str(path))
    return model.eval(), pretrained.tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_llm.export", description=__doc__)
    parser.add_argument("checkpoint", help="a .ckpt file or a run folder (uses checkpoints/last.ckpt)")
    parser.add_argument("out_dir", help="the Hugging Face model folder to write")
    parser.add_argument("--no-tokenizer", action="store_true", help="write the model only")
    parser.add_argument("--verify", action="store_true", help="load it with transformers and compare logits")
    args = parser.parse_args(argv)
    try:
        model, tokenizer = model_from_checkpoint(args.checkpoint)
        out = export_hf(model, args.out_dir, None if args.no_tokenizer else tokenizer)
        print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
        if args.verify:
            from lightning_llm.interop.verify import compare_with_transformers

            diff = compare_with_transformers(model, out)
            print(f"transformers loads it: max |logit difference| = {diff:.2e}")
            if diff > 1e-4:
                raise ConfigError(f"the export differs from the checkpoint by {diff:.2e} > 1e-4 in logits")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
