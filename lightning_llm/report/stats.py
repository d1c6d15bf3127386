"""Seeds as statistics: summaries of repeated runs and Welch's t-test between configurations (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """n values: their mean, sample standard deviation (ddof=1) and 95% confidence interval (t distribution)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def std(values: list[float]) -> float | None:
    """Sample standard deviation (ddof=1); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """mean ± t_{(1+level)/2, n-1} · s / sqrt(n); None for fewer than two values."""
    s = std(values)
    if s is None:
        return None
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, len(values) - 1)) * s / math.sqrt(len(values))
    m = mean(values)
    return m - half, m + half


def summarize(values: list[float]) -> Summary:
    """n, mean, std and 95% CI of `values` (at least one)."""
    ci = confidence_interval(values)
    return Summary(len(values), mean(values), std(values), *(ci if ci else (None, None)))


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when it is undefined (n < 2, no variance)."""
    if len(a) < 2 or len(b) < 2 or std(a) == std(b) == 0:
        return None
    from scipy.stats import ttest_ind

    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def compare_in_words(name_a: str, a: list[float], name_b: str, b: list[float], alpha: float = ALPHA) -> str:
    """One sentence: which configuration is lower and whether that is significant at `alpha`."""
    counts = f"n={len(a)} vs {len(b)}"
    p = welch_p(a, b)
    if p is None:
        return f"{name_a} vs {name_b}: cannot be tested (needs two values each with some variance, {counts})"
    if p < alpha:
        (low, low_values), (high, high_values) = sorted([(name_a, a), (name_b, b)], key=lambda item: mean(item[1]))
        return f"{low} is lower than {high} (p={p:.3g} < {alpha:g}, n={len(low_values)} vs {len(high_values)})"
    return f"{name_a} vs {name_b}: no significant difference (p={p:.3g} ≥ {alpha:g}, {counts})"
