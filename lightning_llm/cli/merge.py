"""`python -m lightning_llm merge <run dir or PEFT .ckpt> <out.ckpt>`: fold a parameter-efficient checkpoint
(LoRA, QLoRA, adapters, prompt tuning) into its base and save a full checkpoint `model.pretrained=` accepts."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a fine-tuning run folder or its .ckpt (holding only trained weights)")
    parser.add_argument("out", help="the merged checkpoint to write (a new path: nothing is overwritten)")


def run(args: argparse.Namespace) -> None:
    from lightning_llm.checkpoints import merge_checkpoint

    print(f"merged: {merge_checkpoint(args.checkpoint, args.out)}")
