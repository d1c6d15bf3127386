"""The caches of supervised, chat, classification and preference rows, and of the cleaning pipeline, are named by
our keys (data/fingerprint.py) of everything that selects or changes their rows: a changed setting gives the rows
a fresh cache would (never stale ones), an unchanged one reads the cache back without writing it again."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lightning_llm.data.mixture import Source
from lightning_llm.data.preference import PreferenceDataModule
from lightning_llm.data.supervised import SupervisedDataModule
from lightning_llm.data.text_corpus import CorpusSettings, TextCorpus
from lightning_llm.objectives import DirectPreference, SequenceClassification, SupervisedFineTuning
from lightning_llm.tokenizers import BASE_SPECIAL_TOKENS
from lightning_llm.tokenizers.trained import CharTokenizer

CHAR = {"type": "char", "vocab_size": None, "input_sentence_size": 0, "character_coverage": 1.0}
LABELS = ["red", "green", "blue", "red", "red", "green"]


def _rows(n: int = 48) -> list[dict[str, Any]]:
    def talk(i: int, reply: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"ask {i}"}, {"role": "assistant", "content": reply}]

    return [
        {
            "instruction": f"do task {i}",
            "context": f"ctx{i % 5}",
            "response": f"done {i}",
            "alt": f"other {i * 7}",
            "label": LABELS[i % len(LABELS)],
            "messages": talk(i, f"sure {i}"),
            "prompt": f"which {i}?",
            "chosen": f"good {i}",
            "rejected": f"bad {i}",
            "chosen_chat": talk(i, f"good {i}"),
            "rejected_chat": talk(i, f"bad {i}"),
        }
        for i in range(n)
    ]


def _table(folder: Path, n: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _rows(n)))
    return path


SFT, CLASSIFY, DPO = SupervisedFineTuning, SequenceClassification, DirectPreference
CONVERSATIONS = {"chosen_column": "chosen_chat", "rejected_column": "rejected_chat", "prompt_column": "none"}
KINDS: dict[str, tuple[type, Any, dict[str, Any]]] = {
    "pairs": (SupervisedDataModule, SFT, {"prompt_template": "{instruction}", "response_column": "response"}),
    "classes": (SupervisedDataModule, CLASSIFY, {"prompt_template": "{instruction}", "label_column": "label"}),
    "chat": (SupervisedDataModule, SFT, {"prompt_template": "", "messages_column": "messages"}),
    "preferences": (PreferenceDataModule, DPO, {}),
    "conversations": (PreferenceDataModule, DPO, CONVERSATIONS),
}
BASE = {"max_examples": 44}  # of the table's 48 rows: a change of it is a change of a value, not of its absence

#: (kind, a change of one setting that selects or changes the rows)
CHANGES = [
    ("pairs", {"max_examples": 30}),
    ("pairs", {"prompt_template": "Q: {instruction}"}),
    ("pairs", {"prompt_template": "{instruction} ({context})"}),
    ("pairs", {"response_column": "alt"}),
    ("pairs", {"val_fraction": 0.25}),
    ("pairs", {"split_seed": 7}),
    ("classes", {"labels": ["blue", "red"]}),
    ("classes", {"max_labels": 2}),
    ("classes", {"max_examples": 20}),
    ("chat", {"chat_template": "chatml"}),
    ("chat", {"max_examples": 20}),
    ("preferences", {"max_examples": 30}),
    ("preferences", {"chosen_column": "alt"}),
    ("preferences", {"unpaired": True}),
    ("preferences", {"val_fraction": 0.3}),
    ("conversations", {"chat_template": "chatml"}),
]


def _prepare(kind: str, data: Path, cache: Path, **changes: Any):
    module, objective, settings = KINDS[kind]
    tokenizer = changes.pop("tokenizer", dict(CHAR))
    dm = module(objective(), tokenizer, str(data), **{**settings, **BASE, **changes}, cache_dir=str(cache))
    dm.prepare_data()
    return dm


def _content(dm) -> dict[str, Any]:
    """What the datamodule made: its tokenizer's vocabulary, and both splits' rows."""
    splits = {name: dm._examples[name].to_dict() for name in ("train", "val")}
    return {"vocab": dm.tokenizer.vocab_size, "texts": list(dm.train_texts), **splits}


def _cache_files(cache: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in cache.rglob("cache-*.arrow")}


@pytest.mark.parametrize(("kind", "change"), CHANGES, ids=[f"{k}-{next(iter(c))}" for k, c in CHANGES])
def test_a_changed_setting_gives_fresh_rows_never_the_cached_ones(tmp_path: Path, kind: str, change: dict) -> None:
    data = _table(tmp_path / "data")
    before = _content(_prepare(kind, data, tmp_path / "cache"))
    changed = _content(_prepare(kind, data, tmp_path / "cache", **change))  # the first run's caches are there
    fresh = _content(_prepare(kind, data, tmp_path / "fresh", **change))  # nothing cached
    assert fresh != before, f"{change} changes the rows"
    assert changed == fresh, f"{change} read stale rows from the cache"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_unchanged_config_reads_its_caches_back(tmp_path: Path, kind: str) -> None:
    data = _table(tmp_path / "data")
    first = _content(_prepare(kind, data, tmp_path / "cache"))
    written = _cache_files(tmp_path / "cache")
    assert len(written) >= 2, "the rendered and tokenized rows are cached"
    second = _prepare(kind, data, tmp_path / "cache")
    assert _content(second) == first
    assert _cache_files(tmp_path / "cache") == written, "a cache was written again"


@pytest.mark.parametrize("kind", ["pairs", "preferences"])
def test_the_tokenized_rows_are_named_by_the_tokenizer(tmp_path: Path, kind: str) -> None:
    data = _table(tmp_path / "data")
    trained = _prepare(kind, data, tmp_path / "cache").tokenizer
    characters = trained.vocab[len(BASE_SPECIAL_TOKENS) :]
    reordered = CharTokenizer([*BASE_SPECIAL_TOKENS, *reversed(characters)])  # the same characters, other ids
    changed = _content(_prepare(kind, data, tmp_path / "cache", tokenizer=reordered))
    assert changed == _content(_prepare(kind, data, tmp_path / "fresh", tokenizer=reordered))
    assert changed["train"] != _content(_prepare(kind, data, tmp_path / "cache"))["train"]


def test_a_changed_table_is_new_data(tmp_path: Path) -> None:
    data = _table(tmp_path / "data")
    _prepare("pairs", data, tmp_path / "cache")
    data.write_text("".join(json.dumps({**row, "response": row["alt"]}) + "\n" for row in _rows()))
    changed = _content(_prepare("pairs", data, tmp_path / "cache"))
    assert changed == _content(_prepare("pairs", data, tmp_path / "fresh"))


def _corpus(path: Path, cache: Path, **settings: Any) -> TextCorpus:
    return TextCorpus([Source("", str(path))], CorpusSettings(pipeline=("dedup_exact",), **settings), str(cache))


def test_the_pipelines_caches_are_named_by_the_corpus_as_read(tmp_path: Path) -> None:
    """The cleaning pipeline's caches start from the source's key as read (its first data.max_documents too)."""
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i % 30} of the corpus"}) + "\n" for i in range(60)))
    first, _ = _corpus(path, tmp_path / "cache", max_documents=20).load()
    written = _cache_files(tmp_path / "cache")
    assert written, "the pipeline's steps are cached"
    again, _ = _corpus(path, tmp_path / "cache", max_documents=20).load()
    assert again[""].train["text"] == first[""].train["text"] and _cache_files(tmp_path / "cache") == written
    more, _ = _corpus(path, tmp_path / "cache", max_documents=50).load()
    fresh, _ = _corpus(path, tmp_path / "fresh", max_documents=50).load()
    assert sorted(more[""].train["text"]) == sorted(fresh[""].train["text"]) != sorted(first[""].train["text"])


def test_no_module_reads_datasets_private_fingerprint() -> None:
    package = Path(__file__).parents[1] / "lightning_llm"
    readers = [
        f"{path}:{number}"
        for path in package.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\._fingerprint\b", line)
    ]
    assert not readers, f"datasets' private _fingerprint is read at {readers}: build keys with data.fingerprint"
