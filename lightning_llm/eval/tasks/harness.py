"""Any lm-evaluation-harness task, run by the harness itself on our in-memory model (`eval=harness`).

The harness builds the requests (its prompts, few-shot draws, filters and metrics); our model answers them
through the same interface every task of ours calls (`EvalLM`: loglikelihood, loglikelihood_rolling,
generate_until), so no export to a Hugging Face folder is needed. Hub tasks need the network (or the datasets
cache); `include_path` adds a folder of the harness's own task YAMLs (local files work offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.eval.tasks.base import EvalEnv, Task
from lightning_llm.extras import require
from lightning_llm.models.scoring import EvalLM, GenerationSettings

CHOICE_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
    train: {pool}
test_split: test
fewshot_split: train
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_choice_task(folder: Path, name: str, items: Path, pool: Path) -> Path:
    """An lm-eval task YAML for local ARC-style JSON lines (question, choices {text, label}, answerKey) with
    conf/eval/tasks/arc_easy.yaml's prompt, so the harness and our MultipleChoiceTask score the same items."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(CHOICE_TASK.format(name=name, items=items, pool=pool), encoding="utf-8")
    return path


def harness_model(lm: EvalLM, seed: int) -> Any:
    """Our EvalLM as an lm-eval `LM`: the harness's requests become ours, its answers the harness's shape."""
    from lm_eval.api.model import LM

    class OurModel(LM):
        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            scores = lm.loglikelihood([tuple(r.args) for r in requests], desc="lm-eval loglikelihood")
            return [(s.logprob, s.is_greedy) for s in scores]

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            return [s.logprob for s in lm.loglikelihood_rolling([r.args[0] for r in requests], desc="lm-eval")]

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            outputs: list[str] = []
            for request in requests:  # each request carries its own stop strings and length
                context, options = request.args
                until = options.get("until") or []
                settings = GenerationSettings(
                    max_new_tokens=int(options.get("max_gen_toks", 256)),
                    temperature=float(options.get("temperature", 0.0) or 0.0),
                    until=[until] if isinstance(until, str) else list(until),
                )
                outputs += lm.generate_until([context], settings, seed, desc="lm-eval generate")
            return outputs

    return OurModel()


@dataclass
class HarnessTask(Task):
    """lm-evaluation-harness tasks by name; the metrics are the harness's (e.g. `acc`, `acc_norm`)."""

    type = "lm_eval"

    tasks: list[str] = field(default_factory=list)  # harness task names (or groups)
    include_path: str | None = None  # a folder of extra harness task YAMLs
    num_fewshot: int | None = None  # None: each task's own default
    fewshot_seed: int = 1234  # the harness's default fewshot_random_seed

    def check(self) -> None:
        if not self.tasks:
            raise ConfigError(f"{self.key('tasks')} is empty: name lm-evaluation-harness tasks, e.g. [arc_easy]")
        require("lm_eval", self.key("tasks"))

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        import lm_eval
        from lm_eval.tasks import TaskManager

        out = lm_eval.simple_evaluate(
            model=harness_model(lm, env.seed),
            tasks=list(self.tasks),
            num_fewshot=self.num_fewshot,
            limit=self.limit,
            task_manager=TaskManager(include_path=self.include_path),
            fewshot_random_seed=self.fewshot_seed,
            random_seed=env.seed,
            log_samples=False,
        )
        metrics: dict[str, float] = {}
        for task, values in out["results"].items():
            for key, value in values.items():
                name, _, filtered = key.partition(",")
                if isinstance(value, int | float) and not name.endswith("_stderr") and name != "alias":
                    label = name if filtered in ("none", "") else f"{name}_{filtered}"
                    metrics[label if len(out["results"]) == 1 else f"{task}/{label}"] = float(value)
        if self.primary_metric is not None and self.primary_metric not in metrics:
            given = sorted(metrics)
            raise ConfigError(f"{self.key('primary_metric')}={self.primary_metric!r}: the harness gave {given}")
        samples = sum(int(n.get("effective", n.get("original", 0))) for n in out.get("n-samples", {}).values())
        return {"metrics": metrics, "n_samples": samples, "harness": {"versions": out.get("versions", {})}}
