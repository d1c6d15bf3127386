"""Gopher quality and repetition rules (Rae et al. 2021, "Scaling Language Models", appendix A.1.1-A.1.2).

`gopher_reasons(texts, settings)` names, for each text, the first rule it fails (None: it passes).
Every threshold is a setting; None disables that rule. Words are whitespace-separated tokens, as in the paper.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np

from lightning_llm.data.pipeline.text import ngram_hashes

GOPHER_SETTINGS: dict[str, Any] = {
    "min_chars": None,
    "max_chars": None,
    "min_words": 50,
    "max_words": 100_000,
    "min_mean_word_length": 3.0,
    "max_mean_word_length": 10.0,
    "max_symbol_word_ratio": 0.1,  # "#" and "..." / "…" per word
    "max_bullet_lines_fraction": 0.9,
    "max_ellipsis_lines_fraction": 0.3,
    "min_alpha_words_fraction": 0.8,  # words with at least one alphabetic character
    "min_stop_words": 2,  # occurrences of the, be, to, of, and, that, have, with
    "max_duplicate_lines_fraction": 0.3,
    "max_duplicate_line_chars_fraction": 0.2,
    "max_duplicate_paragraphs_fraction": 0.3,
    "max_duplicate_paragraph_chars_fraction": 0.2,
    "max_top_2gram_chars_fraction": 0.2,
    "max_top_3gram_chars_fraction": 0.18,
    "max_top_4gram_chars_fraction": 0.16,
    "max_duplicate_5gram_chars_fraction": 0.15,
    "max_duplicate_6gram_chars_fraction": 0.14,
    "max_duplicate_7gram_chars_fraction": 0.13,
    "max_duplicate_8gram_chars_fraction": 0.12,
    "max_duplicate_9gram_chars_fraction": 0.11,
    "max_duplicate_10gram_chars_fraction": 0.10,
}

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "‣", "◦", "●", "▪", "-", "*", "–")
_LETTER = re.compile(r"[^\W\d_]")
_STOP_WORD = re.compile(rf"\b(?:{'|'.join(sorted(STOP_WORDS))})\b", re.IGNORECASE)
_PARAGRAPHS = re.compile(r"\n\s*\n")


def _above(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def _below(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit


def duplicate_fractions(parts: list[str], total_chars: int) -> tuple[float, float]:
    """(fraction of `parts` equal to an earlier part, fraction of `total_chars` in those repeats)."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count / max(1, len(parts)), chars / max(1, total_chars)


