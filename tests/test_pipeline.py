"""The data-preparation pipeline: each step on small fixtures with known outcomes, then the whole pipeline's
guarantees (streaming = in memory, num_proc=2 = num_proc=1, cached reruns, one-line errors)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from lightning_llm.data.pipeline import (
    DEFAULT_SETTINGS,
    apply_pipeline,
    find_near_duplicates,
    gopher_reason,
    normalize_text,
    redact_pii,
)
from lightning_llm.data.pipeline import steps as steps_module
from lightning_llm.data.pipeline.dedup import FirstSeen, NearDuplicates, minhash, permutations, shingles
from lightning_llm.data.pipeline.quality import GOPHER_SETTINGS, STOP_WORDS, ngram_char_fractions
from lightning_llm.errors import ConfigError

ALL_STEPS = ["normalize", "quality", "pii", "dedup_exact", "dedup_near"]
ENGLISH = (
    "The committee met on Tuesday to review the budget and discuss plans for the new library. Members agreed "
    "that the building should have more space for children, with quiet rooms for study and a small garden. "
    "Several residents spoke in favour of longer opening hours, and the chair promised to report back to the "
    "council before the end of the month with a detailed proposal and a timetable for construction."
)


def prose(rng: random.Random, n_words: int = 70) -> str:
    """A random document that passes the Gopher rules: English-like words, stop words, no repetition."""
    vocab = ENGLISH.replace(".", "").replace(",", "").split()
    extra = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(40)]
    return " ".join(rng.choice(vocab + extra * 3) for _ in range(n_words)) + "."


def file_dataset(folder: Path, texts: list) -> Dataset:
    """A Dataset backed by cache files (as `load_dataset` gives), so that `map` results are cached."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return Dataset.from_json(str(path), cache_dir=str(folder / "hf_cache"))


def mixed_corpus(seed: int = 0, n: int = 1200) -> list[str]:
    """Documents of every kind the pipeline acts on: good prose, junk, PII, exact and near duplicates."""
    rng = random.Random(seed)
    docs: list[str] = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.1 and docs:
            docs.append("  " + rng.choice(docs).upper() + "\t ")  # exact duplicate after case/space folding
        elif kind < 0.2 and docs:
            words = rng.choice(docs).split()
            words[rng.randrange(len(words))] = "changed"  # near duplicate
            docs.append(" ".join(words))
        elif kind < 0.3:
            docs.append("buy now " * rng.randint(5, 40))  # repetitive junk
        elif kind < 0.4:
            docs.append(prose(rng) + f" Write to user{i}@example.org or call +1 (202) 555-01{i % 100:02d}.")
        else:
            docs.append(prose(rng) + ("\u00a0 \x07tail" if kind > 0.95 else ""))
    return docs


def without_seconds(report: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in report]


# -- normalize ------------------------------------------------------------------------------------
def test_normalize_text() -> None:
    assert normalize_text("  a\u00a0\u00a0b\t\tc \r\n\r\n  d\x00e\x0cf\u200b g  ") == "a b c\n\nde f g"
    assert normalize_text("cafe\u0301 \ufb01") == "caf\u00e9 \ufb01"  # NFC composes, keeps the ligature
    assert normalize_text("cafe\u0301 \ufb01", "NFKC") == "caf\u00e9 fi"
    assert normalize_text("one\n\n\ntwo\u2028three") == "one\n\n\ntwo\nthree"  # newlines are kept


def test_normalize_step_reports_removed_characters() -> None:
    ds = Dataset.from_dict({"text": ["a  b", "clean"]})
    out, report = apply_pipeline(ds, ["normalize"])
    assert out["text"] == ["a b", "clean"]
    assert report[0] | {"seconds": 0} == {
        "name": "normalize",
        "documents_in": 2,
        "documents_kept": 2,
        "documents_removed": 0,
        "characters_in": 9,
        "characters_kept": 8,
        "characters_removed": 1,
        "details": {"changed": 1},
        "seconds": 0,
    }


# -- quality --------------------------------------------------------------------------------------
def _lines(*lines: str) -> str:
    return "\n".join(lines)


