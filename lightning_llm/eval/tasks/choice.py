"""Multiple choice and classification: one log-likelihood per choice (or label word), or a fine-tuned head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.eval.metrics import choice_metrics, classification_metrics
from lightning_llm.eval.prompts import FewShotSampler, evaluate, render
from lightning_llm.eval.tasks.base import EvalEnv, PromptTask, Row, group_indices
from lightning_llm.models.scoring import EvalLM, NotApplicable
from lightning_llm.objectives import ObjectiveContext, SequenceClassification


@dataclass
class ChoiceItem:
    """One multiple-choice item as scored: a (context, continuation) request per choice."""

    contexts: list[str]
    continuations: list[str]
    choices: list[str]
    gold: int


def classify_with_head(lm: EvalLM, prompts: list[str], num_classes: int, desc: str) -> list[int]:
    """The class index the model's fine-tuned classification head (`task_head`) predicts for each prompt."""
    head = lm.model.task_head
    if head is None or lm.model.architecture not in SequenceClassification.architectures:
        raise NotApplicable(f"use_task_head: the {lm.family} model has no classification head (task_head)")
    if head.out_features != num_classes:
        raise NotApplicable(f"use_task_head: the head has {head.out_features} classes, the task {num_classes}")
    objective = SequenceClassification()
    objective.configure(ObjectiveContext(model=lm.model, tokenizer=lm.tokenizer))  # no labels: the model's head

    def run(batch: list[list[int]]) -> list[int]:
        inputs = objective.collate([{"prompt_ids": ids, "label": 0} for ids in batch])
        out = objective.forward(lm.model, {k: v.to(lm.device) for k, v in inputs.items()})
        return out.logits.argmax(-1).tolist()

    return lm.in_batches(lm.encode_all(prompts), run, desc)


@dataclass
class MultipleChoiceTask(PromptTask):
    """One log-likelihood per choice; the prediction is the argmax (acc) or the argmax per character (acc_norm).

    With `continuation` (partial scoring, WinoGrande), each choice completes the context and the shared
    continuation is what is scored.
    """

    type = "multiple_choice"
    metric_names = ("acc", "acc_norm", "f1")
    prompt_fields = (*PromptTask.prompt_fields, "choices", "gold", "continuation")

    choices: str = ""  # expression: the list of choices
    gold: str = ""  # expression: the index of the right choice
    continuation: str | None = None  # set: partial scoring (each choice ends the context; this is scored)
    use_task_head: bool = False  # classify with the model's fine-tuned head instead of likelihoods
    group_by: str | None = None  # also report acc per value of this column

    def check(self) -> None:
        super().check()
        for option in ("context", "choices", "gold"):
            if not getattr(self, option):
                raise ConfigError(f"{self.key(option)} is required for a {self.type} task")
        if self.continuation is not None and "acc_norm" in self.metrics:
            raise ConfigError(f"{self.key('metrics')}: acc_norm is undefined with partial scoring (continuation)")
        if self.use_task_head and (self.num_fewshot or "acc_norm" in self.metrics):
            raise ConfigError(f"{self.key('use_task_head')}: the head classifies zero-shot and has no acc_norm")

    def default_metrics(self) -> tuple[str, ...]:
        return ("acc",) if self.continuation is not None else ("acc", "acc_norm")

    def solved(self, row: Row) -> str:
        choices, gold = self.choices_and_gold(row)
        if self.continuation is None:
            return render(self.context, row) + self.target_delimiter + choices[gold]
        return render(self.context, row, choice=choices[gold]) + self.target_delimiter + render(self.continuation, row)

    def choices_and_gold(self, row: Row) -> tuple[list[str], int]:
        choices = evaluate(self.choices, row)
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{self.key('choices')}={self.choices!r} gives {choices!r}, not a list of choices")
        value = evaluate(self.gold, row)
        try:
            gold = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.key('gold')}={self.gold!r} gives {value!r}, not a choice index") from None
        if not 0 <= gold < len(choices):
            raise ConfigError(f"{self.key('gold')}={self.gold!r} gives {gold} for {len(choices)} choices")
        return [str(c) for c in choices], gold

    def item(self, row: Row, index: int, sampler: FewShotSampler | None) -> ChoiceItem:
        choices, gold = self.choices_and_gold(row)
        prefix = self.prefix(row, index, sampler)
        if self.continuation is None:
            contexts = [prefix + render(self.context, row)] * len(choices)
            continuations = [self.target_delimiter + c for c in choices]
        else:
            contexts = [prefix + render(self.context, row, choice=c) for c in choices]
            continuations = [self.target_delimiter + render(self.continuation, row)] * len(choices)
        return ChoiceItem(contexts, continuations, choices, gold)

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        rows, pool = self.load(env, need_pool=self.num_fewshot > 0)
        sampler = self.sampler(pool, env)
        items = [self.item(row, i, sampler) for i, row in enumerate(rows)]
        golds = [item.gold for item in items]
        num_classes = max(len(item.choices) for item in items)
        if self.use_task_head:
            preds = classify_with_head(lm, [item.contexts[0] for item in items], num_classes, self.name)
            metrics = classification_metrics(preds, golds, num_classes, self.metrics)
        else:
            requests = [(c, x) for item in items for c, x in zip(item.contexts, item.continuations, strict=True)]
            scores = iter(lm.loglikelihood(requests, desc=self.name))
            lls = [[next(scores).logprob for _ in item.choices] for item in items]
            lengths = [[max(1, len(c)) for c in item.choices] for item in items]
            metrics, preds = choice_metrics(lls, lengths, golds, self.metrics)
        first = items[0]
        if self.continuation is None:  # one context, one continuation per choice
            example = {"context": first.contexts[0], "continuations": first.continuations, "gold": first.gold}
        else:  # partial scoring: one context per choice, one continuation
            example = {"contexts": first.contexts, "continuation": first.continuations[0], "gold": first.gold}
        result = {"metrics": metrics, "n_samples": len(items), "example": example}
        if self.group_by:
            result["groups"] = {
                g: {
                    **classification_metrics([preds[i] for i in idx], [golds[i] for i in idx], num_classes, ["acc"]),
                    "n": len(idx),
                }
                for g, idx in group_indices(rows, self.group_by).items()
            }
        return result


@dataclass
class ClassificationTask(MultipleChoiceTask):
    """Classification as multiple choice over fixed label words (or the fine-tuned head); acc and macro-F1."""

    type = "classification"

    def default_metrics(self) -> tuple[str, ...]:
        return ("acc", "f1")
