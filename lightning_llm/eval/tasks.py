"""Evaluation tasks, each declared by a YAML file in conf/eval/tasks/ (its `type` picks the class here).

| type | scores |
|---|---|
| perplexity | held-out text: token/word/byte perplexity and bits per byte, sliding windows |
| multiple_choice, classification | one log-likelihood per choice (or label word): acc, acc_norm, f1 |
| generation | decoded continuations against references: BLEU, ROUGE-1/2/L |
| bias | CrowS-Pairs style sentence pairs: share preferring the stereotyping sentence |
| memorization | greedy extraction of training texts' suffixes from their prefixes |
| human_eval | nothing: writes sampled prompts and generations for people to rate |
"""

from __future__ import annotations

import csv
import json
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from lightning_llm.data.corpus import is_embedded
from lightning_llm.data.datamodule import load_rows, looks_local, split_train_val
from lightning_llm.errors import ConfigError
from lightning_llm.eval.lm import EvalLM, GenerationSettings, NotApplicable
from lightning_llm.eval.metrics import (
    METRIC_DEFINITIONS,
    choice_metrics,
    classification_metrics,
    generation_metrics,
    perplexity_metrics,
)
from lightning_llm.eval.prompts import PROCESS_DOCS, FewShotSampler, evaluate, fewshot_prompt, render

Row = dict[str, Any]


@dataclass
class EvalEnv:
    """What every task may use besides the model: the seed, where files go, the cache, the training texts."""

    seed: int
    output_dir: Path
    cache_dir: str
    train_texts: list[str] | None = None


# -- configs -------------------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    """Keys every task takes."""

    type: str
    metrics: list[str] = field(default_factory=list)  # default: all the type computes
    primary_metric: str | None = None  # the one the summary uses; default the first metric
    random_baseline: float | None = None  # chance level of the primary metric; set: the task joins the average
    limit: int | None = None  # at most this many items


@dataclass
class DataConfig(TaskConfig):
    """A task that reads rows: a hub dataset (online) or a local file with the same columns."""

    dataset: str | None = None  # a datasets name
    dataset_name: str | None = None  # its configuration
    split: str = "test"
    fewshot_split: str | None = None
    path: str | None = None  # a local file/folder or embedded corpus; replaces `dataset`
    fewshot_path: str | None = None
    columns: list[str] = field(default_factory=list)  # the columns a row must have
    holdout_fraction: float | None = None  # evaluate only this held-out part (as the data modules split)
    holdout_seed: int = 1234
    process_docs: str | None = None  # a row preprocessor of lightning_llm.eval.prompts.PROCESS_DOCS


@dataclass
class PromptConfig(DataConfig):
    """A task that prompts: Jinja templates, few-shot examples."""

    description: str = ""
    context: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    fewshot_match: str | None = None  # shots only from rows with the same value in this column


@dataclass
class MultipleChoiceConfig(PromptConfig):
    choices: str = ""  # expression: the list of choices
    gold: str = ""  # expression: the index of the right choice
    continuation: str | None = None  # set: partial scoring (each choice ends the context; this is scored)
    use_task_head: bool = False  # classify with the model's fine-tuned head instead of likelihoods
    group_by: str | None = None  # also report acc per value of this column


@dataclass
class GenerationConfig(PromptConfig):
    reference: str = ""  # expression: the reference (a string) or references (a list)
    generation: GenerationSettings = field(default_factory=GenerationSettings)


@dataclass
class PerplexityConfig(DataConfig):
    text_column: str = "text"
    stride: int | None = None  # new tokens per window; default the model's context


@dataclass
class BiasConfig(DataConfig):
    more_column: str = "sent_more"
    less_column: str = "sent_less"
    group_by: str | None = None


@dataclass
class MemorizationConfig(TaskConfig):
    n_samples: int = 200
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    offset: str = "start"  # start | random


@dataclass
class HumanEvalConfig(DataConfig):
    prompts: list[str] | None = None  # inline prompts; otherwise rows of path/dataset rendered by `context`
    context: str = "{{ prompt }}"
    n_samples: int = 20
    generation: GenerationSettings = field(default_factory=GenerationSettings)


# -- tasks ---------------------------------------------------------------------------------------------


