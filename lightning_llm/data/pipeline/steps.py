"""The pipeline's steps: their settings (with defaults), per-batch functions and, for filters, deciders.

A step is either a *transform* (`texts -> (new texts, counts)`, e.g. normalize) or a *filter*: an `annotate`
function computes per-document columns (a rejection reason, a hash, a MinHash signature) in parallel, then a
decider sees those columns in document order, in one process, and returns which documents to keep.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from datasets import Features, List, Value

from lightning_llm.data.pipeline.dedup import (
    ExactDuplicates,
    NearDuplicates,
    contaminated,
    eval_ngrams,
    exact_key,
    lsh_params,
    minhash,
    permutations,
    shingles,
)
from lightning_llm.data.pipeline.quality import GOPHER_SETTINGS, gopher_reasons
from lightning_llm.data.pipeline.text import PLACEHOLDERS, normalize_text, redact_pii
from lightning_llm.errors import ConfigError

DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "normalize": {"form": "NFC"},  # or NFKC
    "quality": dict(GOPHER_SETTINGS),
    "pii": {"email": True, "phone": True, "ip": True},
    "dedup_exact": {},
    "dedup_near": {
        "threshold": 0.8,  # Jaccard similarity of the shingle sets
        "num_perm": 128,
        "shingle": "word",  # or char
        "ngram": 5,
        "bands": None,  # None: chosen from threshold and num_perm (lsh_params)
        "rows": None,
        "seed": 42,
    },
    "decontaminate": {"ngram": 13},
}


# -- per-batch functions (module level, so that they pickle for num_proc > 1) ---------------------
def normalize_batch(texts: list[str], form: str) -> tuple[list[str], dict[str, list[int]]]:
    out = [normalize_text(t, form) for t in texts]
    return out, {"changed": [int(a != b) for a, b in zip(texts, out, strict=True)]}


def pii_batch(texts: list[str], kinds: tuple[str, ...]) -> tuple[list[str], dict[str, list[int]]]:
    results = [redact_pii(t, kinds) for t in texts]
    return [text for text, _ in results], {kind: [counts[kind] for _, counts in results] for kind in kinds}


def quality_batch(texts: list[str], settings: dict[str, Any]) -> dict[str, list[str | None]]:
    return {"reason": gopher_reasons(texts, settings)}


def decontaminate_batch(texts: list[str], ngrams: np.ndarray, n: int) -> dict[str, list[str | None]]:
    return {"reason": ["contaminated" if hit else None for hit in contaminated(texts, ngrams, n)]}


def exact_batch(texts: list[str]) -> dict[str, np.ndarray]:
    return {"key": np.fromiter(map(exact_key, texts), dtype=np.uint64, count=len(texts))}


def near_batch(texts: list[str], shingle: str, ngram: int, num_perm: int, seed: int) -> dict[str, np.ndarray]:
    a, b = permutations(num_perm, seed)
    return {"signature": minhash(*shingles(texts, shingle, ngram), a, b)}


# -- deciders -----------------------------------------------------------------------------------
class ByReason:
    """Keeps documents without a rejection reason; counts the reasons."""

    def __init__(self) -> None:
        self.details: Counter[str] = Counter()

    def __call__(self, columns: Mapping[str, Any], ids: np.ndarray) -> np.ndarray:
        reasons = list(columns["reason"])
        self.details.update(r for r in reasons if r is not None)
        return np.array([r is None for r in reasons], dtype=bool)


class Dedup:
    """Runs a dedup decider (exact or near) on one annotation column; counts the duplicates."""

    def __init__(self, decide: ExactDuplicates | NearDuplicates, column: str) -> None:
        self.decide, self.column = decide, column
        self.duplicates = 0

    @property
    def details(self) -> dict[str, int]:
        return {"duplicates": self.duplicates, **self.decide.stats}

    def __call__(self, columns: Mapping[str, Any], ids: np.ndarray) -> np.ndarray:
        keep = self.decide(columns[self.column], ids)
        self.duplicates += int((~keep).sum())
        return keep


Decider = ByReason | Dedup


# -- the steps ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One configured step: its name, resolved settings and what to run."""

    name: str
    settings: dict[str, Any]
    transform: Callable[[list[str]], tuple[list[str], dict[str, list[int]]]] | None = None
    annotate: Callable[[list[str]], dict[str, Any]] | None = None
    features: Features | None = None
    make_decider: Callable[[], Decider] | None = None
    fingerprint_extra: str = ""  # what the settings do not show (e.g. a digest of the eval n-grams)
    count_keys: tuple[str, ...] = ()  # transforms: the per-document counts they return
    details: dict[str, Any] = field(default_factory=dict)  # facts for the report, known before running

    def key(self) -> str:
        """Everything that determines this step's output for a given input, as a string."""
        return json.dumps([self.name, self.settings, self.fingerprint_extra], sort_keys=True, default=str)


def _reason_features() -> Features:
    return Features({"reason": Value("string")})