QUALITY_CASES = {
    None: ENGLISH,
    "min_words": "The cat and the dog.",
    "max_mean_word_length": ENGLISH.replace(" ", " supercalifragilistic "),
    "max_symbol_word_ratio": ENGLISH.replace(". ", " ### ... #tag "),
    "max_bullet_lines_fraction": _lines(*(f"- {s}" for s in ENGLISH.split(". "))),
    "max_ellipsis_lines_fraction": _lines(*(f"{s}..." for s in ENGLISH.split(". "))),
    "min_alpha_words_fraction": ENGLISH + " " + " ".join(["12", "3.5", "--", "42%"] * 20),
    "min_stop_words": " ".join(w for w in (ENGLISH + " " + ENGLISH[::-1]).split() if w.lower() not in STOP_WORDS),
    "max_duplicate_lines_fraction": _lines(ENGLISH, *["Click here to subscribe to the newsletter today."] * 3),
    "max_duplicate_line_chars_fraction": _lines(ENGLISH, "One.", "Two.", "Three.", ENGLISH[::-1], ENGLISH[::-1]),
    "max_top_2gram_chars_fraction": ENGLISH + " " + "united states " * 25,
    "max_duplicate_5gram_chars_fraction": ENGLISH + " " + " ".join(ENGLISH.split()[:25]),
}


@pytest.mark.parametrize("expected", list(QUALITY_CASES), ids=str)
def test_quality_rules(expected: str | None) -> None:
    assert gopher_reason(QUALITY_CASES[expected], GOPHER_SETTINGS) == expected


def test_quality_paragraph_rules() -> None:
    """Lines repeat wherever paragraphs do, so the paragraph rules fire first only without the line rules."""
    no_line_rules = {**GOPHER_SETTINGS, "max_duplicate_lines_fraction": None, "max_duplicate_line_chars_fraction": None}
    paragraph = _lines(*ENGLISH.split(". ")[:2])
    text = "\n\n".join([ENGLISH[::-1], paragraph, paragraph])
    assert gopher_reason(text, GOPHER_SETTINGS) == "max_duplicate_lines_fraction"
    assert gopher_reason(text, no_line_rules) == "max_duplicate_paragraphs_fraction"
    no_count_rule = {**no_line_rules, "max_duplicate_paragraphs_fraction": None}
    assert gopher_reason(text, no_count_rule) == "max_duplicate_paragraph_chars_fraction"


def test_quality_rules_are_settings_and_can_be_disabled() -> None:
    short = QUALITY_CASES["min_words"]
    assert gopher_reason(short, {**GOPHER_SETTINGS, "min_words": None, "min_stop_words": 1}) is None
    ds = Dataset.from_dict({"text": list(QUALITY_CASES.values())})
    out, report = apply_pipeline(ds, [{"quality": {"min_words": 3}}])
    assert report[0]["details"].get("min_words", 0) == 0 and "min_stop_words" in report[0]["details"]
    assert report[0]["documents_removed"] == sum(report[0]["details"].values()) == len(ds) - len(out)


def _reference_ngram_fractions(tokens: list[str], n: int) -> tuple[float, float]:
    """The n-gram rules the slow, obvious way."""
    if len(tokens) < n:
        return 0.0, 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts, total = Counter(grams), sum(map(len, tokens))
    most = max(counts.values())
    top = max(c * sum(map(len, g)) for g, c in counts.items() if c == most) if most > 1 else 0
    covered = set()
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered.update(range(i, i + n))
    return top / total, sum(len(tokens[i]) for i in covered) / total


def test_ngram_fractions_match_a_direct_count() -> None:
    rng = random.Random(3)
    docs = [[rng.choice(["a", "bb", "ccc", "dd", "e"]) for _ in range(rng.randint(0, 40))] for _ in range(200)]
    flat = [w for d in docs for w in d]
    hashes = np.array([hash(w) for w in flat], dtype=np.int64).view(np.uint64)
    lengths = np.array([len(w) for w in flat], dtype=np.int64)
    result = ngram_char_fractions(hashes, lengths, np.array([len(d) for d in docs]), [2, 3, 4, 5, 10])
    for n, (top, duplicate) in result.items():
        expected = np.array([_reference_ngram_fractions(d, n) for d in docs])
        np.testing.assert_allclose(top, expected[:, 0])
        np.testing.assert_allclose(duplicate, expected[:, 1])