class Task:
    """A configured task: `run(lm, env)` returns its metrics, sample count and what it scored."""

    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    metric_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, config: TaskConfig) -> None:
        self.name, self.config = name, config
        self.check()

    @classmethod
    def from_dict(cls, name: str, raw: dict[str, Any]) -> Task:
        """Build from a task's YAML, naming any key that is not an option of its type."""
        known = {f.name for f in fields(cls.config_class)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"eval.tasks.{name}.{unknown[0]} is not an option of type {raw['type']!r}: known are {sorted(known)}"
            )
        raw = dict(raw)
        if isinstance(raw.get("generation"), dict):
            allowed = {f.name for f in fields(GenerationSettings)}
            extra = sorted(set(raw["generation"]) - allowed)
            if extra:
                raise ConfigError(f"eval.tasks.{name}.generation.{extra[0]} is unknown: known are {sorted(allowed)}")
            raw["generation"] = GenerationSettings(**raw["generation"])
        return cls(name, cls.config_class(**raw))

    def key(self, option: str) -> str:
        return f"eval.tasks.{self.name}.{option}"

    def check(self) -> None:
        """Validate the config (fail fast, before any model work); fill metric defaults."""
        cfg = self.config
        cfg.metrics = list(cfg.metrics or self.default_metrics())
        for name in cfg.metrics:
            if name not in self.metric_names:
                raise ConfigError(
                    f"{self.key('metrics')}: {name!r} is not a metric of {cfg.type}: use {self.metric_names}"
                )
        cfg.primary_metric = cfg.primary_metric or (cfg.metrics[0] if cfg.metrics else None)
        if cfg.primary_metric is not None and cfg.primary_metric not in cfg.metrics:
            raise ConfigError(f"{self.key('primary_metric')}={cfg.primary_metric!r} is not among metrics {cfg.metrics}")
        if cfg.random_baseline is not None and not 0 <= cfg.random_baseline < 1:
            raise ConfigError(f"{self.key('random_baseline')}={cfg.random_baseline} must be in [0, 1)")

    def default_metrics(self) -> tuple[str, ...]:
        return self.metric_names

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the result reports besides the scores: metric definitions, the summary's metric and baseline."""
        cfg = self.config
        return {
            "primary_metric": cfg.primary_metric,
            "random_baseline": cfg.random_baseline,
            "metric_definitions": {m: METRIC_DEFINITIONS[m] for m in cfg.metrics},
        }


class DataTask(Task):
    """A task over table rows: the eval rows, and a few-shot pool when it needs one."""

    config: DataConfig

    def check(self) -> None:
        super().check()
        cfg = self.config
        for option in ("path", "fewshot_path"):
            path = getattr(cfg, option)
            if path and not is_embedded(path) and looks_local(path) and not Path(path).expanduser().exists():
                raise ConfigError(f"{self.key(option)}={path!r} does not exist: give an existing file or folder")
        if not self.has_source():
            raise ConfigError(f"eval.tasks.{self.name}: set path (a local file) or dataset (a datasets name)")
        if cfg.process_docs is not None and cfg.process_docs not in PROCESS_DOCS:
            raise ConfigError(
                f"{self.key('process_docs')}={cfg.process_docs!r} is unknown: use one of {list(PROCESS_DOCS)}"
            )

    def has_source(self) -> bool:
        return bool(self.config.path or self.config.dataset)

    def _table(self, source: str, name: str | None, split: str, option: str, env: EvalEnv):
        try:
            ds = load_rows(source, name, split, Path(env.cache_dir))
        except ConfigError as err:
            raise ConfigError(str(err).replace("data.path", self.key(option))) from err
        missing = [c for c in self.config.columns if c not in ds.column_names]
        if missing:
            raise ConfigError(
                f"{self.key(option)}={source!r} lacks column {missing[0]!r}: its columns are {ds.column_names}"
            )
        return ds

    def _rows(self, ds) -> list[Row]:
        rows = ds.to_list()
        process = PROCESS_DOCS.get(self.config.process_docs or "")
        return [process(row) for row in rows] if process else rows

    def load(
        self, env: EvalEnv, need_pool: bool = False, keep: Callable[[Row], bool] | None = None
    ) -> tuple[list[Row], list[Row] | None]:
        """(eval rows, few-shot pool or None). `keep` filters rows before the held-out split."""
        cfg = self.config
        if cfg.path:
            ds = self._table(cfg.path, None, "train", "path", env)
        else:
            ds = self._table(cfg.dataset, cfg.dataset_name, cfg.split, "dataset", env)
        if keep is not None:
            ds = ds.filter(keep)
        pool_ds = None
        if cfg.holdout_fraction:
            pool_ds, ds = split_train_val(ds, cfg.holdout_fraction, cfg.holdout_seed, cfg.path or cfg.dataset)
        rows = self._rows(ds.select(range(min(cfg.limit, len(ds)))) if cfg.limit else ds)
        if not rows:
            raise ConfigError(f"eval.tasks.{self.name}: no rows to evaluate in {cfg.path or cfg.dataset!r}")
        if not need_pool:
            return rows, None
        if cfg.fewshot_path:
            pool_ds = self._table(cfg.fewshot_path, None, "train", "fewshot_path", env)
        elif pool_ds is None and not cfg.path and cfg.fewshot_split:
            pool_ds = self._table(cfg.dataset, cfg.dataset_name, cfg.fewshot_split, "fewshot_split", env)
        return rows, self._rows(pool_ds if pool_ds is not None else ds)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        source = (
            {"path": cfg.path} if cfg.path else {"dataset": cfg.dataset, "name": cfg.dataset_name, "split": cfg.split}
        )
        if cfg.holdout_fraction:
            source["holdout"] = {"fraction": cfg.holdout_fraction, "seed": cfg.holdout_seed}
        return {**super().describe(), "data": source}


