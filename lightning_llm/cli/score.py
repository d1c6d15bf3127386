"""`lightning-llm score model.pretrained=<reward run, .ckpt> --text TEXT [--text ...] [--texts-file FILE]
[--prompt TEXT]`: a reward model's score of each text (trained with objective=reward), one `score<TAB>text` line
each; with `--prompt`, every text is scored as the response to it, as the model was trained on (prompt, response)
pairs. Texts are taken verbatim."""

from __future__ import annotations

import argparse

from lightning_llm.cli.arguments import add_checkpoint_argument, checkpoint_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser, "a reward model: a run folder or .ckpt trained with objective=reward")
    parser.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text to score (repeat)")
    parser.add_argument("--texts-file", metavar="FILE", help="a UTF-8 text file: one text per line")
    parser.add_argument("--prompt", default="", metavar="TEXT", help="the prompt every text answers (verbatim)")
    parser.add_argument("--batch-size", type=int, default=8, help="texts scored at once (default 8)")


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lightning_llm.checkpoints import load_pretrained, model_from_pretrained
    from lightning_llm.errors import ConfigError
    from lightning_llm.log import quiet_known_noise
    from lightning_llm.objectives.reward import score_texts

    quiet_known_noise()
    checkpoint, key = checkpoint_of(args.checkpoint)
    texts = list(args.text)
    if args.texts_file:
        path = Path(args.texts_file)
        if not path.is_file():
            raise ConfigError(f"--texts-file {path} does not exist: give a text file, one text per line")
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ConfigError("no text: give --text TEXT (repeat for more) or --texts-file FILE (one per line)")
    pretrained = load_pretrained(checkpoint, key=key)
    if pretrained.tokenizer is None:
        raise ConfigError(f"{key}={checkpoint!r} carries no tokenizer: scoring needs one to read the texts")
    model = model_from_pretrained(pretrained)
    if model.task_head is None or model.task_head.out_features != 1:
        raise ConfigError(
            f"{key}={checkpoint!r} is not a reward model (no one-output head): train one with objective=reward"
        )
    for score, text in zip(
        score_texts(model, pretrained.tokenizer, texts, args.prompt, args.batch_size), texts, strict=True
    ):
        print(f"{score:.4f}\t{text}")
