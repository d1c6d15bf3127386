"""What every evaluation task shares: its settings as dataclass fields, loading rows, few-shot prompts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lightning_llm.data.corpus import is_embedded
from lightning_llm.data.loading import load_rows, looks_local
from lightning_llm.data.splits import split_documents
from lightning_llm.errors import ConfigError
from lightning_llm.eval.metrics import METRIC_DEFINITIONS
from lightning_llm.eval.prompts import PROCESS_DOCS, FewShotSampler, HarnessFewShotSampler, fewshot_prompt, render
from lightning_llm.models.scoring import EvalLM

Row = dict[str, Any]


@dataclass
class EvalEnv:
    """What every task may use besides the model: the seed, where files go, the cache, the training texts (the
    run's training documents: memorization samples them, a held-out split never scores them)."""

    seed: int
    output_dir: Path
    cache_dir: str
    train_texts: list[str] | None = None


@dataclass
class Task:
    """A configured task (a YAML in conf/eval/tasks/ names its class with `_target_`); `run(lm, env)` returns
    its metrics, sample count and what it scored. Fields are the YAML's keys; `check` validates them."""

    type: ClassVar[str]  # reported with the results
    metric_names: ClassVar[tuple[str, ...]] = ()
    needs_train_texts: ClassVar[bool] = False  # an evaluation-only run loads the training data only for these

    name: str = ""  # the key under eval.tasks
    metrics: list[str] = field(default_factory=list)  # default: all the type computes
    primary_metric: str | None = None  # the one the summary uses; default the first metric
    random_baseline: float | None = None  # chance level of the primary metric; set: the task joins the average
    limit: int | None = None  # at most this many items

    def __post_init__(self) -> None:
        self.check()

    def key(self, option: str) -> str:
        return f"eval.tasks.{self.name}.{option}"

    def check(self) -> None:
        """Validate the settings (fail fast, before any model work); fill metric defaults."""
        self.metrics = list(self.metrics or self.default_metrics())
        for name in self.metrics:
            if name not in self.metric_names:
                raise ConfigError(
                    f"{self.key('metrics')}: {name!r} is not a metric of {self.type}: use {self.metric_names}"
                )
        self.primary_metric = self.primary_metric or (self.metrics[0] if self.metrics else None)
        if self.primary_metric is not None and self.primary_metric not in self.metrics:
            raise ConfigError(
                f"{self.key('primary_metric')}={self.primary_metric!r} is not among metrics {self.metrics}"
            )
        if self.random_baseline is not None and not 0 <= self.random_baseline < 1:
            raise ConfigError(f"{self.key('random_baseline')}={self.random_baseline} must be in [0, 1)")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{self.key('limit')}={self.limit} must be at least 1")

    def default_metrics(self) -> tuple[str, ...]:
        return self.metric_names

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the result reports besides the scores: metric definitions, the summary's metric and baseline."""
        return {
            "primary_metric": self.primary_metric,
            "random_baseline": self.random_baseline,
            "metric_definitions": {m: METRIC_DEFINITIONS[m] for m in self.metrics},
        }


@dataclass
class DataTask(Task):
    """A task over table rows: a hub dataset (online) or a local file with the same columns."""

    dataset: str | None = None  # a datasets name
    dataset_name: str | None = None  # its configuration
    split: str = "test"
    fewshot_split: str | None = None
    path: str | None = None  # a local file/folder or embedded corpus; replaces `dataset`
    fewshot_path: str | None = None
    columns: list[str] = field(default_factory=list)  # the columns a row must have
    holdout_fraction: float | None = None  # evaluate only this held-out part, less any document the run trained on
    holdout_seed: int = 1234
    process_docs: str | None = None  # a row preprocessor of lightning_llm.eval.prompts.PROCESS_DOCS

    def __post_init__(self) -> None:
        super().__post_init__()
        self.heldout: dict[str, Any] | None = None  # what a held-out split scored (set by `load`)

    def check(self) -> None:
        super().check()
        self.columns = list(self.columns)
        for option in ("path", "fewshot_path"):
            path = getattr(self, option)
            if path and not is_embedded(path) and looks_local(path) and not Path(path).expanduser().exists():
                raise ConfigError(f"{self.key(option)}={path!r} does not exist: give an existing file or folder")
        if not self.has_source():
            raise ConfigError(f"eval.tasks.{self.name}: set path (a local file) or dataset (a datasets name)")
        if self.process_docs is not None and self.process_docs not in PROCESS_DOCS:
            raise ConfigError(
                f"{self.key('process_docs')}={self.process_docs!r} is unknown: use one of {list(PROCESS_DOCS)}"
            )

    def has_source(self) -> bool:
        return bool(self.path or self.dataset)

    def _table(self, source: str, name: str | None, split: str, option: str, env: EvalEnv):
        try:
            ds = load_rows(source, name, split, Path(env.cache_dir))
        except ConfigError as err:
            raise ConfigError(str(err).replace("data.path", self.key(option))) from err
        missing = [c for c in self.columns if c not in ds.column_names]
        if missing:
            raise ConfigError(
                f"{self.key(option)}={source!r} lacks column {missing[0]!r}: its columns are {ds.column_names}"
            )
        return ds

    def _rows(self, ds) -> list[Row]:
        rows = ds.to_list()
        process = PROCESS_DOCS.get(self.process_docs or "")
        return [process(row) for row in rows] if process else rows

    def row_texts(self, row: Row) -> list[str]:
        """The texts of a row that make it a training document when the run trained on one of them."""
        return [value for value in row.values() if isinstance(value, str)]

    def _held_out(self, ds, env: EvalEnv) -> tuple[list[Row], Any]:
        """(rows, few-shot pool) of the held-out split: rows the run trained on (`env.train_texts`) are dropped,
        and `heldout` records which rows of the table were scored (their indices) and how many were dropped."""
        numbered = ds.add_column("_row", list(range(len(ds))))
        pool, held = split_documents(numbered, self.holdout_fraction, self.holdout_seed, self.path or self.dataset)
        indices, rows = held["_row"], self._rows(held.remove_columns("_row"))
        trained = {hash(text.strip()) for text in env.train_texts} if env.train_texts else set()
        honest = [i for i, row in enumerate(rows) if not any(hash(t.strip()) in trained for t in self.row_texts(row))]
        kept = honest[: self.limit] if self.limit else honest
        self.heldout = {
            "fraction": self.holdout_fraction,
            "seed": self.holdout_seed,
            "rows_scored": [indices[i] for i in kept],  # positions in the table (after the task's own filter)
            "training_rows_dropped": len(rows) - len(honest) if env.train_texts else None,  # None: not known
        }
        return [rows[i] for i in kept], pool.remove_columns("_row")

    def load(
        self, env: EvalEnv, need_pool: bool = False, keep: Callable[[Row], bool] | None = None
    ) -> tuple[list[Row], list[Row] | None]:
        """(eval rows, few-shot pool or None). `keep` filters rows before the held-out split."""
        if self.path:
            ds = self._table(self.path, None, "train", "path", env)
        else:
            ds = self._table(self.dataset, self.dataset_name, self.split, "dataset", env)
        if keep is not None:
            ds = ds.filter(keep)
        pool_ds = None
        if self.holdout_fraction:
            rows, pool_ds = self._held_out(ds, env)
        else:
            rows = self._rows(ds.select(range(min(self.limit, len(ds)))) if self.limit else ds)
        if not rows:
            dropped = self.heldout and self.heldout["training_rows_dropped"]
            why = ": the run trained on every held-out row" if dropped else ""
            raise ConfigError(f"eval.tasks.{self.name}: no rows to evaluate in {self.path or self.dataset!r}{why}")
        if not need_pool:
            return rows, None
        if self.fewshot_path:
            pool_ds = self._table(self.fewshot_path, None, "train", "fewshot_path", env)
        elif pool_ds is None and not self.path and self.fewshot_split:
            pool_ds = self._table(self.dataset, self.dataset_name, self.fewshot_split, "fewshot_split", env)
        return rows, self._rows(pool_ds if pool_ds is not None else ds)

    def describe(self) -> dict[str, Any]:
        source = (
            {"path": self.path}
            if self.path
            else {"dataset": self.dataset, "name": self.dataset_name, "split": self.split}
        )
        if self.holdout_fraction:
            source["holdout"] = self.heldout or {"fraction": self.holdout_fraction, "seed": self.holdout_seed}
        return {**super().describe(), "data": source}


@dataclass
class PromptTask(DataTask):
    """A task whose items are prompts: Jinja templates, description, few-shot examples, the item's context."""

    prompt_fields: ClassVar[tuple[str, ...]] = ("description", "context", "target_delimiter", "fewshot_delimiter")

    description: str = ""
    context: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    num_fewshot: int = 0
    fewshot_match: str | None = None  # shots only from rows with the same value in this column
    # per_item: each item's shots from its own seeded draw (independent of the other items); harness: drawn as
    # lm-evaluation-harness draws them (one generator, in item order), for scores that match it item for item
    fewshot_sampler: str = "per_item"

    def check(self) -> None:
        super().check()
        if self.num_fewshot < 0:
            raise ConfigError(f"{self.key('num_fewshot')}={self.num_fewshot} must be 0 or more")
        if self.fewshot_sampler not in ("per_item", "harness"):
            raise ConfigError(f"{self.key('fewshot_sampler')}={self.fewshot_sampler!r} is unknown: per_item or harness")
        if self.fewshot_sampler == "harness" and self.fewshot_match:
            raise ConfigError(f"{self.key('fewshot_match')} needs fewshot_sampler=per_item (the harness has no match)")

    def sampler(self, pool: list[Row] | None, env: EvalEnv) -> FewShotSampler | HarnessFewShotSampler | None:
        if pool is None:
            return None
        if self.fewshot_sampler == "harness":
            separate = self.fewshot_path or self.holdout_fraction or (self.fewshot_split and not self.path)
            return HarnessFewShotSampler(pool, env.seed, pool_is_eval_set=not separate)
        return FewShotSampler(pool, env.seed, self.fewshot_match)

    def row_texts(self, row: Row) -> list[str]:
        """The item's context as the model reads it (a supervised run trained on such prompts)."""
        return [render(self.context, row)]

    def solved(self, row: Row) -> str:
        """A row as a few-shot example: its context, the target delimiter and its answer."""
        raise NotImplementedError

    def prefix(self, row: Row, index: int, sampler: FewShotSampler | HarnessFewShotSampler | None) -> str:
        """The description and the few-shot examples that precede an item's context."""
        shots = sampler.sample(row, index, self.num_fewshot) if sampler else []
        solved = [self.solved(s) for s in shots]
        return fewshot_prompt(render(self.description, row), solved, "", self.fewshot_delimiter)

    def describe(self) -> dict[str, Any]:
        prompt_format = {k: getattr(self, k) for k in self.prompt_fields if getattr(self, k) is not None}
        prompt_format["layout"] = "description + (solved example + fewshot_delimiter) * num_fewshot + context"
        return {**super().describe(), "num_fewshot": self.num_fewshot, "prompt_format": prompt_format}


def group_indices(rows: list[Row], column: str) -> dict[str, list[int]]:
    """Row indices per value of `column`, by value."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row[column]), []).append(i)
    return dict(sorted(groups.items()))
