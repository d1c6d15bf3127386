"""`lightning-llm merge model.pretrained=<run dir or PEFT .ckpt> <out.ckpt>`: fold a parameter-efficient checkpoint
(LoRA, QLoRA, adapters, prompt tuning) into its base and save a full checkpoint `model.pretrained=` accepts."""

from __future__ import annotations

import argparse

from lightning_llm.cli.arguments import add_checkpoint_argument, checkpoint_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "a fine-tuning run folder or its .ckpt (holding only trained weights)")
    parser.add_argument("out", help="the merged checkpoint to write (a new path: nothing is overwritten)")


def run(args: argparse.Namespace) -> None:
    from lightning_llm.checkpoints import merge_checkpoint, resolve_checkpoint_path

    checkpoint, key = checkpoint_of(args.checkpoint)
    print(f"merged: {merge_checkpoint(resolve_checkpoint_path(checkpoint, key=key), args.out)}")