class PromptTask(DataTask):
    """A task whose items are prompts: description, few-shot examples, the item's context."""

    config: PromptConfig
    prompt_fields: ClassVar[tuple[str, ...]] = ("description", "context", "target_delimiter", "fewshot_delimiter")

    def check(self) -> None:
        super().check()
        if self.config.num_fewshot < 0:
            raise ConfigError(f"{self.key('num_fewshot')}={self.config.num_fewshot} must be 0 or more")

    def sampler(self, pool: list[Row] | None, env: EvalEnv) -> FewShotSampler | None:
        return FewShotSampler(pool, env.seed, self.config.fewshot_match) if pool is not None else None

    def solved(self, row: Row) -> str:
        """A row as a few-shot example: its context, the target delimiter and its answer."""
        raise NotImplementedError

    def prefix(self, row: Row, index: int, sampler: FewShotSampler | None) -> str:
        """The description and the few-shot examples that precede an item's context."""
        cfg = self.config
        shots = sampler.sample(row, index, cfg.num_fewshot) if sampler else []
        return fewshot_prompt(render(cfg.description, row), [self.solved(s) for s in shots], "", cfg.fewshot_delimiter)

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        prompt_format = {k: getattr(cfg, k) for k in self.prompt_fields if getattr(cfg, k) is not None}
        prompt_format["layout"] = "description + (solved example + fewshot_delimiter) * num_fewshot + context"
        return {**super().describe(), "num_fewshot": cfg.num_fewshot, "prompt_format": prompt_format}


@dataclass
class ChoiceItem:
    """One multiple-choice item as scored: a (context, continuation) request per choice."""

    contexts: list[str]
    continuations: list[str]
    choices: list[str]
    gold: int


