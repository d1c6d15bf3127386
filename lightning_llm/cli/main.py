"""`python -m lightning_llm <verb> ...`: the project's tools under one command, one error handler and one
exit-code convention (see cli.handler). Training stays `python train.py`, Hydra-composed.

Each verb is a module of this package with `add_arguments(parser)` (cheap: `--help` never imports torch) and
`run(args)`.
"""

from __future__ import annotations

import argparse
import importlib

from lightning_llm.cli.handler import exit_now, run_command

#: verb -> (module, one-line description)
VERBS = {
    "export": ("lightning_llm.cli.export", "write a checkpoint of ours as a Hugging Face model folder"),
    "merge": ("lightning_llm.cli.merge", "fold a LoRA/adapter/prompt checkpoint into its base"),
    "generate": (
        "lightning_llm.cli.generate",
        "text from a checkpoint: continue, map or fill masks (conf/generate.yaml)",
    ),
    "chat": ("lightning_llm.cli.chat", "talk to a decoder checkpoint, with its chat template"),
    "inspect": ("lightning_llm.cli.inspect", "look inside a model: attention, logit lens, attributions, probes (HTML)"),
    "report": ("lightning_llm.cli.report", "rebuild a run's or sweep's report.md/report.html, or compare runs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_llm", description="lightning-llm tools (training: python train.py ...)"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (module, description) in VERBS.items():
        sub = verbs.add_parser(
            verb,
            help=description,
            description=importlib.import_module(module).__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(VERBS[args.verb][0])
    return run_command(lambda: module.run(args))


if __name__ == "__main__":
    exit_now(main())
