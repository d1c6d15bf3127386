"""`lightning-llm generate model.pretrained=<run, .ckpt or HF folder> --prompt TEXT [key=value ...]`: text from a
trained model (keys: conf/generate.yaml, as Hydra overrides; the prompts verbatim, never parsed as overrides).
GPT continues the prompt, T5 maps it to an output, BERT fills its mask tokens; several prompts (`--prompt` again,
or `--prompts-file`, one per line) run in padded batches; a single prompt streams to the terminal;
`output=<file.jsonl>` records prompts, outputs, token counts and tokens/s."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightning_llm.cli.arguments import add_prompt_arguments, read_prompts, take_text_words

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from lightning_llm.inference import TextGenerator
    from lightning_llm.models.scoring import GenerationSettings


@dataclass
class ModelSettings:
    pretrained: str = ""


@dataclass
class GenerateConfig:
    """conf/generate.yaml (what the keys mean is written there)."""

    model: ModelSettings = field(default_factory=ModelSettings)
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = 50
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 8
    stream: bool = True
    output: str | None = None
    quantize: str = "none"
    add_bos: bool | None = None
    num_threads: int | None = None


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The overrides of conf/generate.yaml (shown below the options) and the stop strings (verbatim)."""
    from lightning_llm.conf import CONFIG_DIR

    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="cut the output before TEXT (repeat for more)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="model.pretrained=<checkpoint> and the keys below"
    )
    parser.epilog = "conf/generate.yaml:\n\n" + (CONFIG_DIR / "generate.yaml").read_text()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The prompts (verbatim) and the settings."""
    add_prompt_arguments(parser)
    add_settings_arguments(parser)


def load_settings(args: argparse.Namespace) -> DictConfig:
    """The composed, checked config of the command line's overrides (free text taken out first, verbatim)."""
    from lightning_llm.cli.overrides import compose_tool_config
    from lightning_llm.errors import ConfigError
    from lightning_llm.recipe.schema import validate_against

    take_text_words(args)
    cfg = compose_tool_config("generate", args.overrides)
    validate_against(cfg, GenerateConfig)
    for key, low in (("max_new_tokens", 1), ("batch_size", 1)):
        if cfg[key] < low:
            raise ConfigError(f"{key}={cfg[key]} must be at least {low}")
    return cfg


def settings_of(cfg: DictConfig, args: argparse.Namespace) -> GenerationSettings:
    """The sampling settings of the config, with the command line's `--stop` strings."""
    from lightning_llm.models.scoring import GenerationSettings

    return GenerationSettings(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        until=[*cfg.stop, *args.stop],
        repetition_penalty=cfg.repetition_penalty,
    )


def open_generator(cfg: DictConfig) -> TextGenerator:
    """The checkpoint (quantized when asked) and its tokenizer, ready to generate."""
    from lightning_llm.inference import TextGenerator, load_for_inference
    from lightning_llm.recipe.context import set_num_threads

    set_num_threads(cfg.num_threads)
    model, tokenizer = load_for_inference(cfg.model.pretrained, cfg.quantize, cfg.add_bos)
    return TextGenerator(model, tokenizer, cfg.batch_size)


def run(args: argparse.Namespace) -> None:
    import json
    import sys
    from pathlib import Path

    from lightning_llm.inference import completion_record

    cfg = load_settings(args)
    prompts = read_prompts(args)
    generator, settings = open_generator(cfg), settings_of(cfg, args)

    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if cfg.stream and len(prompts) == 1:
        sys.stdout.write(prompts[0])
    completions = generator.complete(prompts, settings, cfg.seed, stream if cfg.stream and len(prompts) == 1 else None)
    if cfg.stream and len(prompts) == 1:
        sys.stdout.write("\n")
    else:
        for completion in completions:
            print(f"{completion.prompt}{completion.output}\n---")
    total = sum(c.new_tokens for c in completions)
    seconds = max(c.seconds for c in completions) if completions else 0.0
    print(
        f"[{len(completions)} prompt(s), {total} new tokens, {completions[0].tokens_per_s:,.1f} tokens/s]",
        file=sys.stderr,
    )
    if cfg.output:
        out = Path(cfg.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for completion in completions:
                record = completion_record(completion, settings, source=cfg.model.pretrained, quantize=cfg.quantize)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"wrote {out} ({seconds:.2f} s)", file=sys.stderr)