# -- pii ------------------------------------------------------------------------------------------
PII_CASES = [
    ("Mail john.doe+news@example.co.uk today.", "Mail <EMAIL> today."),
    ("Ask JANE_9@Mail.Example.COM, please", "Ask <EMAIL>, please"),
    ("Call +1 (202) 555-0173 or +44 20 7946 0958.", "Call <PHONE> or <PHONE>."),
    ("Office: (555) 123-4567, fax 555.123.4567", "Office: <PHONE>, fax <PHONE>"),
    ("Host 192.168.1.10:8080 and 10.0.0.1.", "Host <IP>:8080 and <IP>."),
    ("IPv6 2001:db8:85a3::8a2e:370:7314, fe80::1 and ::ffff:192.0.2.1", "IPv6 <IP>, <IP> and <IP>"),
]
NOT_PII = [
    "Python 3.11.7 was released on 2023-12-04 at 12:30:45 (see v1.2.3.4 and 1.2.3.4.5).",
    "It costs 1,234,567 dollars; pi is 3.14159; order 5551234567; score +5; ratio 3:4.",
    "Slices a[1::2] and b[::-1], std::vector, 256.1.1.1, the years 1999-2001, ISBN 978-0-12-345678-9.",
]


@pytest.mark.parametrize(("text", "expected"), PII_CASES)
def test_pii_replaced(text: str, expected: str) -> None:
    assert redact_pii(text)[0] == expected


@pytest.mark.parametrize("text", NOT_PII)
def test_pii_leaves_numbers_dates_and_versions(text: str) -> None:
    assert redact_pii(text) == (text, {"email": 0, "phone": 0, "ip": 0})


def test_pii_gone_from_output() -> None:
    texts = [text for text, _ in PII_CASES] + NOT_PII
    out, report = apply_pipeline(Dataset.from_dict({"text": texts}), ["pii"])
    joined = "\n".join(out["text"])
    for secret in ("@example", "555-0173", "7946", "192.168", "10.0.0.1", "2001:db8", "fe80"):
        assert secret not in joined
    assert out["text"][len(PII_CASES) :] == NOT_PII
    assert report[0]["details"] == {"email": 2, "phone": 4, "ip": 5}
    _, report = apply_pipeline(Dataset.from_dict({"text": texts}), [{"pii": {"phone": False}}])
    assert report[0]["details"] == {"email": 2, "ip": 5}


# -- exact dedup -----------------------------------------------------------------------------------
def test_dedup_exact_keeps_first_and_is_idempotent() -> None:
    texts = ["Hello  world", "other", "hello world", "HELLO\nWORLD ", "other", "Hello, world"]
    out, report = apply_pipeline(Dataset.from_dict({"text": texts, "n": list(range(6))}), ["dedup_exact"])
    assert out["n"] == [0, 1, 5]
    assert report[0]["details"] == {"duplicates": 3}
    again, report = apply_pipeline(out, ["dedup_exact", "dedup_exact"])
    assert again["n"] == [0, 1, 5] and [e["documents_removed"] for e in report] == [0, 0]


