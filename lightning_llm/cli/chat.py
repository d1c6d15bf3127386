"""`lightning-llm chat model.pretrained=<run, .ckpt or HF folder> [--system TEXT] [key=value ...]`: an
interactive conversation with a decoder (keys: conf/generate.yaml, as for generate). The checkpoint's chat template
is used when it has one (Hugging Face `chat_template`, rendered as transformers does; `--template TEXT` gives
another), else a plain User:/Assistant: template (said once). `/reset` starts over, `/quit` (or end of input)
leaves."""

from __future__ import annotations

import argparse

from lightning_llm.cli.generate import add_settings_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The conversation's free text (verbatim) and generate's settings."""
    parser.add_argument("--system", metavar="TEXT", help="a system message that opens the conversation (verbatim)")
    parser.add_argument("--template", metavar="TEXT", help="a Jinja chat template (default: the checkpoint's own)")
    add_settings_arguments(parser)


def run(args: argparse.Namespace) -> None:
    import sys

    from lightning_llm.cli.generate import load_settings, open_generator, settings_of
    from lightning_llm.errors import ConfigError
    from lightning_llm.inference import chat_template

    cfg = load_settings(args)
    generator = open_generator(cfg)
    if generator.model.architecture != "decoder":
        raise ConfigError(
            f"chat needs a decoder; model.pretrained={cfg.model.pretrained!r} is an "
            f"{generator.model.architecture}: use python -m lightning_llm generate"
        )
    tokenizer = generator.tokenizer
    template = chat_template(getattr(tokenizer, "chat_template", None), args.template)
    if template.plain:
        print("(no chat template in the checkpoint: using a plain User:/Assistant: template)", file=sys.stderr)
    settings = settings_of(cfg, args)
    settings.until = list(dict.fromkeys([*settings.until, *template.stops]))
    special = {
        "bos_token": tokenizer.special.get("bos") if hasattr(tokenizer, "special") else "<s>",
        "eos_token": tokenizer.special.get("eos") if hasattr(tokenizer, "special") else "</s>",
    }
    opening = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(opening)
    turn = 0
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return
        if line.strip() == "/quit":
            return
        if line.strip() == "/reset":
            messages = list(opening)
            print("(conversation reset)")
            continue
        messages.append({"role": "user", "content": line})
        prompt = template.render(messages, special)
        sys.stdout.write("assistant> ")
        reply = generator.complete([prompt], settings, cfg.seed + turn, stream=lambda t: sys.stdout.write(t))[0]
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": reply.output.strip()})
        turn += 1