def ngram_char_fractions(
    hashes: np.ndarray, lengths: np.ndarray, words_per_text: np.ndarray, sizes: list[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Word n-gram repetition in a batch of texts, given the hashes and lengths of all their words, one text
    after the other, and how many words each text has: for each n in `sizes`, two arrays with a value per text:

    - top: the characters in all occurrences of its most frequent n-gram (ties: the longest), if it occurs twice
      or more, as a fraction of the text's word characters;
    - duplicate: the fraction of its word characters covered by n-grams that occur more than once in it.

    Vectorised over the batch; an n-gram can repeat only where the (n-1)-gram at the same place repeats, so each
    larger n only looks at the places where the smaller one repeated."""
    n_texts = len(words_per_text)
    text_of_word = np.repeat(np.arange(n_texts), words_per_text)
    ends = np.cumsum(words_per_text)
    totals = np.maximum(np.bincount(text_of_word, weights=lengths, minlength=n_texts), 1)
    cumulative = np.concatenate([[0], np.cumsum(lengths)])
    starts, texts = np.arange(len(hashes)), text_of_word  # where a repeated n-gram may begin
    result = {}
    for n in range(min(sizes), max(sizes) + 1):
        fits = starts + n <= ends[texts]
        starts, texts = starts[fits], texts[fits]
        keyed = ngram_hashes(hashes, n, starts=starts) + texts.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        _, inverse, counts = np.unique(keyed, return_inverse=True, return_counts=True)
        count = counts[inverse]
        repeated = count > 1
        starts, texts, count = starts[repeated], texts[repeated], count[repeated]
        if n not in sizes:
            continue
        most = np.zeros(n_texts, dtype=np.int64)
        np.maximum.at(most, texts, count)
        is_top = count == most[texts]
        chars = cumulative[starts[is_top] + n] - cumulative[starts[is_top]]
        best = np.zeros(n_texts, dtype=np.int64)
        np.maximum.at(best, texts[is_top], count[is_top] * chars)
        cover = np.zeros(len(hashes) + 1, dtype=np.int64)
        np.add.at(cover, starts, 1)
        np.add.at(cover, starts + n, -1)
        covered = np.cumsum(cover[:-1]) > 0
        duplicate = np.bincount(text_of_word[covered], weights=lengths[covered], minlength=n_texts)
        result[n] = (best / totals, duplicate / totals)
    return result


def _document_reason(text: str, tokens: list[str], s: Mapping[str, Any]) -> str | None:
    """The first failed rule among those that look at one document at a time (all but the n-gram rules)."""
    n_chars, n_words = len(text), len(tokens)
    if _below(n_chars, s["min_chars"]):
        return "min_chars"
    if _above(n_chars, s["max_chars"]):
        return "max_chars"
    if _below(n_words, s["min_words"]):
        return "min_words"
    if _above(n_words, s["max_words"]):
        return "max_words"
    if n_words == 0:
        return None
    mean_length = sum(map(len, tokens)) / n_words
    if _below(mean_length, s["min_mean_word_length"]):
        return "min_mean_word_length"
    if _above(mean_length, s["max_mean_word_length"]):
        return "max_mean_word_length"
    symbols = text.count("#") + text.count("...") + text.count("…")
    if _above(symbols / n_words, s["max_symbol_word_ratio"]):
        return "max_symbol_word_ratio"
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    if lines:
        if _above(sum(line.startswith(BULLETS) for line in lines) / len(lines), s["max_bullet_lines_fraction"]):
            return "max_bullet_lines_fraction"
        ellipsis = sum(line.endswith(("...", "…")) for line in lines) / len(lines)
        if _above(ellipsis, s["max_ellipsis_lines_fraction"]):
            return "max_ellipsis_lines_fraction"
    alpha_words = sum(1 for t in tokens if t.isalpha() or _LETTER.search(t))
    if _below(alpha_words / n_words, s["min_alpha_words_fraction"]):
        return "min_alpha_words_fraction"
    if s["min_stop_words"] is not None and len(_STOP_WORD.findall(text)) < s["min_stop_words"]:
        return "min_stop_words"
    for unit, parts in (("line", lines), ("paragraph", [p.strip() for p in _PARAGRAPHS.split(text) if p.strip()])):
        count_fraction, char_fraction = duplicate_fractions(parts, n_chars)
        if _above(count_fraction, s[f"max_duplicate_{unit}s_fraction"]):
            return f"max_duplicate_{unit}s_fraction"
        if _above(char_fraction, s[f"max_duplicate_{unit}_chars_fraction"]):
            return f"max_duplicate_{unit}_chars_fraction"
    return None


def gopher_reasons(texts: list[str], settings: Mapping[str, Any]) -> list[str | None]:
    """For each text, the name of the first rule it fails (its setting's name), or None when it passes all."""
    tokens = [text.split() for text in texts]
    reasons = [_document_reason(text, t, settings) for text, t in zip(texts, tokens, strict=True)]
    rules = [
        (n, key, settings.get(key))
        for n in range(2, 11)
        for key in (f"max_top_{n}gram_chars_fraction", f"max_duplicate_{n}gram_chars_fraction")
        if settings.get(key) is not None
    ]
    pending = [i for i, reason in enumerate(reasons) if reason is None and tokens[i]]
    if not rules or not pending:
        return reasons
    pending_tokens = [tokens[i] for i in pending]
    words_per_text = np.fromiter(map(len, pending_tokens), dtype=np.int64, count=len(pending))
    flat_tokens = list(chain.from_iterable(pending_tokens))
    # Only equality of words matters here, so Python's (per-process salted) str hash is fine and fast.
    hashes = np.fromiter(map(hash, flat_tokens), dtype=np.int64, count=len(flat_tokens)).view(np.uint64)
    lengths = np.fromiter(map(len, flat_tokens), dtype=np.int64, count=len(flat_tokens))
    fractions = ngram_char_fractions(hashes, lengths, words_per_text, sorted({n for n, _, _ in rules}))
    failed: dict[int, str] = {}  # position in `pending` -> first failed n-gram rule
    for n, key, limit in rules:
        top, duplicate = fractions[n]
        for j in np.flatnonzero((top if "_top_" in key else duplicate) > limit):
            failed.setdefault(int(j), key)
    for j, key in failed.items():
        reasons[pending[j]] = key
    return reasons


def gopher_reason(text: str, settings: Mapping[str, Any]) -> str | None:
    """`gopher_reasons` for one text."""
    return gopher_reasons([text], settings)[0]
