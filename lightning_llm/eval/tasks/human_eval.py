"""Human evaluation: sampled prompts and generations exported for people to rate (nothing is scored)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning_llm.eval.prompts import render
from lightning_llm.eval.records import log_wandb_table, write_records
from lightning_llm.eval.tasks.base import DataTask, EvalEnv, Task
from lightning_llm.eval.tasks.generation import generation_settings
from lightning_llm.models.scoring import EvalLM, GenerationSettings


@dataclass
class HumanEvalTask(DataTask):
    """Prompts (`prompts`, or rows of `path`/`dataset` through `context`) and generations, written as CSV and
    JSON lines (and a W&B table when a W&B run is active)."""

    type = "human_eval"
    metric_names = ()

    prompts: list[str] | None = None  # inline prompts; otherwise rows of path/dataset rendered by `context`
    context: str = "{{ prompt }}"
    n_samples: int = 20
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def check(self) -> None:
        self.generation = generation_settings(self.generation, self.key("generation"))
        self.prompts = list(self.prompts) if self.prompts is not None else None
        super().check()

    def has_source(self) -> bool:
        return bool(self.prompts) or super().has_source()

    def describe(self) -> dict[str, Any]:
        if not self.prompts:
            return {**super().describe(), "context": self.context}
        return {**Task.describe(self), "data": {"prompts": len(self.prompts)}}

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        lm.check_generation()
        rows = [{"prompt": p} for p in self.prompts] if self.prompts else self.load(env)[0]
        n = min(self.n_samples, len(rows), self.limit or len(rows))
        picked = sorted(random.Random(env.seed).sample(range(len(rows)), n))
        prompts = [render(self.context, rows[i]) for i in picked]
        outputs = lm.generate_until(prompts, self.generation, env.seed, desc=self.name)
        records = [
            {
                "id": f"{self.name}-{k}",
                "task": self.name,
                "row": i,
                "prompt": prompt,
                "generation": output,
                "model_family": lm.family,
                "seed": env.seed,
                **asdict(self.generation),
                "rating": "",
                "comment": "",
            }
            for k, (i, prompt, output) in enumerate(zip(picked, prompts, outputs, strict=True))
        ]
        files = write_records(records, Path(env.output_dir) / self.name)
        return {
            "metrics": {},
            "n_samples": len(records),
            "files": [str(f) for f in files],
            "wandb_table": log_wandb_table(f"eval/{self.name}", records),
            "generation": asdict(self.generation),
            "examples": records[:3],
        }