class MultipleChoiceTask(PromptTask):
    """One log-likelihood per choice; the prediction is the argmax (acc) or the argmax per character (acc_norm).

    With `continuation` (partial scoring, WinoGrande), each choice completes the context and the shared
    continuation is what is scored. Classification is this with fixed label words as choices.
    """

    config: MultipleChoiceConfig
    config_class = MultipleChoiceConfig
    metric_names = ("acc", "acc_norm", "f1")
    prompt_fields = (*PromptTask.prompt_fields, "choices", "gold", "continuation")

    def check(self) -> None:
        super().check()
        cfg = self.config
        for option in ("context", "choices", "gold"):
            if not getattr(cfg, option):
                raise ConfigError(f"{self.key(option)} is required for type {cfg.type}")
        if cfg.continuation is not None and "acc_norm" in cfg.metrics:
            raise ConfigError(f"{self.key('metrics')}: acc_norm is undefined with partial scoring (continuation)")
        if cfg.use_task_head and (cfg.num_fewshot or "acc_norm" in cfg.metrics):
            raise ConfigError(f"{self.key('use_task_head')}: the head classifies zero-shot and has no acc_norm")

    def default_metrics(self) -> tuple[str, ...]:
        if self.config.type == "classification":
            return ("acc", "f1")
        return ("acc",) if self.config.continuation is not None else ("acc", "acc_norm")

    def solved(self, row: Row) -> str:
        cfg = self.config
        choices, gold = self.choices_and_gold(row)
        if cfg.continuation is None:
            return render(cfg.context, row) + cfg.target_delimiter + choices[gold]
        return render(cfg.context, row, choice=choices[gold]) + cfg.target_delimiter + render(cfg.continuation, row)

    def choices_and_gold(self, row: Row) -> tuple[list[str], int]:
        choices = evaluate(self.config.choices, row)
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{self.key('choices')}={self.config.choices!r} gives {choices!r}, not a list of choices")
        value = evaluate(self.config.gold, row)
        try:
            gold = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.key('gold')}={self.config.gold!r} gives {value!r}, not a choice index") from None
        if not 0 <= gold < len(choices):
            raise ConfigError(f"{self.key('gold')}={self.config.gold!r} gives {gold} for {len(choices)} choices")
        return [str(c) for c in choices], gold

    def item(self, row: Row, index: int, sampler: FewShotSampler | None) -> ChoiceItem:
        cfg = self.config
        choices, gold = self.choices_and_gold(row)
        prefix = self.prefix(row, index, sampler)
        if cfg.continuation is None:
            contexts = [prefix + render(cfg.context, row)] * len(choices)
            continuations = [cfg.target_delimiter + c for c in choices]
        else:
            contexts = [prefix + render(cfg.context, row, choice=c) for c in choices]
            continuations = [cfg.target_delimiter + render(cfg.continuation, row)] * len(choices)
        return ChoiceItem(contexts, continuations, choices, gold)

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        cfg = self.config
        rows, pool = self.load(env, need_pool=cfg.num_fewshot > 0)
        sampler = self.sampler(pool, env)
        items = [self.item(row, i, sampler) for i, row in enumerate(rows)]
        golds = [item.gold for item in items]
        num_classes = max(len(item.choices) for item in items)
        if cfg.use_task_head:
            preds = lm.classify([item.contexts[0] for item in items], num_classes, desc=self.name)
            metrics = classification_metrics(preds, golds, num_classes, cfg.metrics)
        else:
            requests = [(c, x) for item in items for c, x in zip(item.contexts, item.continuations, strict=True)]
            scores = iter(lm.loglikelihood(requests, desc=self.name))
            lls = [[next(scores).logprob for _ in item.choices] for item in items]
            lengths = [[max(1, len(c)) for c in item.choices] for item in items]
            metrics, preds = choice_metrics(lls, lengths, golds, cfg.metrics)
        first = items[0]
        if cfg.continuation is None:  # one context, one continuation per choice
            example = {"context": first.contexts[0], "continuations": first.continuations, "gold": first.gold}
        else:  # partial scoring: one context per choice, one continuation
            example = {"contexts": first.contexts, "continuation": first.continuations[0], "gold": first.gold}
        result = {"metrics": metrics, "n_samples": len(items), "example": example}
        if cfg.group_by:
            result["groups"] = {
                g: {
                    **classification_metrics([preds[i] for i in idx], [golds[i] for i in idx], num_classes, ["acc"]),
                    "n": len(idx),
                }
                for g, idx in group_indices(rows, cfg.group_by).items()
            }
        return result


class GenerationTask(PromptTask):
    """Generate a continuation per prompt (decoding settings from the config); BLEU and ROUGE vs references."""

    config: GenerationConfig
    config_class = GenerationConfig
    metric_names = ("bleu", "rouge1", "rouge2", "rougeL")
    prompt_fields = (*PromptTask.prompt_fields, "reference")

    def check(self) -> None:
        super().check()
        for option in ("context", "reference"):
            if not getattr(self.config, option):
                raise ConfigError(f"{self.key(option)} is required for type generation")

    def references(self, row: Row) -> list[str]:
        value = evaluate(self.config.reference, row)
        return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]

    def solved(self, row: Row) -> str:
        return render(self.config.context, row) + self.config.target_delimiter + self.references(row)[0]

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        cfg = self.config
        lm.check_generation()
        rows, pool = self.load(env, need_pool=cfg.num_fewshot > 0)
        sampler = self.sampler(pool, env)
        prompts = [self.prefix(row, i, sampler) + render(cfg.context, row) for i, row in enumerate(rows)]
        references = [self.references(row) for row in rows]
        outputs = [text.strip() for text in lm.generate_until(prompts, cfg.generation, env.seed, desc=self.name)]
        return {
            "metrics": generation_metrics(outputs, references, cfg.metrics),
            "n_samples": len(rows),
            "generation": asdict(cfg.generation),
            "examples": [
                {"prompt": p, "generation": o, "references": r}
                for p, o, r in list(zip(prompts, outputs, references, strict=True))[:3]
            ],
        }


