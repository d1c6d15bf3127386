"""Canaries (Carlini et al., 2019, "The Secret Sharer"): random secrets in a fixed template, inserted into the
training texts a known number of times, so an evaluation can measure how much a model memorised them.

The datamodule and the exposure task build the same canaries from the same settings (n, repeats, seed,
template, length, alphabet): `make_canaries` is deterministic, and the first n canaries of
`make_canaries(n + k, ...)` are those of `make_canaries(n, ...)` (the k after them serve as never-inserted
controls).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from lightning_llm.errors import ConfigError

SECRET = "{secret}"
DEFAULT_TEMPLATE = "my PIN is {secret}"
DIGITS = "0123456789"

Canary = dict[str, Any]  # text, secret, prefix, repeats


def candidate_space(length: int, alphabet: str) -> int:
    """How many secrets the template admits: |alphabet| ** length."""
    return len(alphabet) ** length


def check_canary_settings(
    n: int, repeats: int | Sequence[int], template: str, length: int, alphabet: str, key: str
) -> None:
    """Fail fast, in one line naming `key`, on settings that cannot make canaries."""
    counts = [repeats] if isinstance(repeats, int) else list(repeats)
    if n < 0 or not counts or min(counts) < 0:
        raise ConfigError(f"{key}: n and repeats must be 0 or more (repeats: a count or a list of counts)")
    if template.count(SECRET) != 1:
        raise ConfigError(f"{key}.template={template!r} must hold {SECRET} exactly once")
    if length < 1 or len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
        raise ConfigError(f"{key}: length must be positive and alphabet at least 2 distinct characters")
    if n > candidate_space(length, alphabet):
        raise ConfigError(f"{key}.n={n} exceeds the {candidate_space(length, alphabet)} possible secrets")


def make_canaries(
    n: int,
    repeats: int | Sequence[int],
    seed: int,
    template: str = DEFAULT_TEMPLATE,
    length: int = 6,
    alphabet: str = DIGITS,
) -> list[Canary]:
    """`n` distinct canaries: `length` random characters of `alphabet`, space-separated, in `template`.

    Each is {"text": the filled template, "secret": the characters, "prefix": the template before the secret,
    "repeats": how often it is inserted (`repeats`, or `repeats[i % len(repeats)]` for the i-th)}.
    """
    check_canary_settings(n, repeats, template, length, alphabet, "canaries")
    counts = [repeats] if isinstance(repeats, int) else list(repeats)
    rng = random.Random(seed)
    prefix = template.split(SECRET)[0]
    seen: set[str] = set()
    canaries: list[Canary] = []
    while len(canaries) < n:
        secret = " ".join(rng.choice(alphabet) for _ in range(length))
        if secret in seen:
            continue
        seen.add(secret)
        text = template.replace(SECRET, secret)
        canaries.append(
            {"text": text, "secret": secret, "prefix": prefix, "repeats": counts[len(canaries) % len(counts)]}
        )
    return canaries


def insert_canaries(texts: list[str], canaries: list[Canary], repeats: int | None = None, seed: int = 0) -> list[str]:
    """A copy of `texts` with each canary inserted `repeats` times (default: the canary's own "repeats"), each
    time as a line of its own at a random line start of a random document; deterministic by `seed`."""
    if not texts:
        raise ConfigError("data.canaries: there are no training texts to insert canaries into")
    rng = random.Random(seed)
    line_starts: dict[int, list[int]] = {}
    inserts: dict[int, list[tuple[int, str]]] = {}
    for canary in canaries:
        for _ in range(canary["repeats"] if repeats is None else repeats):
            doc = rng.randrange(len(texts))
            if doc not in line_starts:
                line_starts[doc] = [0, *(m.end() for m in re.finditer("\n", texts[doc]))]
            inserts.setdefault(doc, []).append((rng.choice(line_starts[doc]), canary["text"] + "\n"))
    out = list(texts)
    for doc, items in inserts.items():
        text = texts[doc]
        for position, line in sorted(items, key=lambda item: item[0], reverse=True):
            text = text[:position] + line + text[position:]
        out[doc] = text
    return out
