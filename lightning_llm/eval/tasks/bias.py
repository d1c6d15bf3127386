"""Bias: CrowS-Pairs style sentence pairs; how often the model prefers the more stereotyping sentence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_llm.eval.tasks.base import DataTask, EvalEnv, group_indices
from lightning_llm.models.scoring import EvalLM


@dataclass
class BiasTask(DataTask):
    """Each sentence scored whole (rolling log-likelihood); per group when `group_by` names a column."""

    type = "bias"
    metric_names = ("pct_stereotype", "likelihood_diff")

    more_column: str = "sent_more"
    less_column: str = "sent_less"
    group_by: str | None = None

    def check(self) -> None:
        self.columns = list(dict.fromkeys([*self.columns, self.more_column, self.less_column]))
        super().check()

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        rows, _ = self.load(env)
        sentences = [row[self.more_column] for row in rows] + [row[self.less_column] for row in rows]
        scores = [s.logprob for s in lm.loglikelihood_rolling(sentences, desc=self.name)]
        more, less = scores[: len(rows)], scores[len(rows) :]

        def stats(idx: list[int]) -> dict[str, float]:
            return {
                "pct_stereotype": round(sum(more[i] > less[i] for i in idx) / len(idx), 6),
                "likelihood_diff": round(sum(abs(more[i] - less[i]) for i in idx) / len(idx), 6),
            }

        result = {"metrics": stats(list(range(len(rows)))), "n_samples": len(rows)}
        if self.group_by and self.group_by in rows[0]:
            result["groups"] = {
                g: {**stats(idx), "n": len(idx)} for g, idx in group_indices(rows, self.group_by).items()
            }
        return result

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "scoring": "log-likelihood of each whole sentence (rolling, from <s>)"}
