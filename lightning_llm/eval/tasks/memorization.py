"""Memorization: greedy decoding from a training text's first tokens; is the true suffix reproduced?"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.eval.tasks.base import EvalEnv, Task
from lightning_llm.models.scoring import EvalLM, GenerationSettings, NotApplicable


@dataclass
class MemorizationTask(Task):
    """Extraction of training data (Carlini et al.): prefixes of sampled training texts, greedy suffixes."""

    type = "memorization"
    metric_names = ("extraction_rate", "token_match")
    needs_train_texts = True

    n_samples: int = 200
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    offset: str = "start"  # start | random

    def check(self) -> None:
        super().check()
        if self.offset not in ("start", "random"):
            raise ConfigError(f"{self.key('offset')}={self.offset!r} is unknown: use start or random")
        if min(self.prefix_tokens, self.suffix_tokens, self.n_samples) < 1:
            raise ConfigError(f"eval.tasks.{self.name}: n_samples, prefix_tokens and suffix_tokens must be positive")

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        if not env.train_texts:
            raise NotApplicable("no training texts were given (train_texts)")
        lm.check_generation()
        if self.prefix_tokens >= lm.block_size:
            raise ConfigError(
                f"{self.key('prefix_tokens')}={self.prefix_tokens} leaves no room in a context of {lm.block_size}"
            )
        n, span = min(self.n_samples, self.limit or self.n_samples), self.prefix_tokens + self.suffix_tokens
        rng = random.Random(env.seed)
        order = list(range(len(env.train_texts)))
        rng.shuffle(order)
        samples = []
        for i in order:
            ids = lm.tokenizer.encode(env.train_texts[i])
            if len(ids) >= span:
                start = rng.randrange(len(ids) - span + 1) if self.offset == "random" else 0
                samples.append(ids[start : start + span])
                if len(samples) == n:
                    break
        if not samples:
            raise NotApplicable(f"no training text has {span} tokens (prefix_tokens + suffix_tokens)")
        settings = GenerationSettings(max_new_tokens=self.suffix_tokens, temperature=0.0)
        outputs = lm.generate_ids([s[: self.prefix_tokens] for s in samples], settings, env.seed, desc=self.name)
        suffixes = [s[self.prefix_tokens :] for s in samples]
        matched = [
            sum(a == b for a, b in zip(out, suffix, strict=False)) / len(suffix)
            for out, suffix in zip(outputs, suffixes, strict=True)
        ]
        metrics = {
            "extraction_rate": round(
                sum(out[: len(s)] == s for out, s in zip(outputs, suffixes, strict=True)) / len(samples), 6
            ),
            "token_match": round(sum(matched) / len(matched), 6),
        }
        return {
            "metrics": {m: metrics[m] for m in self.metrics},
            "n_samples": len(samples),
            "candidates": len(env.train_texts),
            "prefix_tokens": self.prefix_tokens,
            "suffix_tokens": self.suffix_tokens,
            "offset": self.offset,
        }
