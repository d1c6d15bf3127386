"""`lightning-llm serve model.pretrained=<run, .ckpt or HF folder> [port=8000 host=127.0.0.1 quantize=...]`: an
OpenAI-compatible server for a decoder (keys: conf/serve.yaml, as Hydra overrides): /v1/models, /v1/completions and
/v1/chat/completions (`stream: true` as server-sent events; max_tokens, temperature, top_p, stop, seed; usage),
the checkpoint's chat template, concurrent requests decoded together over one KV cache, and a chat page at `/`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from lightning_llm.cli.generate import ModelSettings


@dataclass
class ServeConfig:
    """conf/serve.yaml (what the keys mean is written there)."""

    model: ModelSettings = field(default_factory=ModelSettings)
    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    quantize: str = "none"
    add_bos: bool | None = None
    num_threads: int | None = None
    max_batch_size: int = 8
    max_wait_ms: float = 10
    log_level: str = "info"


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lightning_llm.conf import CONFIG_DIR

    parser.add_argument("overrides", nargs="*", metavar="key=value", help="model.pretrained=<checkpoint> and the keys")
    parser.epilog = "conf/serve.yaml:\n\n" + (CONFIG_DIR / "serve.yaml").read_text()


def served_name(source: str) -> str:
    """The model id a checkpoint is served under: its run folder's name for a run's .ckpt, else its own name."""
    path = Path(source.rstrip("/"))
    if path.suffix == ".ckpt":
        return path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return path.name


def load_settings(overrides: list[str]):
    """The composed, checked config (numbers in range, a known log level)."""
    from lightning_llm.cli.overrides import compose_tool_config
    from lightning_llm.errors import ConfigError
    from lightning_llm.recipe.schema import validate_against

    cfg = compose_tool_config("serve", overrides)
    validate_against(cfg, ServeConfig)
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port={cfg.port} must be between 0 and 65535 (0: a free port)")
    if cfg.max_batch_size < 1:
        raise ConfigError(f"max_batch_size={cfg.max_batch_size} must be at least 1")
    if cfg.max_wait_ms < 0:
        raise ConfigError(f"max_wait_ms={cfg.max_wait_ms} must be >= 0")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level={cfg.log_level} is not one of {', '.join(LOG_LEVELS)}")
    return cfg


def run(args: argparse.Namespace) -> None:
    import sys

    from lightning_llm.errors import ConfigError
    from lightning_llm.extras import require

    for module in ("fastapi", "uvicorn"):
        require(module, "lightning-llm serve")
    cfg = load_settings(args.overrides)

    import uvicorn

    from lightning_llm.inference import TextGenerator, chat_template, load_for_inference
    from lightning_llm.inference.server import bind, create_app, url_of
    from lightning_llm.recipe.context import set_num_threads

    sock = bind(cfg.host, cfg.port)  # before the model loads: a port in use is said at once
    set_num_threads(cfg.num_threads)
    generator = TextGenerator(*load_for_inference(cfg.model.pretrained, cfg.quantize, cfg.add_bos))
    if generator.model.architecture != "decoder":
        raise ConfigError(
            f"serve needs a decoder; model.pretrained={cfg.model.pretrained!r} is an "
            f"{generator.model.architecture}: use lightning-llm generate"
        )
    template = chat_template(getattr(generator.tokenizer, "chat_template", None), None)
    name = cfg.model_name or served_name(cfg.model.pretrained)
    app = create_app(generator, name, template, cfg.max_batch_size, cfg.max_wait_ms / 1000)
    url = url_of(sock)
    plain = " (no chat template in the checkpoint: a plain User:/Assistant: one)" if template.plain else ""
    print(f"serving {name!r} at {url}/v1 (OpenAI API), chat page at {url}/{plain}; Ctrl-C stops", file=sys.stderr)
    uvicorn.Server(uvicorn.Config(app, log_level=cfg.log_level)).run(sockets=[sock])