def build_step(name: str, settings: dict[str, Any], eval_texts: list[str] | None = None) -> Step:
    """The Step for `name` with resolved `settings` (and, for decontaminate, the evaluation texts)."""
    if name == "normalize":
        return Step(name, settings, transform=partial(normalize_batch, form=settings["form"]), count_keys=("changed",))
    if name == "pii":
        kinds = tuple(k for k in PLACEHOLDERS if settings[k])
        return Step(name, settings, transform=partial(pii_batch, kinds=kinds), count_keys=kinds)
    if name == "quality":
        return Step(
            name,
            settings,
            annotate=partial(quality_batch, settings=settings),
            features=_reason_features(),
            make_decider=ByReason,
        )
    if name == "decontaminate":
        if not eval_texts:
            raise ConfigError("pipeline step 'decontaminate' needs evaluation texts: pass decontaminate_against")
        hashes, short = eval_ngrams(eval_texts, settings["ngram"])
        return Step(
            name,
            settings,
            annotate=partial(decontaminate_batch, ngrams=hashes, n=settings["ngram"]),
            features=_reason_features(),
            make_decider=ByReason,
            fingerprint_extra=hashlib.sha256(hashes.tobytes()).hexdigest(),
            details={"eval_ngrams": len(hashes), "eval_texts_shorter_than_ngram": short},
        )
    if name == "dedup_exact":
        return Step(
            name,
            settings,
            annotate=exact_batch,
            features=Features({"key": Value("uint64")}),
            make_decider=lambda: Dedup(ExactDuplicates(), "key"),
        )
    if name == "dedup_near":
        s = settings
        return Step(
            name,
            s,
            annotate=partial(
                near_batch, shingle=s["shingle"], ngram=s["ngram"], num_perm=s["num_perm"], seed=s["seed"]
            ),
            features=Features({"signature": List(Value("uint32"), length=s["num_perm"])}),
            make_decider=lambda: Dedup(
                NearDuplicates(s["threshold"], s["num_perm"], s["bands"], s["rows"]), "signature"
            ),
            details={"bands": s["bands"], "rows": s["rows"]},
        )
    raise AssertionError(name)


# -- settings -----------------------------------------------------------------------------------
def _check(condition: bool, name: str, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"pipeline setting {name}.{key}={value!r} is invalid: expected {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(name: str, s: dict[str, Any]) -> None:
    """One-line ConfigErrors for settings of the wrong kind or range."""
    if name == "normalize":
        _check(s["form"] in ("NFC", "NFKC"), name, "form", s["form"], "NFC or NFKC")
    elif name == "quality":
        for key, value in s.items():
            _check(value is None or (_is_number(value) and value >= 0), name, key, value, "a number >= 0 or null")
    elif name == "pii":
        for key, value in s.items():
            _check(isinstance(value, bool), name, key, value, "true or false")
    elif name == "dedup_near":
        _check(_is_number(s["threshold"]) and 0 < s["threshold"] <= 1, name, "threshold", s["threshold"], "0 < x <= 1")
        for key in ("num_perm", "ngram", "seed"):
            _check(isinstance(s[key], int) and s[key] >= (key != "seed"), name, key, s[key], "a positive integer")
        _check(s["ngram"] <= 64, name, "ngram", s["ngram"], "at most 64")
        _check(s["shingle"] in ("word", "char"), name, "shingle", s["shingle"], "word or char")
        bands, rows = s["bands"], s["rows"]
        if bands is None or rows is None:
            _check(bands is None and rows is None, name, "bands", bands, "bands and rows both set or both null")
            s["bands"], s["rows"] = lsh_params(s["threshold"], s["num_perm"])
        else:
            ok = isinstance(bands, int) and isinstance(rows, int) and 0 < bands * rows <= s["num_perm"]
            _check(ok, name, "bands", bands, f"positive integers with bands*rows <= num_perm={s['num_perm']}")
    elif name == "decontaminate":
        n = s["ngram"]
        _check(isinstance(n, int) and 1 <= n <= 64, name, "ngram", n, "an integer from 1 to 64")


def _plain(value: Any) -> Any:
    """OmegaConf containers (or any mapping/sequence) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _merge(name: str, base: dict[str, Any], overrides: Any, where: str) -> dict[str, Any]:
    if overrides is None:
        return base
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where} for step {name!r} must be a mapping of settings, not {overrides!r}")
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ConfigError(
            f"pipeline setting {name}.{unknown[0]} is unknown: the settings of {name!r} are {sorted(base) or 'none'}"
        )
    return {**base, **overrides}


def resolve_steps(steps: Any, settings: Any) -> list[tuple[str, dict[str, Any]]]:
    """[(step name, its full settings)] from step names or {name: overrides} and the settings mapping."""
    steps, settings = _plain(steps or []), _plain(settings or {})
    if isinstance(steps, str | Mapping):
        steps = [steps]
    if not isinstance(settings, dict):
        raise ConfigError(f"pipeline settings must be a mapping of step name to settings, not {settings!r}")
    for name in settings:
        if name not in DEFAULT_SETTINGS:
            raise ConfigError(
                f"pipeline settings name an unknown step {name!r}: the steps are {list(DEFAULT_SETTINGS)}"
            )
    resolved = []
    for spec in steps:
        if isinstance(spec, dict) and len(spec) == 1:
            name, overrides = next(iter(spec.items()))
        elif isinstance(spec, str):
            name, overrides = spec, None
        else:
            raise ConfigError(f"data.pipeline entry {spec!r} is invalid: give a step name or {{name: {{settings}}}}")
        if name not in DEFAULT_SETTINGS:
            raise ConfigError(f"data.pipeline step {name!r} is unknown: choose from {', '.join(DEFAULT_SETTINGS)}")
        merged = _merge(name, dict(DEFAULT_SETTINGS[name]), settings.get(name), "pipeline settings")
        merged = _merge(name, merged, overrides, "data.pipeline")
        _validate(name, merged)
        resolved.append((name, merged))
    return resolved
