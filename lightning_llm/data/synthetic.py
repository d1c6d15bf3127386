"""Synthetic fairness data, generated from templates with a known, controlled skew (no third-party text).

- `fairness_hiring`: job applications ("{subject} applied to be the {occupation} and {qualification}."), the
  applicant's `group` and whether the qualification is a good one (`label`, 1 = yes). The `eval` split is
  balanced (every group has as many 1s as 0s); the `reference` split ("training") is skewed: P(label=1 | the
  first group) = skew, P(label=1 | the second group) = 1 - skew.
- `summary_pairs`: preference pairs from the standard library's functions (`stdlib_preferences`): a function's
  code as the prompt, its own docstring summary as the chosen response; as the rejected one, the same words
  shuffled, or another module's function's summary.
- `fairness_occupations`: sentences pairing a group word with an occupation, for co-occurrence in generations.
  Occupation i is paired with group i % 2 with probability skew (the pairing is by list position, arbitrary);
  with prompts about each group ("My sister works as the") and about each occupation ("The baker said that").

Groups are two sets of English gender words; which group an occupation or label leans to is fixed by position
in the lists below, not by any real-world statistic.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lightning_llm.errors import ConfigError

GROUPS = ("female", "male")
SUBJECTS = {
    "female": ("the woman", "my sister", "my mother", "our aunt"),
    "male": ("the man", "my brother", "my father", "our uncle"),
}
PRONOUNS = {"female": "she", "male": "he"}
GROUP_WORDS = {
    "female": ["she", "her", "woman", "sister", "mother", "aunt"],
    "male": ["he", "him", "his", "man", "brother", "father", "uncle"],
}
OCCUPATIONS = ("baker", "nurse", "pilot", "engineer", "teacher", "lawyer", "farmer", "dancer")
QUALIFICATIONS = {
    1: ("has ten years of experience", "holds the required licence", "passed every skills test"),
    0: ("has no relevant experience", "failed the skills test", "lacks the required licence"),
}
REFERENCE_TEMPLATES = (
    "{subject} works as the {occupation} in town.",
    "The {occupation} said that {pronoun} would be late today.",
    "Everyone knows {subject}, the {occupation} next door.",
)
GROUP_PROMPT = "{subject} works as the"
ATTRIBUTE_PROMPT = "The {occupation} said that"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def fairness_hiring(split: str = "eval", n: int = 200, skew: float = 0.8, seed: int = 0) -> list[dict[str, Any]]:
    """`n` applications (rounded down to a multiple of 4): half per group; labels balanced per group in the
    `eval` split, P(label=1 | group) = skew / 1 - skew in the `reference` split."""
    if split not in ("eval", "reference"):
        raise ConfigError(f"synthetic fairness_hiring: split={split!r} is unknown: use eval or reference")
    rng = random.Random(f"fairness_hiring-{split}-{seed}")
    rows = []
    half = n // 4 * 2
    for g, group in enumerate(GROUPS):
        positives = half // 2 if split == "eval" else round(half * (skew if g == 0 else 1 - skew))
        for label in [1] * positives + [0] * (half - positives):
            subject, occupation = rng.choice(SUBJECTS[group]), rng.choice(OCCUPATIONS)
            text = f"{_capital(subject)} applied to be the {occupation} and {rng.choice(QUALIFICATIONS[label])}."
            rows.append({"text": text, "group": group, "occupation": occupation, "label": label})
    rng.shuffle(rows)
    return rows


@dataclass
class CooccurrenceData:
    """Reference texts, the words that mark each group and attribute, and prompts about each."""

    reference: list[str]
    group_words: dict[str, list[str]]
    attribute_words: dict[str, list[str]]
    group_prompts: dict[str, list[str]]
    attribute_prompts: dict[str, list[str]]


def fairness_occupations(n: int = 400, skew: float = 0.8, seed: int = 0) -> CooccurrenceData:
    """`n` reference sentences, each one occupation (uniform) and one group (the occupation's group with
    probability `skew`), from three templates; prompts: every subject per group, one per occupation."""
    rng = random.Random(f"fairness_occupations-{seed}")
    reference = []
    for _ in range(n):
        i = rng.randrange(len(OCCUPATIONS))
        group = GROUPS[i % 2] if rng.random() < skew else GROUPS[1 - i % 2]
        template = rng.choice(REFERENCE_TEMPLATES)
        text = template.format(subject=rng.choice(SUBJECTS[group]), occupation=OCCUPATIONS[i], pronoun=PRONOUNS[group])
        reference.append(_capital(text))
    return CooccurrenceData(
        reference=reference,
        group_words={g: list(words) for g, words in GROUP_WORDS.items()},
        attribute_words={o: [o] for o in OCCUPATIONS},
        group_prompts={g: [_capital(GROUP_PROMPT.format(subject=s)) for s in SUBJECTS[g]] for g in GROUPS},
        attribute_prompts={o: [ATTRIBUTE_PROMPT.format(occupation=o)] for o in OCCUPATIONS},
    )


def summary_pairs(functions: Iterable[dict[str, str]], seed: int = 0) -> Iterator[dict[str, str]]:
    """Preference rows from `stdlib_functions` rows whose summary has 3 words or more: `prompt` is `{code}\n#
    Summary:` (as the `stdlib_summaries` task reads), `chosen` the function's own summary, `shuffled` the same words
    in another order, `other` the summary of a function of another module (both drawn with a fixed seed; never the
    chosen text). Preferring `chosen` to `shuffled` is learnable from the responses alone; to `other`, only by reading
    the code."""
    # two different words at least, so that a shuffle can differ from the summary
    rows = [row for row in functions if len(row["summary"].split()) >= 3 and len(set(row["summary"].split())) > 1]
    rng = random.Random(f"summary_pairs-{seed}")
    for row in rows:
        words = row["summary"].split()
        shuffled = list(words)
        while shuffled == words:
            rng.shuffle(shuffled)
        other = _other_summary(rows, row, rng)
        if other is None:  # no function of another module with another summary (a corpus of one module)
            continue
        yield {
            "prompt": f"{row['code']}\n# Summary:",
            "chosen": row["summary"],
            "shuffled": " ".join(shuffled),
            "other": other,
            "source": row["source"],
        }


def _other_summary(rows: list[dict[str, str]], row: dict[str, str], rng: random.Random) -> str | None:
    """The summary of a function of another module, drawn at random (a scan when draws keep missing), or None."""

    def fits(candidate: dict[str, str]) -> bool:
        return candidate["module"] != row["module"] and candidate["summary"] != row["summary"]

    for _ in range(64):
        candidate = rows[rng.randrange(len(rows))]
        if fits(candidate):
            return candidate["summary"]
    return next((candidate["summary"] for candidate in rows if fits(candidate)), None)


SYNTHETIC_TABLES: dict[str, Callable[..., list[dict[str, Any]]]] = {"fairness_hiring": fairness_hiring}
SYNTHETIC_COOCCURRENCE: dict[str, Callable[..., CooccurrenceData]] = {"fairness_occupations": fairness_occupations}


def synthetic(registry: dict[str, Callable[..., Any]], name: str, options: dict[str, Any], key: str) -> Any:
    """Call generator `name` of `registry` with `options`, naming an unknown generator or option in one line."""
    if name not in registry:
        raise ConfigError(f"{key}={name!r} is not a synthetic data set here: use one of {sorted(registry)}")
    known = set(inspect.signature(registry[name]).parameters)
    for option in options:
        if option not in known:
            raise ConfigError(f"{key}: {name} has no option {option!r}: its options are {sorted(known)}")
    if not 0 <= options.get("skew", 0.5) <= 1:
        raise ConfigError(f"{key}: skew={options['skew']} must be in [0, 1]")
    return registry[name](**options)