class PerplexityTask(DataTask):
    """Log-likelihood of whole documents in sliding windows; perplexities and bits per byte."""

    config: PerplexityConfig
    config_class = PerplexityConfig
    metric_names = ("bits_per_byte", "byte_perplexity", "word_perplexity", "token_perplexity")

    def check(self) -> None:
        self.config.columns = [self.config.text_column]
        super().check()

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        column = self.config.text_column
        rows, _ = self.load(env, keep=lambda row: bool(row[column] and str(row[column]).strip()))
        texts = [str(row[column]) for row in rows]
        stride = lm.effective_stride(self.config.stride)
        scores = lm.loglikelihood_rolling(texts, stride, desc=self.name)
        nll = -sum(s.logprob for s in scores)
        tokens = sum(s.n_tokens for s in scores)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        words = sum(len(t.split()) for t in texts)
        metrics = perplexity_metrics(nll, tokens, words, n_bytes)
        return {
            "metrics": {m: metrics[m] for m in self.config.metrics},
            "n_samples": len(texts),
            "totals": {"nll": nll, "tokens": tokens, "words": words, "bytes": n_bytes},
            "windows": {"max_tokens": lm.max_tokens, "stride": stride, "prefix_ids": lm.prefix_ids},
        }


class BiasTask(DataTask):
    """Sentence pairs (more / less stereotyping): how often the model prefers the stereotyping one."""

    config: BiasConfig
    config_class = BiasConfig
    metric_names = ("pct_stereotype", "likelihood_diff")

    def check(self) -> None:
        cfg = self.config
        cfg.columns = list(dict.fromkeys([*cfg.columns, cfg.more_column, cfg.less_column]))
        super().check()

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        cfg = self.config
        rows, _ = self.load(env)
        sentences = [row[cfg.more_column] for row in rows] + [row[cfg.less_column] for row in rows]
        scores = [s.logprob for s in lm.loglikelihood_rolling(sentences, desc=self.name)]
        more, less = scores[: len(rows)], scores[len(rows) :]

        def stats(idx: list[int]) -> dict[str, float]:
            return {
                "pct_stereotype": round(sum(more[i] > less[i] for i in idx) / len(idx), 6),
                "likelihood_diff": round(sum(abs(more[i] - less[i]) for i in idx) / len(idx), 6),
            }

        result = {"metrics": stats(list(range(len(rows)))), "n_samples": len(rows)}
        if cfg.group_by and cfg.group_by in rows[0]:
            result["groups"] = {
                g: {**stats(idx), "n": len(idx)} for g, idx in group_indices(rows, cfg.group_by).items()
            }
        return result

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "scoring": "log-likelihood of each whole sentence (rolling, from <s>)"}


