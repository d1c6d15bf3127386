"""`lightning-llm inspect model.pretrained=<run, .ckpt or HF folder> --prompt TEXT [--prompt ...]`: look
inside a trained model. Writes attention heatmaps and head scores, the logit lens (decoders), token attributions
(integrated gradients) and, with --probe, linear probes per layer on the embedded docstring -> module task, as
PNGs, CSV tables and an index.html that opens offline."""

from __future__ import annotations

import argparse

from lightning_llm.cli.arguments import add_checkpoint_argument, add_prompt_arguments, checkpoint_of, read_prompts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "a .ckpt file, a run folder (its checkpoints/last.ckpt) or a HF folder")
    add_prompt_arguments(parser)
    parser.add_argument("--target", help="the token whose next-token logit attributions explain (one token)")
    parser.add_argument("--target-class", type=int, help="the class attributions explain (a classifier)")
    parser.add_argument("--out", help="the folder to write (default: logs/inspect/<checkpoint name>)")
    parser.add_argument("--probe", action="store_true", help="also fit linear probes per layer (docstring -> module)")
    parser.add_argument("--probe-rows", type=int, default=100, help="probe rows per module (4 modules; default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the induction sequences and the probe split")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lightning_llm.checkpoints import load_pretrained, model_from_pretrained
    from lightning_llm.errors import ConfigError
    from lightning_llm.extras import require
    from lightning_llm.inspect import encode_prompt, resolve_target, stdlib_module_task, write_inspection

    require("captum", "lightning-llm inspect")  # its attributions: said before the model loads
    checkpoint, key = checkpoint_of(args.checkpoint)
    prompts = read_prompts(args)
    pretrained = load_pretrained(checkpoint, key=key)
    if pretrained.tokenizer is None:
        raise ConfigError(f"{key}={checkpoint!r} carries no tokenizer: inspection needs one to read prompts")
    model = model_from_pretrained(pretrained)
    resolve_target(model, pretrained.tokenizer, args.target, args.target_class)  # mistakes fail before any work
    for prompt in prompts:
        encode_prompt(model, pretrained.tokenizer, prompt)
    source = Path(checkpoint)
    name = source.parent.parent.name if source.name == "last.ckpt" else source.stem or source.name
    out = Path(args.out) if args.out else Path("logs") / "inspect" / name
    probe = stdlib_module_task(per_class=args.probe_rows, seed=args.seed) if args.probe else None
    index = write_inspection(
        model,
        pretrained.tokenizer,
        prompts,
        out,
        target=args.target,
        target_class=args.target_class,
        probe_data=probe,
        seed=args.seed,
    )
    print(f"wrote {index} (open it in a browser; it needs no network)")
