"""Text from a trained model: load any checkpoint (ours, PEFT merged, Hugging Face), optionally quantized, then
continue prompts (decoders), map inputs to outputs (encoder-decoders) or fill masks (encoders), in padded batches,
streaming the first row, cut at eos and stop strings, timed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lightning_llm.checkpoints import load_pretrained, model_from_pretrained
from lightning_llm.errors import ConfigError
from lightning_llm.finetune.quantize import quantize_model, weight_bytes
from lightning_llm.log import get_logger, quiet_known_noise
from lightning_llm.models import LanguageModel, family_of
from lightning_llm.models.scoring import EvalLM, GenerationSettings
from lightning_llm.tokenizers import Tokenizer

log = get_logger(__name__)


def load_for_inference(
    source: str, quantize: str = "none", add_bos: bool | None = None
) -> tuple[LanguageModel, Tokenizer]:
    """The model (eval mode, weights as trained, optionally quantized) and tokenizer behind `source`."""
    quiet_known_noise()
    pretrained = load_pretrained(source)
    if pretrained.tokenizer is None:
        raise ConfigError(f"model.pretrained={source!r} has no tokenizer: it cannot turn text into ids")
    model = quantize_model(model_from_pretrained(pretrained), quantize)
    tokenizer = pretrained.tokenizer
    if add_bos is not None:  # the user's override of the tokenizer's own convention
        tokenizer.adds_bos = bool(add_bos)
    log.info(
        "loaded %s (%s, %.1f MB of weights, quantize=%s)", source, model.family, weight_bytes(model) / 1e6, quantize
    )
    return model, tokenizer


@dataclass
class Completion:
    """One prompt's result, as the JSONL output records it."""

    prompt: str
    output: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    tokens_per_s: float


class TextGenerator:
    """A model behind its family's scorer (which frames prompts as the family reads them)."""

    def __init__(self, model: LanguageModel, tokenizer: Tokenizer, batch_size: int = 8) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.lm: EvalLM = family_of(model).scorer(model, tokenizer, batch_size)

    def check_prompt(self, prompt: str) -> list[int]:
        """The prompt's ids; a prompt that does not fit the context (with its framing) is an error, not cut."""
        ids = self.tokenizer.encode(prompt)
        framing = {"decoder": len(self.lm.prefix_ids), "encoder-decoder": 1, "encoder": 2}[self.model.architecture]
        if len(ids) + framing > self.model.context_length:
            raise ConfigError(
                f"a prompt has {len(ids)} tokens and the model's context is {self.model.context_length}: shorten "
                f"it (it starts {prompt[:40]!r})"
            )
        return ids

    def complete(
        self,
        prompts: list[str],
        settings: GenerationSettings,
        seed: int = 0,
        stream: Callable[[str], None] | None = None,
    ) -> list[Completion]:
        """Completions of `prompts`; `stream` receives the first prompt's text as it grows."""
        encoded = [self.check_prompt(p) for p in prompts]
        started = time.perf_counter()
        if self.model.architecture == "encoder":
            outputs = self.lm.fill_masks(prompts)
            new_counts = [0] * len(prompts)
        else:
            outputs, new_counts = self._generate(encoded, settings, seed, stream)
        seconds = time.perf_counter() - started
        total = max(1, sum(new_counts))
        return [
            Completion(p, o, len(ids), n, round(seconds * n / total, 4), round(n / seconds, 1) if seconds else 0.0)
            for p, o, ids, n in zip(prompts, outputs, encoded, new_counts, strict=True)
        ]

    def _generate(
        self, encoded: list[list[int]], settings: GenerationSettings, seed: int, stream: Callable[[str], None] | None
    ) -> tuple[list[str], list[int]]:
        tok, stops = self.tokenizer, [s for s in settings.until if s]
        texts: dict[int, list[int]] = {}
        shown = {"text": ""}

        def on_token(next_ids: torch.Tensor) -> None:
            for row, token in enumerate(next_ids[:, 0].tolist()):
                texts.setdefault(row, []).append(token)
            if stream is not None:
                text = cut(tok.decode([t for t in texts[0] if t != tok.eos_id]), stops)
                if text.startswith(shown["text"]) and len(text) > len(shown["text"]):
                    stream(text[len(shown["text"]) :])
                    shown["text"] = text

        def should_stop() -> bool:  # every row has reached a stop string (eos is handled by the loop)
            return bool(stops) and all(any(s in tok.decode(ids) for s in stops) for ids in texts.values())

        hooks = {"on_token": on_token, "should_stop": should_stop} if len(encoded) == 1 else {}
        new = self.lm.generate_ids(encoded, settings, seed, desc="generate", **hooks)
        outputs = [cut(tok.decode(ids), stops) for ids in new]
        counts = [len(tok.encode(o)) if stops else len(ids) for o, ids in zip(outputs, new, strict=True)]
        return outputs, counts


def cut(text: str, stops: list[str]) -> str:
    """`text` up to the first stop string."""
    return min((text.split(s)[0] for s in stops), key=len, default=text)


def completion_record(completion: Completion, settings: GenerationSettings, **extra: Any) -> dict[str, Any]:
    """One JSONL line: the prompt, the output, token counts, timing and the decoding settings."""
    return {**asdict(completion), "settings": asdict(settings), **extra}