class MemorizationTask(Task):
    """Greedy decoding from a training text's first tokens: is the true suffix reproduced?"""

    config: MemorizationConfig
    config_class = MemorizationConfig
    metric_names = ("extraction_rate", "token_match")

    def check(self) -> None:
        super().check()
        cfg = self.config
        if cfg.offset not in ("start", "random"):
            raise ConfigError(f"{self.key('offset')}={cfg.offset!r} is unknown: use start or random")
        if min(cfg.prefix_tokens, cfg.suffix_tokens, cfg.n_samples) < 1:
            raise ConfigError(f"eval.tasks.{self.name}: n_samples, prefix_tokens and suffix_tokens must be positive")

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        cfg = self.config
        if not env.train_texts:
            raise NotApplicable("no training texts were given (train_texts)")
        lm.check_generation()
        if cfg.prefix_tokens >= lm.block_size:
            raise ConfigError(
                f"{self.key('prefix_tokens')}={cfg.prefix_tokens} leaves no room in a context of {lm.block_size}"
            )
        n, span = min(cfg.n_samples, cfg.limit or cfg.n_samples), cfg.prefix_tokens + cfg.suffix_tokens
        rng = random.Random(env.seed)
        order = list(range(len(env.train_texts)))
        rng.shuffle(order)
        samples = []
        for i in order:
            ids = lm.tokenizer.encode(env.train_texts[i])
            if len(ids) >= span:
                start = rng.randrange(len(ids) - span + 1) if cfg.offset == "random" else 0
                samples.append(ids[start : start + span])
                if len(samples) == n:
                    break
        if not samples:
            raise NotApplicable(f"no training text has {span} tokens (prefix_tokens + suffix_tokens)")
        settings = GenerationSettings(max_new_tokens=cfg.suffix_tokens, temperature=0.0)
        outputs = lm.generate_ids([s[: cfg.prefix_tokens] for s in samples], settings, env.seed, desc=self.name)
        suffixes = [s[cfg.prefix_tokens :] for s in samples]
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
            "metrics": {m: metrics[m] for m in cfg.metrics},
            "n_samples": len(samples),
            "candidates": len(env.train_texts),
            "prefix_tokens": cfg.prefix_tokens,
            "suffix_tokens": cfg.suffix_tokens,
            "offset": cfg.offset,
        }


class HumanEvalTask(DataTask):
    """Sampled prompts and generations, exported as CSV and JSON lines (and a W&B table) for human rating."""

    config: HumanEvalConfig
    config_class = HumanEvalConfig
    metric_names = ()

    def has_source(self) -> bool:
        return bool(self.config.prompts) or super().has_source()

    def describe(self) -> dict[str, Any]:
        if not self.config.prompts:
            return {**super().describe(), "context": self.config.context}
        return {**Task.describe(self), "data": {"prompts": len(self.config.prompts)}}

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        cfg = self.config
        lm.check_generation()
        rows = [{"prompt": p} for p in cfg.prompts] if cfg.prompts else self.load(env)[0]
        n = min(cfg.n_samples, len(rows), cfg.limit or len(rows))
        picked = sorted(random.Random(env.seed).sample(range(len(rows)), n))
        prompts = [render(cfg.context, rows[i]) for i in picked]
        outputs = lm.generate_until(prompts, cfg.generation, env.seed, desc=self.name)
        records = [
            {
                "id": f"{self.name}-{k}",
                "task": self.name,
                "row": i,
                "prompt": prompt,
                "generation": output,
                "model_family": lm.family,
                "seed": env.seed,
                **asdict(cfg.generation),
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
            "generation": asdict(cfg.generation),
            "examples": records[:3],
        }


def group_indices(rows: list[Row], column: str) -> dict[str, list[int]]:
    """Row indices per value of `column`, by value."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row[column]), []).append(i)
    return dict(sorted(groups.items()))


def write_records(records: list[Row], stem: Path) -> list[Path]:
    """Write rows as `<stem>.csv` and `<stem>.jsonl`; list values are JSON-encoded in the CSV."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, jsonl_path = stem.with_suffix(".csv"), stem.with_suffix(".jsonl")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in records)
    with jsonl_path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return [csv_path, jsonl_path]


def log_wandb_table(key: str, records: list[Row]) -> bool:
    """Log rows as a W&B table when a W&B run is active (wandb already imported); whether it was logged."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None:
        return False
    columns = list(records[0])
    run.log(
        {
            key: wandb.Table(
                columns=columns,
                data=[[json.dumps(r[c]) if isinstance(r[c], list) else r[c] for c in columns] for r in records],
            )
        }
    )
    return True


TASK_TYPES: dict[str, type[Task]] = {
    "perplexity": PerplexityTask,
    "multiple_choice": MultipleChoiceTask,
    "classification": MultipleChoiceTask,
    "generation": GenerationTask,
    "bias": BiasTask,
    "memorization": MemorizationTask,
    "human_eval": HumanEvalTask,
}


def build_task(name: str, raw: dict[str, Any]) -> Task:
    """The task a YAML mapping declares."""
    kind = raw.get("type")
    if kind not in TASK_TYPES:
        raise ConfigError(f"eval.tasks.{name}.type={kind!r} is unknown: use one of {sorted(TASK_TYPES)}")
    return TASK_TYPES[kind].from_dict(name, raw)
