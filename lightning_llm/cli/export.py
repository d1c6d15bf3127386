"""`lightning-llm export model.pretrained=<run or .ckpt> <out dir>`: one of our checkpoints as a Hugging Face
model folder (config.json, model.safetensors, tokenizer files) that transformers' Auto classes load."""

from __future__ import annotations

import argparse

from lightning_llm.cli.arguments import add_checkpoint_argument, checkpoint_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "a .ckpt file or a run folder (its checkpoints/last.ckpt)")
    parser.add_argument("out_dir", help="the Hugging Face model folder to write (must not exist or be empty)")
    parser.add_argument("--no-tokenizer", action="store_true", help="write the model only")
    parser.add_argument("--verify", action="store_true", help="load it with transformers and compare logits")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lightning_llm.checkpoints import load_pretrained, model_from_pretrained, resolve_checkpoint_path
    from lightning_llm.errors import ConfigError
    from lightning_llm.interop.hf import export_hf

    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out_dir {out} is not empty: choose a new folder (nothing is overwritten)")
    checkpoint, key = checkpoint_of(args.checkpoint)
    source = resolve_checkpoint_path(checkpoint, key=key)
    pretrained = load_pretrained(source, key=key)
    if pretrained.finetune is not None:
        raise ConfigError(
            f"{source}: finetune={pretrained.finetune.name} keeps modules of its own (no Hugging Face place): export "
            "its base, or fine-tune with lora, full or freeze"
        )
    extra = sorted(k for k in pretrained.state_dict if k.split(".")[0] == "task_head")
    if extra:
        raise ConfigError(f"{source}: weights {extra[0]!r} (a task head) have no Hugging Face place")
    model = model_from_pretrained(pretrained)
    written = export_hf(model, out, None if args.no_tokenizer else pretrained.tokenizer)
    print(f"wrote {', '.join(sorted(p.name for p in written.iterdir()))} to {written}")
    if args.verify:
        from lightning_llm.interop.verify import compare_with_transformers

        diff = compare_with_transformers(model, written)
        print(f"transformers loads it: max |logit difference| = {diff:.2e}")
        if diff > 1e-4:
            raise ConfigError(f"the export differs from the checkpoint by {diff:.2e} > 1e-4 in logits")
