"""Canary exposure (Carlini et al., 2019): how much more likely the model finds the secrets inserted into its
training data (lightning_llm.data.canaries, the same settings as data.canaries) than other possible secrets."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from statistics import mean
from typing import Any

from lightning_llm.data.canaries import (
    DEFAULT_TEMPLATE,
    DIGITS,
    SECRET,
    candidate_space,
    check_canary_settings,
    make_canaries,
)
from lightning_llm.errors import ConfigError
from lightning_llm.eval.privacy_metrics import (
    exact_rank,
    exposure_from_rank,
    sampled_rank,
    skewnorm_exposure,
)
from lightning_llm.eval.tasks.base import EvalEnv, Task
from lightning_llm.models.scoring import EvalLM, GenerationSettings

ESTIMATORS = ("sampled", "skewnorm")


@dataclass
class CanaryExposureTask(Task):
    """Rank each canary's secret among the template's candidate secrets by the log-perplexity of the whole
    sequence: all of them when there are at most `exact_max`, else `n_candidates` random ones (`estimator`:
    sampled share or skew-normal fit, lightning_llm.eval.privacy_metrics). `n_control` more canaries from the same
    generator, never inserted, give the baseline. Greedy decoding from the prefix tests extraction."""

    type = "canary_exposure"
    metric_names = ("exposure", "exposure_control", "canary_extraction_rate")

    n: int = 10  # canaries inserted (data.canaries.n)
    repeats: int | list[int] = 10  # insertions per canary (data.canaries.repeats): reported per count
    seed: int = 1234  # data.canaries.seed
    template: str = DEFAULT_TEMPLATE
    length: int = 6  # characters of a secret, space-separated
    alphabet: str = DIGITS
    n_control: int = 10
    exact_max: int = 10_000  # score every candidate when the template admits at most this many
    n_candidates: int = 2_000  # random candidates otherwise
    estimator: str = "sampled"

    def check(self) -> None:
        super().check()
        self.repeats = self.repeats if isinstance(self.repeats, int) else list(self.repeats)
        check_canary_settings(
            self.n + self.n_control, self.repeats, self.template, self.length, self.alphabet, f"eval.tasks.{self.name}"
        )
        if self.n < 1 or self.n_candidates < 2:
            raise ConfigError(
                f"eval.tasks.{self.name}: n={self.n} canaries (at least 1: plant them with data.canaries.n=10) and "
                f"n_candidates={self.n_candidates} (at least 2)"
            )
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"{self.key('estimator')}={self.estimator!r} is unknown: use one of {ESTIMATORS}")
        if "exposure_control" in self.metrics and self.n_control < 1:
            raise ConfigError(f"{self.key('metrics')}: exposure_control needs n_control >= 1")

    @property
    def space(self) -> int:
        return candidate_space(self.length, self.alphabet)

    def candidates(self, seed: int) -> tuple[list[str], str]:
        """The candidate secrets scored, and how the rank is obtained from them."""
        if self.space <= self.exact_max:
            return [" ".join(chars) for chars in itertools.product(self.alphabet, repeat=self.length)], "exact"
        rng = random.Random(seed)
        drawn = [" ".join(rng.choice(self.alphabet) for _ in range(self.length)) for _ in range(self.n_candidates)]
        if self.estimator == "skewnorm":
            return drawn, f"skewnorm: skew-normal fit of {self.n_candidates} random candidates' log-perplexities"
        return (
            drawn,
            f"sampled: 1 + (|C| - 1) * share of {self.n_candidates} random candidates with lower log-perplexity",
        )

    def exposure(
        self, secret: str, nll: float, scored: list[tuple[str, float]], method: str
    ) -> tuple[float, float | None]:
        """(exposure, rank; None for the skew-normal fit) of a secret whose log-perplexity is `nll`, among the
        scored (candidate, log-perplexity) other than the secret itself."""
        others = [v for s, v in scored if s != secret]
        if method == "exact":
            rank = exact_rank(nll, others)
        elif method.startswith("skewnorm"):
            return skewnorm_exposure(nll, others, self.space), None
        else:
            rank = sampled_rank(nll, others, self.space)
        return exposure_from_rank(rank, self.space), rank

    def extracted(self, lm: EvalLM, canaries: list[dict[str, Any]], seed: int) -> list[bool]:
        """Whether greedy decoding from each canary's prefix (trailing spaces removed) starts with its secret."""
        lm.check_generation()
        prompts = [c["prefix"].rstrip() for c in canaries]
        room = max(
            len(lm.tokenizer.encode(c["text"])) - len(lm.tokenizer.encode(p))
            for c, p in zip(canaries, prompts, strict=True)
        )
        settings = GenerationSettings(max_new_tokens=room + 2, temperature=0.0)
        outputs = lm.generate_until(prompts, settings, seed, desc=f"{self.name} extraction")
        return [out.strip().startswith(c["secret"]) for out, c in zip(outputs, canaries, strict=True)]

    def run(self, lm: EvalLM, env: EvalEnv) -> dict[str, Any]:
        made = make_canaries(
            self.n + self.n_control, self.repeats, self.seed, self.template, self.length, self.alphabet
        )
        inserted, controls = made[: self.n], made[self.n :]
        secrets, method = self.candidates(env.seed)
        unique = list(dict.fromkeys(secrets))
        texts = [c["text"] for c in made] + [self.template.replace(SECRET, s) for s in unique]
        nlls = [-score.logprob for score in lm.loglikelihood_rolling(texts, desc=self.name)]
        nll_of = dict(zip(unique, nlls[len(made) :], strict=True))
        scored = [(s, nll_of[s]) for s in secrets]  # a sample keeps its repeated draws
        per_canary = []
        for i, canary in enumerate(made):
            exposure, rank = self.exposure(canary["secret"], nlls[i], scored, method)
            per_canary.append(
                {
                    "secret": canary["secret"],
                    "inserted": i < self.n,
                    "repeats": canary["repeats"] if i < self.n else 0,
                    "log_perplexity": round(nlls[i], 6),
                    "rank": rank if rank is None else round(rank, 3),
                    "exposure": round(exposure, 6),
                }
            )
        values = {
            "exposure": mean(c["exposure"] for c in per_canary[: self.n]),
            "exposure_control": mean(c["exposure"] for c in per_canary[self.n :]) if controls else 0.0,
        }
        if "canary_extraction_rate" in self.metrics:
            hits = self.extracted(lm, inserted, env.seed)
            for entry, hit in zip(per_canary[: self.n], hits, strict=True):
                entry["extracted"] = hit
            values["canary_extraction_rate"] = sum(hits) / len(hits)
        by_repeats: dict[int, list[float]] = {}
        for entry in per_canary:
            by_repeats.setdefault(entry["repeats"], []).append(entry["exposure"])
        return {
            "metrics": {m: round(values[m], 6) for m in self.metrics},
            "n_samples": len(made),
            "candidates": {"space": self.space, "max_exposure": round(exposure_from_rank(1, self.space), 6)},
            "rank_method": method,
            "exposure_by_repeats": {str(k): round(mean(v), 6) for k, v in sorted(by_repeats.items())},
            "canaries": per_canary,
        }

    def describe(self) -> dict[str, Any]:
        settings = {k: getattr(self, k) for k in ("n", "repeats", "seed", "template", "length", "alphabet")}
        return {**super().describe(), "canary_settings": settings, "n_control": self.n_control}
