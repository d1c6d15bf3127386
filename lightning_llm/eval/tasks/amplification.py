"""Bias amplification in generations: which attributes the model writes after prompts about each group (A->T),
and which group after prompts about each attribute (T->A), against their co-occurrence in reference texts."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from lightning_llm.data.synthetic import SYNTHETIC_COOCCURRENCE, CooccurrenceData, synthetic
from lightning_llm.errors import ConfigError
from lightning_llm.eval.fairness_metrics import Pair, bias_amplification, directional_bias_amplification
from lightning_llm.eval.tasks.base import DataTask, EvalEnv
from lightning_llm.eval.tasks.generation import generation_settings
from lightning_llm.models.scoring import EvalLM, GenerationSettings

WORD_FIELDS = ("group_words", "attribute_words", "group_prompts", "attribute_prompts")


@lru_cache(maxsize=64)
def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b", re.I)


def first_mention(text: str, words: dict[str, list[str]]) -> str | None:
    """The name whose word (whole word, any case) occurs first in `text`, or None."""
    owner = {w.lower(): name for name, ws in words.items() for w in ws}
    match = _pattern(tuple(owner)).search(text)
    return owner[match.group(1).lower()] if match else None


@dataclass
class CooccurrenceBiasTask(DataTask):
    """Generate `samples_per_prompt` continuations per prompt; the first group/attribute word in each is the
    model's output. The reference co-occurrence: sentences of the reference texts (`path`/`dataset`, column
    `text_column`, or the `synthetic` generator's) pairing their first group word with their first attribute word.
    """

    type = "cooccurrence_bias"
    metric_names = ("bias_amplification", "bias_amp_a_to_t", "bias_amp_t_to_a")

    text_column: str = "text"
    synthetic: str | None = None  # a generator of lightning_llm.data.synthetic.SYNTHETIC_COOCCURRENCE
    synthetic_options: dict[str, Any] = field(default_factory=dict)
    group_words: dict[str, list[str]] = field(default_factory=dict)  # group -> words marking it
    attribute_words: dict[str, list[str]] = field(default_factory=dict)  # attribute -> words marking it
    group_prompts: dict[str, list[str]] = field(default_factory=dict)  # group -> prompts about it (A->T)
    attribute_prompts: dict[str, list[str]] = field(default_factory=dict)  # attribute -> prompts (T->A)
    samples_per_prompt: int = 10
    generation: GenerationSettings = field(
        default_factory=lambda: GenerationSettings(max_new_tokens=16, temperature=1.0, until=["\n"])
    )

    def check(self) -> None:
        self.generation = generation_settings(self.generation, self.key("generation"))
        self.synthetic_options = dict(self.synthetic_options)
        for name in WORD_FIELDS:
            setattr(self, name, {str(k): [str(w) for w in v] for k, v in dict(getattr(self, name)).items()})
        if not self.synthetic:
            self.columns = list(dict.fromkeys([*self.columns, self.text_column]))
        super().check()
        if self.synthetic and self.synthetic not in SYNTHETIC_COOCCURRENCE:
            raise ConfigError(
                f"{self.key('synthetic')}={self.synthetic!r} is unknown: use one of {sorted(SYNTHETIC_COOCCURRENCE)}"
            )
        if not self.synthetic:
            for name in WORD_FIELDS[:3]:
                if not getattr(self, name):
                    raise ConfigError(f"{self.key(name)} is required without `synthetic`")
            if "bias_amp_t_to_a" in self.metrics and not self.attribute_prompts:
                raise ConfigError(f"{self.key('metrics')}: bias_amp_t_to_a needs attribute_prompts")
        if self.samples_per_prompt < 1:
            raise ConfigError(f"{self.key('samples_per_prompt')}={self.samples_per_prompt} must be at least 1")

    def has_source(self) -> bool:
        return bool(self.synthetic) or super().has_source()

    def data(self, env: EvalEnv) -> CooccurrenceData:
        """The reference texts, words and prompts: the task's own, the synthetic generator's where unset."""
        if self.synthetic:
            made = synthetic(SYNTHETIC_COOCCURRENCE, self.synthetic, self.synthetic_options, self.key("synthetic"))
            own = {name: getattr(self, name) or getattr(made, name) for name in WORD_FIELDS}
            return CooccurrenceData(reference=made.reference, **own)
        rows, _ = self.load(env)
        return CooccurrenceData(
            reference=[str(row[self.text_column]) for row in rows], **{n: getattr(self, n) for n in WORD_FIELDS}
        )

    def generate(self, lm: EvalLM, prompts: dict[str, list[str]], env: EvalEnv) -> list[tuple[str, str]]:
        """(prompt key, continuation) for `samples_per_prompt` continuations of every prompt."""
        keyed = [(key, p) for key, ps in prompts.items() for p in ps for _ in range(self.samples_per_prompt)]
        outputs = lm.generate_until([p for _, p in keyed], self.generation, env.seed, desc=self.name)
        return [(key, out) for (key, _), out in zip(keyed, outputs, strict=True)]

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        lm.check_generation()
        data = self.data(env)
        reference: list[Pair] = []
        for text in data.reference:
            group, attribute = first_mention(text, data.group_words), first_mention(text, data.attribute_words)
            if group is not None and attribute is not None:
                reference.append((group, attribute))
        if not reference:
            raise ConfigError(f"eval.tasks.{self.name}: no reference text names both a group and an attribute")
        about_groups = self.generate(lm, data.group_prompts, env)
        a_to_t = [(g, t) for g, out in about_groups if (t := first_mention(out, data.attribute_words)) is not None]
        values = {
            "bias_amplification": bias_amplification(reference, a_to_t),
            "bias_amp_a_to_t": directional_bias_amplification(reference, reference, a_to_t, "a_to_t"),
        }
        coverage = {"a_to_t": round(len(a_to_t) / len(about_groups), 6)}
        if "bias_amp_t_to_a" in self.metrics:
            about_attributes = self.generate(lm, data.attribute_prompts, env)
            t_to_a = [(a, t) for t, out in about_attributes if (a := first_mention(out, data.group_words)) is not None]
            values["bias_amp_t_to_a"] = directional_bias_amplification(reference, reference, t_to_a, "t_to_a")
            coverage["t_to_a"] = round(len(t_to_a) / len(about_attributes), 6)
        return {
            "metrics": {m: round(values[m], 6) for m in self.metrics},
            "n_samples": len(about_groups),
            "reference_pairs": len(reference),
            "coverage": coverage,  # share of generations that name an attribute (a_to_t) / a group (t_to_a)
            "generation": asdict(self.generation),
            "examples": [
                {"about": key, "generation": out} for key, out in about_groups[:: self.samples_per_prompt][:4]
            ],
        }

    def describe(self) -> dict[str, Any]:
        out = {
            **super().describe(),
            "samples_per_prompt": self.samples_per_prompt,
            "truth": "the reference co-occurrence (P_true = P_ref): generations have no gold labels",
        }
        if self.synthetic:
            out["data"] = {"synthetic": self.synthetic, "options": self.synthetic_options}
        return out
