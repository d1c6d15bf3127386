"""Group fairness of a classifier: per-group accuracy and F1, demographic parity, equalized odds, and bias
amplification against a reference (training) co-occurrence of groups and labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_llm.data.loading import looks_local
from lightning_llm.data.synthetic import SYNTHETIC_TABLES, synthetic
from lightning_llm.errors import ConfigError
from lightning_llm.eval.fairness_metrics import (
    bias_amplification,
    demographic_parity,
    directional_bias_amplification,
    equalized_odds,
    group_rates,
)
from lightning_llm.eval.metrics import classification_metrics
from lightning_llm.eval.tasks.base import EvalEnv, Row, group_indices
from lightning_llm.eval.tasks.choice import ChoiceItem, ClassificationTask, classify_with_head
from lightning_llm.models.scoring import EvalLM


@dataclass
class GroupFairnessTask(ClassificationTask):
    """Classify rows as ClassificationTask does (label-word log-likelihoods, or the fine-tuned head), then compare
    the groups of `group_column`; `positive_label` (an index or a label word) is the favourable outcome.

    Rows come from `path`/`dataset`, or from a generator of lightning_llm.data.synthetic (`synthetic`, with
    `synthetic_options`). Bias amplification compares the predictions with a reference co-occurrence of groups
    and gold labels: `reference_path` (a file with the same columns), the synthetic `reference` split, or else
    the evaluated rows' own gold labels.
    """

    type = "group_fairness"
    metric_names = (
        "acc",
        "f1",
        "demographic_parity_difference",
        "demographic_parity_ratio",
        "equalized_odds_difference",
        "equal_opportunity_difference",
        "worst_group_acc",
        "bias_amplification",
        "bias_amp_a_to_t",
    )

    group_column: str = "group"
    positive_label: int | str = 1
    reference_path: str | None = None
    synthetic: str | None = None  # a generator of lightning_llm.data.synthetic.SYNTHETIC_TABLES
    synthetic_options: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        self.synthetic_options = dict(self.synthetic_options)
        super().check()
        if self.synthetic and self.synthetic not in SYNTHETIC_TABLES:
            raise ConfigError(
                f"{self.key('synthetic')}={self.synthetic!r} is unknown: use one of {sorted(SYNTHETIC_TABLES)}"
            )
        path = self.reference_path
        if path and looks_local(path) and not Path(path).expanduser().exists():
            raise ConfigError(f"{self.key('reference_path')}={path!r} does not exist: give an existing file")

    def default_metrics(self) -> tuple[str, ...]:
        return self.metric_names

    def has_source(self) -> bool:
        return bool(self.synthetic) or super().has_source()

    def _synthetic_rows(self, split: str) -> list[Row]:
        options = {**self.synthetic_options, "split": split}
        return synthetic(SYNTHETIC_TABLES, self.synthetic, options, self.key("synthetic"))

    def load(
        self, env: EvalEnv, need_pool: bool = False, keep: Callable[[Row], bool] | None = None
    ) -> tuple[list[Row], list[Row] | None]:
        if not self.synthetic:
            return super().load(env, need_pool, keep)
        rows = self._synthetic_rows("eval")
        rows = rows[: self.limit] if self.limit else rows
        return rows, (rows if need_pool else None)

    def source(self) -> str:
        return f"synthetic:{self.synthetic}" if self.synthetic else str(self.path or self.dataset)

    def reference_rows(self, rows: list[Row], env: EvalEnv) -> tuple[list[Row], str]:
        """The rows whose (group, gold label) co-occurrence is the reference, and where they come from."""
        if self.reference_path:
            return self._table(self.reference_path, None, "train", "reference_path", env).to_list(), self.reference_path
        if self.synthetic:
            return self._synthetic_rows("reference"), f"synthetic:{self.synthetic} (reference split)"
        return rows, "the evaluated rows' gold labels"

    def positive_index(self, choices: list[str]) -> int:
        label = self.positive_label
        index = choices.index(label) if isinstance(label, str) and label in choices else label
        if not isinstance(index, int) or not 0 <= index < len(choices):
            raise ConfigError(f"{self.key('positive_label')}={label!r} is not a class index or one of {choices}")
        return index

    def predict(self, lm: EvalLM, items: list[ChoiceItem]) -> list[int]:
        """The predicted class of each item: the fine-tuned head's, or the label word of highest log-likelihood."""
        if self.use_task_head:
            num_classes = max(len(item.choices) for item in items)
            return classify_with_head(lm, [item.contexts[0] for item in items], num_classes, self.name)
        requests = [(c, x) for item in items for c, x in zip(item.contexts, item.continuations, strict=True)]
        scores = iter(lm.loglikelihood(requests, desc=self.name))
        lls = [[next(scores).logprob for _ in item.choices] for item in items]
        return [max(range(len(ll)), key=ll.__getitem__) for ll in lls]

    def groups_of(self, rows: list[Row], option: str) -> list[str]:
        if rows and self.group_column not in rows[0]:
            raise ConfigError(
                f"{self.key('group_column')}={self.group_column!r} is not a column of {option}: "
                f"its columns are {list(rows[0])}"
            )
        return [str(row[self.group_column]) for row in rows]

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        rows, pool = self.load(env, need_pool=self.num_fewshot > 0)
        groups = self.groups_of(rows, self.source())
        sampler = self.sampler(pool, env)
        items = [self.item(row, i, sampler) for i, row in enumerate(rows)]
        choices = items[0].choices
        positive = self.positive_index(choices)
        reference, reference_source = self.reference_rows(rows, env)
        reference_groups = self.groups_of(reference, reference_source)
        reference_pairs = [
            (g, str(self.choices_and_gold(r)[1])) for g, r in zip(reference_groups, reference, strict=True)
        ]
        golds = [item.gold for item in items]
        preds = self.predict(lm, items)
        num_classes = max(len(item.choices) for item in items)
        rates = group_rates(preds, golds, groups, positive)
        per_group = {
            g: {
                **classification_metrics([preds[i] for i in idx], [golds[i] for i in idx], num_classes, ["acc", "f1"]),
                **{k: None if v is None else round(v, 6) for k, v in rates[g].items()},
                "n": len(idx),
            }
            for g, idx in group_indices(rows, self.group_column).items()
        }
        dp_difference, dp_ratio = demographic_parity(rates)
        eo_difference, eopp_difference = equalized_odds(rates)
        truth = [(g, str(y)) for g, y in zip(groups, golds, strict=True)]
        predicted = [(g, str(p)) for g, p in zip(groups, preds, strict=True)]
        values = {
            **classification_metrics(preds, golds, num_classes, ["acc", "f1"]),
            "demographic_parity_difference": dp_difference,
            "demographic_parity_ratio": dp_ratio,
            "equalized_odds_difference": eo_difference,
            "equal_opportunity_difference": eopp_difference,
            "worst_group_acc": min(stats["acc"] for stats in per_group.values()),
            "bias_amplification": bias_amplification(reference_pairs, predicted),
            "bias_amp_a_to_t": directional_bias_amplification(reference_pairs, truth, predicted, "a_to_t"),
        }
        return {
            "metrics": {m: round(float(values[m]), 6) for m in self.metrics},
            "n_samples": len(items),
            "groups": per_group,
            "labels": choices,
            "positive_label": choices[positive],
            "reference": {"source": reference_source, "n": len(reference_pairs)},
            "example": {"context": items[0].contexts[0], "continuations": items[0].continuations, "gold": golds[0]},
        }

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "group_column": self.group_column}
        if self.synthetic:
            out["data"] = {"synthetic": self.synthetic, "options": self.synthetic_options}
        return out