def test_first_seen_does_not_depend_on_batches() -> None:
    keys = np.random.default_rng(0).integers(0, 50, size=1000).astype(np.uint64)
    whole = FirstSeen().first(keys, np.arange(1000))
    index = FirstSeen()
    parts = [index.first(keys[i : i + 37], np.arange(i, min(i + 37, 1000))) for i in range(0, 1000, 37)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    expected = {}
    assert all(w == expected.setdefault(k, i) for i, (k, w) in enumerate(zip(keys.tolist(), whole, strict=True)))


# -- near dedup ------------------------------------------------------------------------------------
def planted_near_duplicates(seed: int = 0, n_base: int = 600) -> list[str]:
    """Random documents, each with 0-3 copies edited at a random rate: light edits (<= 1.5% of the words)
    make near-duplicates, heavier ones (5-20%) related documents below the threshold."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(8000)]
    docs = []
    for _ in range(n_base):
        base = [rng.choice(vocab) for _ in range(rng.randint(80, 200))]
        docs.append(base)
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            copy = list(base)
            for _ in range(round(rng.choice([0, 0.005, 0.01, 0.015, 0.05, 0.1, 0.2]) * len(base))):
                op, i = rng.random(), rng.randrange(len(copy))
                if op < 0.6:
                    copy[i] = rng.choice(vocab)
                elif op < 0.8:
                    copy.insert(i, rng.choice(vocab))
                else:
                    del copy[i]
            docs.append(copy)
    rng.shuffle(docs)
    return [" ".join(d) for d in docs]


def true_jaccard(texts: list[str], n: int = 5) -> dict[tuple[int, int], float]:
    """Exact Jaccard similarity of the word 5-gram sets of every pair of texts that shares one."""
    sets = [{tuple(w[i : i + n]) for i in range(len(w) - n + 1)} for w in (t.lower().split() for t in texts)]
    holders = defaultdict(list)
    for i, grams in enumerate(sets):
        for gram in grams:
            holders[gram].append(i)
    pairs = {(a, b) for ids in holders.values() for k, a in enumerate(ids) for b in ids[k + 1 :]}
    return {(a, b): len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs}


def test_near_dedup_precision_and_recall() -> None:
    texts = planted_near_duplicates()
    jaccard = true_jaccard(texts)
    true_pairs = [pair for pair, j in jaccard.items() if j >= 0.8]
    assert len(true_pairs) > 300 and sum(0.5 <= j < 0.8 for j in jaccard.values()) > 200  # hard negatives too
    matches = find_near_duplicates(texts, threshold=0.8)
    flagged = [(match, dropped) for dropped, match in matches.items()]
    precision = np.mean([jaccard.get(pair, 0.0) >= 0.8 for pair in flagged])
    recall = np.mean([later in matches for _, later in true_pairs])
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)

    out, report = apply_pipeline(Dataset.from_dict({"text": texts}), [{"dedup_near": {"threshold": 0.8}}])
    assert out["text"] == [t for i, t in enumerate(texts) if i not in matches]
    assert report[0]["details"]["duplicates"] == len(matches)


def test_near_dedup_does_not_depend_on_batches() -> None:
    texts = planted_near_duplicates(seed=1, n_base=100)
    signatures = minhash(*shingles(texts), *permutations(128, 42))
    whole = NearDuplicates(0.8, 128)(signatures, np.arange(len(texts)))
    decide = NearDuplicates(0.8, 128)
    parts = [decide(signatures[i : i + 7], np.arange(i, min(i + 7, len(texts)))) for i in range(0, len(texts), 7)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert 0 < (~whole).sum() < len(texts)


def test_near_dedup_char_shingles() -> None:
    texts = [ENGLISH, ENGLISH.replace("Tuesday", "Monday"), ENGLISH[::-1]]
    assert find_near_duplicates(texts, shingle="char", ngram=5) == {1: 0}


# -- decontaminate ---------------------------------------------------------------------------------
def test_decontaminate() -> None:
    question = "Which river flows through the ancient city of Baghdad before joining the Euphrates in the south?"
    texts = [
        ENGLISH,
        f"Quiz time! WHICH river flows through the ancient city of Baghdad, before joining the euphrates... {ENGLISH}",
        "Which river flows through the ancient city of Baghdad before joining a lake",  # only 11 words in a row shared
    ]
    out, report = apply_pipeline(
        Dataset.from_dict({"text": texts}), ["decontaminate"], decontaminate_against=[question, "too short"]
    )
    assert out["text"] == [texts[0], texts[2]]
    assert report[0]["details"] == {"contaminated": 1, "eval_ngrams": 4, "eval_texts_shorter_than_ngram": 1}
    with pytest.raises(ConfigError, match="decontaminate_against"):
        apply_pipeline(Dataset.from_dict({"text": texts}), ["decontaminate"])


# -- the whole pipeline ----------------------------------------------------------------------------
def test_streaming_gives_the_same_documents(tmp_path: Path) -> None:
    ds = file_dataset(tmp_path, mixed_corpus())
    out, report = apply_pipeline(ds, ALL_STEPS)
    stream, live = apply_pipeline(ds.to_iterable_dataset(num_shards=3), ALL_STEPS)
    assert all(entry["documents_in"] == 0 for entry in live)  # lazy: nothing seen yet
    assert list(stream) == out.to_list()
    assert without_seconds(live) == without_seconds(report)
    assert all(entry["documents_removed"] > 0 for entry in report if entry["name"] not in ("normalize", "pii"))
    list(stream)  # a second pass starts the counts and the dedup state afresh
    assert without_seconds(live) == without_seconds(report)


def test_num_proc_2_gives_the_same_result(tmp_path: Path) -> None:
    texts = mixed_corpus(seed=1, n=600)
    one, report_one = apply_pipeline(file_dataset(tmp_path / "one", texts), ALL_STEPS, num_proc=1)
    two, report_two = apply_pipeline(file_dataset(tmp_path / "two", texts), ALL_STEPS, num_proc=2)
    assert two.to_list() == one.to_list()
    assert without_seconds(report_two) == without_seconds(report_one)
    assert list((tmp_path / "two").rglob("cache-*_00001_of_00002.arrow"))  # two workers did run


def test_rerun_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = file_dataset(tmp_path, mixed_corpus(seed=2, n=300))
    out, report = apply_pipeline(ds, ALL_STEPS)
    cache_files = sorted(p.name for p in (tmp_path / "hf_cache").rglob("cache-*.arrow"))
    assert len(cache_files) >= len(ALL_STEPS)

    def recomputed(*args, **kwargs):
        raise AssertionError("a cached step was computed again")

    for name in ("normalize_text", "gopher_reasons", "redact_pii", "exact_key", "minhash"):
        monkeypatch.setattr(steps_module, name, recomputed)
    again, report_again = apply_pipeline(ds, ALL_STEPS)
    assert again.to_list() == out.to_list() and again._fingerprint == out._fingerprint
    assert without_seconds(report_again) == without_seconds(report)
    assert sorted(p.name for p in (tmp_path / "hf_cache").rglob("cache-*.arrow")) == cache_files
    with pytest.raises(AssertionError, match="computed again"):  # other settings: computed, not read back
        apply_pipeline(ds, [{"normalize": {"form": "NFKC"}}])


def test_hydra_style_config_and_defaults_are_yaml() -> None:
    settings = OmegaConf.create({"quality": {"min_words": 3}, "dedup_near": {"threshold": 0.9}})
    steps = OmegaConf.create(["normalize", {"quality": {"max_words": 1000}}])
    out, report = apply_pipeline(Dataset.from_dict({"text": [ENGLISH, "a b"]}), steps, settings)
    assert [e["name"] for e in report] == ["normalize", "quality"] and len(out) == 1
    assert OmegaConf.to_container(OmegaConf.create(DEFAULT_SETTINGS)) == DEFAULT_SETTINGS


def test_empty_result_flows_through() -> None:
    out, report = apply_pipeline(Dataset.from_dict({"text": ["tiny", "text"]}), ALL_STEPS)
    assert len(out) == 0 and [e["documents_in"] for e in report] == [2, 2, 0, 0, 0]


@pytest.mark.parametrize(
    ("dataset", "steps", "settings", "message"),
    [
        (Dataset.from_dict({"body": ["x"]}), ["normalize"], None, "text column 'text' is not a column"),
        (Dataset.from_dict({"text": [1, 2]}), ["normalize"], None, "holds Value('int64'), not text"),
        (Dataset.from_dict({"text": ["a", None]}), ["normalize"], None, "document 1 has no text"),
        (Dataset.from_dict({"text": ["a"]}), ["normalise"], None, "step 'normalise' is unknown"),
        (Dataset.from_dict({"text": ["a"]}), ["quality"], {"quality": {"min_word": 3}}, "quality.min_word"),
        (Dataset.from_dict({"text": ["a"]}), [{"normalize": {"form": "NFD"}}], None, "normalize.form='NFD'"),
        (Dataset.from_dict({"text": ["a"]}), ["dedup_near"], {"dedup_near": {"bands": 50, "rows": 5}}, "bands"),
        ([{"text": "a"}], ["normalize"], None, "expected a datasets.Dataset"),
    ],
)
def test_malformed_input_fails_with_one_line(dataset, steps, settings, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        apply_pipeline(dataset, steps, settings)
    assert "\n" not in str(error.value)


def test_malformed_stream_fails_when_read() -> None:
    stream, _ = apply_pipeline(Dataset.from_dict({"text": ["a", None]}).to_iterable_dataset(), ["pii"])
    with pytest.raises(ConfigError, match="document 1 of text column 'text' is NoneType"):
        list(stream)
