"""Evaluation tasks, one file per kind; a YAML in conf/eval/tasks/ picks the class with `_target_`.

| class | scores |
|---|---|
| PerplexityTask | held-out text: token/word/byte perplexity and bits per byte, sliding windows |
| MultipleChoiceTask, ClassificationTask | one log-likelihood per choice (or label word): acc, acc_norm, f1 |
| GenerationTask | decoded continuations against references: BLEU, ROUGE-1/2/L |
| BiasTask | CrowS-Pairs style sentence pairs: share preferring the stereotyping sentence |
| GroupFairnessTask | per-group acc/F1, demographic parity, equalized odds, bias amplification |
| CooccurrenceBiasTask | bias amplification (Zhao; attribute->task and task->attribute) in generations |
| CanaryExposureTask | canary exposure (Carlini et al.) and greedy extraction of planted secrets |
| MemorizationTask | greedy extraction of training texts' suffixes from their prefixes |
| HumanEvalTask | nothing: writes sampled prompts and generations for people to rate |
| HarnessTask | any lm-evaluation-harness task, run by the harness on our in-memory model |
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.utils import get_class

from lightning_llm.errors import ConfigError, unknown_key
from lightning_llm.eval.tasks.amplification import CooccurrenceBiasTask
from lightning_llm.eval.tasks.base import DataTask, EvalEnv, PromptTask, Task
from lightning_llm.eval.tasks.bias import BiasTask
from lightning_llm.eval.tasks.canary import CanaryExposureTask
from lightning_llm.eval.tasks.choice import ClassificationTask, MultipleChoiceTask
from lightning_llm.eval.tasks.fairness import GroupFairnessTask
from lightning_llm.eval.tasks.generation import GenerationTask
from lightning_llm.eval.tasks.harness import HarnessTask
from lightning_llm.eval.tasks.human_eval import HumanEvalTask
from lightning_llm.eval.tasks.memorization import MemorizationTask
from lightning_llm.eval.tasks.perplexity import PerplexityTask


def build_task(name: str, raw: dict[str, Any]) -> Task:
    """The task a YAML mapping declares: its `_target_` (a Task class) built with its keys, each checked."""
    target = raw.get("_target_")
    try:
        cls = get_class(target) if isinstance(target, str) else None
    except Exception:
        cls = None
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(
            f"eval.tasks.{name}._target_={target!r} is not an evaluation task: use a class of "
            "lightning_llm.eval.tasks (e.g. lightning_llm.eval.tasks.MultipleChoiceTask)"
        )
    fields = {f.name for f in dataclasses.fields(cls) if f.name != "name"}
    settings = {k: v for k, v in raw.items() if k != "_target_"}
    for key in settings:
        if key not in fields:
            raise unknown_key(f"eval.tasks.{name}.{key}", fields, f"{cls.__name__}")
    return cls(name=name, **settings)


__all__ = [
    "BiasTask",
    "CanaryExposureTask",
    "CooccurrenceBiasTask",
    "GroupFairnessTask",
    "ClassificationTask",
    "DataTask",
    "EvalEnv",
    "GenerationTask",
    "HarnessTask",
    "HumanEvalTask",
    "MemorizationTask",
    "MultipleChoiceTask",
    "PerplexityTask",
    "PromptTask",
    "Task",
    "build_task",
]
