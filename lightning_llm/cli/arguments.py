"""The words every verb reads the same way (cheap: `--help` never imports torch).

- The model: `model.pretrained=<run, .ckpt or Hugging Face folder>`, the key `train` fine-tunes from. Verbs without
  a config (inspect, export, merge) take it as their first word, with or without the `model.pretrained=` prefix.
- Free text (prompts, a system message, a chat template, stop strings) is taken verbatim, never parsed as a Hydra
  override: `--prompt TEXT` (repeat it for more), `--prompts-file FILE` (one prompt per line); a `prompt=TEXT`
  word is the same as `--prompt TEXT`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRETRAINED = "model.pretrained="
#: `key=TEXT` words taken verbatim before Hydra sees the rest: key -> the option it is the same as
TEXT_WORDS = {"prompt": "prompt", "prompts_file": "prompts_file", "chat.system": "system", "chat.template": "template"}


def add_checkpoint_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("checkpoint", metavar="model.pretrained=CHECKPOINT", help=what)


def checkpoint_of(word: str) -> tuple[str, str]:
    """The checkpoint a verb's first word names (`model.pretrained=<path>` or the bare path) and the key its errors
    call it by (as the user wrote it)."""
    if word.startswith(PRETRAINED):
        return word.removeprefix(PRETRAINED), PRETRAINED[:-1]
    return word, "checkpoint"


def add_prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="a prompt, verbatim (repeat for more)"
    )
    parser.add_argument("--prompts-file", metavar="FILE", help="a UTF-8 text file: one prompt per line")


def take_text_words(args: argparse.Namespace) -> None:
    """Move `prompt=TEXT`-style words out of `args.overrides` into the verb's options of the same name, verbatim."""
    overrides = []
    for word in args.overrides:
        key, _, value = word.partition("=")
        dest = TEXT_WORDS.get(key) if "=" in word else None
        if dest is None or not hasattr(args, dest):  # not a text word of this verb
            overrides.append(word)
        elif dest == "prompt":
            args.prompt.append(value)
        else:
            setattr(args, dest, value)
    args.overrides = overrides


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts of `--prompt` and `--prompts-file`, in that order; a missing file or no prompt is one line."""
    from lightning_llm.errors import ConfigError

    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise ConfigError(f"--prompts-file {path} does not exist: give a text file, one prompt per line")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("no prompt: give --prompt TEXT (repeat for more) or --prompts-file FILE (one per line)")
    return prompts
