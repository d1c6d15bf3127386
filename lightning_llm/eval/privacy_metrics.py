"""Canary exposure (Carlini et al., 2019, "The Secret Sharer") as pure functions, and its metric definitions.

A canary's secret s is ranked among the candidate secrets C of its template by the model's log-perplexity of the
whole sequence (lower = more likely; candidates with equal log-perplexity do not outrank s):

    exposure(s) = log2 |C| - log2 rank(s)        between 0 and log2 |C| (rank 1: the model's favourite)

The rank is exact when every candidate is scored; otherwise it is estimated from m random candidates (section
4.3 of the paper): rank ~= 1 + (|C| - 1) * (share of the m that have a lower log-perplexity than s), or the
exposure from a skew-normal fit of the m log-perplexities: -log2 P(X <= log-perplexity of s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import skewnorm

from lightning_llm.eval.metrics import METRIC_DEFINITIONS

PRIVACY_METRIC_DEFINITIONS: dict[str, str] = {
    "exposure": "mean over the inserted canaries of log2 |C| - log2 rank, the rank of the true secret among the "
    "|C| candidate secrets by the model's log-perplexity of the whole sequence (Carlini et al. 2019); exact or "
    "estimated from sampled candidates as the result's `rank_method` says; log2 |C| = fully memorised",
    "exposure_control": "the same mean over control canaries (same template, never inserted): the exposure of "
    "secrets the model never saw, about 1 bit",
    "canary_extraction_rate": "share of inserted canaries whose secret greedy decoding from the template's "
    "prefix reproduces (its first characters after leading whitespace)",
}
METRIC_DEFINITIONS.update(PRIVACY_METRIC_DEFINITIONS)


def exposure_from_rank(rank: float, space: int) -> float:
    """log2 |C| - log2 rank."""
    return math.log2(space) - math.log2(rank)


def exact_rank(secret_nll: float, candidate_nlls: Sequence[float]) -> int:
    """1 + the number of other candidates with a strictly lower log-perplexity (`candidate_nlls` excludes s)."""
    return 1 + sum(nll < secret_nll for nll in candidate_nlls)


def sampled_rank(secret_nll: float, sampled_nlls: Sequence[float], space: int) -> float:
    """1 + (|C| - 1) * (share of the sampled other candidates with a lower log-perplexity)."""
    return 1 + (space - 1) * sum(nll < secret_nll for nll in sampled_nlls) / len(sampled_nlls)


def skewnorm_exposure(secret_nll: float, sampled_nlls: Sequence[float], space: int) -> float:
    """-log2 P(X <= the secret's log-perplexity) under a skew-normal fit of the sampled log-perplexities, at most
    log2 |C| (the paper's extrapolation beyond what the sample resolves)."""
    params = skewnorm.fit(list(sampled_nlls))
    return min(math.log2(space), max(0.0, -float(skewnorm.logcdf(secret_nll, *params)) / math.log(2)))
