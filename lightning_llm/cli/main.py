"""`lightning-llm <verb> ...` (also `python -m lightning_llm <verb> ...`): every command of the project under one
name, one error handler and one exit-code convention (cli.handler).

- `train` and `eval` take Hydra's command line (conf/train.yaml): `lightning-llm train ...` is `python train.py ...`.
- `generate` and `chat` take Hydra overrides of conf/generate.yaml; the other verbs take `--options`.
- The model is always `model.pretrained=<run, .ckpt or Hugging Face folder>`; free text (prompts) is always an
  option (`--prompt TEXT`), never a Hydra override (cli.arguments).

Each other verb is a module of this package with `add_arguments(parser)` (cheap: `--help` never imports torch)
and `run(args)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lightning_llm.cli.handler import exit_now, run_command

PROG = "lightning-llm"
#: verb -> (module, one-line description)
VERBS = {
    "train": ("lightning_llm.cli.train", "train or fine-tune: Hydra overrides of conf/train.yaml (= python train.py)"),
    "eval": ("lightning_llm.cli.train", "evaluate model.pretrained=<run> with eval=<suite> (train=false)"),
    "generate": ("lightning_llm.cli.generate", "text from a checkpoint: --prompt TEXT, keys of conf/generate.yaml"),
    "chat": ("lightning_llm.cli.chat", "talk to a decoder checkpoint, with its chat template"),
    "inspect": ("lightning_llm.cli.inspect", "look inside a model: attention, logit lens, attributions, probes (HTML)"),
    "export": ("lightning_llm.cli.export", "write a checkpoint of ours as a Hugging Face model folder"),
    "merge": ("lightning_llm.cli.merge", "fold a LoRA/adapter/prompt checkpoint into its base"),
    "report": ("lightning_llm.cli.report", "rebuild a run's or sweep's report.md/report.html, or compare runs"),
    "serve": ("lightning_llm.cli.serve", "an OpenAI-compatible server (batched, streaming) and a chat page"),
    "dashboard": ("lightning_llm.cli.dashboard", "a W&B workspace (dashboards as code) built from what the runs log"),
    "score": ("lightning_llm.cli.score", "score texts with a reward model (objective=reward): --text TEXT"),
}
#: verbs whose words are Hydra's command line of conf/train.yaml, with what each puts first
HYDRA_VERBS = {"train": [], "eval": ["train=false"]}


def build_parser() -> argparse.ArgumentParser:
    """`lightning-llm --help`: the verbs (their modules are not imported)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="lightning-llm: config-driven LLM training. `lightning-llm <verb> --help` shows a verb's keys "
        "and options; `python -m lightning_llm <verb>` is the same command.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (_, description) in VERBS.items():
        verbs.add_parser(verb, help=description, add_help=False)
    return parser


def verb_parser(verb: str) -> tuple[argparse.ArgumentParser, object]:
    """A verb's own parser and module."""
    module = importlib.import_module(VERBS[verb][0])
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {verb}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    """Run `lightning-llm ARGV`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in VERBS:
        build_parser().parse_args(argv)  # --help, or a missing or unknown verb: argparse says so and exits
    verb, words = argv[0], argv[1:]
    if verb in HYDRA_VERBS:
        from lightning_llm.cli.train import main as train

        first = next((i for i, w in enumerate(words) if "=" in w and not w.startswith("-")), len(words))
        words[first:first] = HYDRA_VERBS[verb]  # among the overrides: Hydra takes them in one run, after its flags
        return train(words, program=[sys.argv[0], "train"])
    parser, module = verb_parser(verb)
    args = parser.parse_intermixed_args(words)  # options and key=value words in any order
    return run_command(lambda: module.run(args))


def cli() -> None:
    """The installed `lightning-llm` command."""
    exit_now(main())


if __name__ == "__main__":
    cli()
