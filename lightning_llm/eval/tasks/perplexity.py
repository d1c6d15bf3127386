"""Perplexity: log-likelihood of whole documents in sliding windows; perplexities and bits per byte."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_llm.eval.metrics import perplexity_metrics
from lightning_llm.eval.tasks.base import DataTask, EvalEnv
from lightning_llm.models.scoring import EvalLM


@dataclass
class PerplexityTask(DataTask):
    """Every document scored once in windows of at most the model's context (`stride` new tokens each)."""

    type = "perplexity"
    metric_names = ("bits_per_byte", "byte_perplexity", "word_perplexity", "token_perplexity")

    text_column: str = "text"
    stride: int | None = None  # new tokens per window; default the model's context

    def check(self) -> None:
        self.columns = [self.text_column]
        super().check()

    def row_texts(self, row: dict[str, Any]) -> list[str]:
        return [str(row[self.text_column])]

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        column = self.text_column
        rows, _ = self.load(env, keep=lambda row: bool(row[column] and str(row[column]).strip()))
        texts = [str(row[column]) for row in rows]
        stride = lm.effective_stride(self.stride)
        scores = lm.loglikelihood_rolling(texts, stride, desc=self.name)
        nll = -sum(s.logprob for s in scores)
        tokens = sum(s.n_tokens for s in scores)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        words = sum(len(t.split()) for t in texts)
        metrics = perplexity_metrics(nll, tokens, words, n_bytes)
        return {
            "metrics": {m: metrics[m] for m in self.metrics},
            "n_samples": len(texts),
            "totals": {"nll": nll, "tokens": tokens, "words": words, "bytes": n_bytes},
            "windows": {**lm.describe(), "stride": stride},
        }
