"""Generation: a continuation per prompt (decoding settings from the task), BLEU and ROUGE against references."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.eval.metrics import generation_metrics
from lightning_llm.eval.prompts import evaluate, render
from lightning_llm.eval.tasks.base import EvalEnv, PromptTask, Row
from lightning_llm.models.scoring import EvalLM, GenerationSettings


def generation_settings(value: Any, key: str) -> GenerationSettings:
    """Decoding settings from a task YAML's `generation` mapping, naming any unknown key."""
    if isinstance(value, GenerationSettings):
        return value
    allowed = set(GenerationSettings.__dataclass_fields__)
    extra = sorted(set(value) - allowed)
    if extra:
        raise ConfigError(f"{key}.{extra[0]} is unknown: known are {sorted(allowed)}")
    settings = dict(value)
    settings["until"] = list(settings.get("until") or [])
    return GenerationSettings(**settings)


@dataclass
class GenerationTask(PromptTask):
    """Generate a continuation per prompt; BLEU and ROUGE against the references."""

    type = "generation"
    metric_names = ("bleu", "rouge1", "rouge2", "rougeL")
    prompt_fields = (*PromptTask.prompt_fields, "reference")

    reference: str = ""  # expression: the reference (a string) or references (a list)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def check(self) -> None:
        self.generation = generation_settings(self.generation, self.key("generation"))
        super().check()
        for option in ("context", "reference"):
            if not getattr(self, option):
                raise ConfigError(f"{self.key(option)} is required for a generation task")

    def references(self, row: Row) -> list[str]:
        value = evaluate(self.reference, row)
        return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]

    def solved(self, row: Row) -> str:
        return render(self.context, row) + self.target_delimiter + self.references(row)[0]

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        lm.check_generation()
        rows, pool = self.load(env, need_pool=self.num_fewshot > 0)
        sampler = self.sampler(pool, env)
        prompts = [self.prefix(row, i, sampler) + render(self.context, row) for i, row in enumerate(rows)]
        references = [self.references(row) for row in rows]
        outputs = [text.strip() for text in lm.generate_until(prompts, self.generation, env.seed, desc=self.name)]
        return {
            "metrics": generation_metrics(outputs, references, self.metrics),
            "n_samples": len(rows),
            "generation": asdict(self.generation),
            "examples": [
                {"prompt": p, "generation": o, "references": r}
                for p, o, r in list(zip(prompts, outputs, references, strict=True))[:3]
            ],
        }
