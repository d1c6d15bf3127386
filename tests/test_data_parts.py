"""The packed-text data layer part by part: the split, the cache key, the corpus, the token store, the sampler, and
the datamodule that composes them under Lightning's contract (prepare_data writes caches, setup builds state)."""

from __future__ import annotations

import os

import datasets
import numpy as np
import pytest
import torch

from lightning_llm.data.corpus import materialize_embedded
from lightning_llm.data.datamodule import TextDataModule
from lightning_llm.data.fingerprint import fingerprint, source_key
from lightning_llm.data.mixture import Source
from lightning_llm.data.row_sampler import RowSampler
from lightning_llm.data.splits import split_documents, split_tail, tail_cut
from lightning_llm.data.text_corpus import CorpusSettings, TextCorpus
from lightning_llm.data.token_store import TokenStore
from lightning_llm.errors import ConfigError
from lightning_llm.objectives import IGNORE_INDEX, CausalLM, ObjectiveContext, SpanCorruption
from lightning_llm.tokenizers import BASE_SPECIAL_TOKENS
from lightning_llm.tokenizers.trained import CharTokenizer


def _paragraphs(n: int = 30) -> list[str]:
    return [f"Paragraph {i} says " + " ".join(f"word{(i * j) % 17}" for j in range(40)) + "." for i in range(n)]


def _corpus_file(tmp_path, n: int = 30) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(_paragraphs(n)) + "\n")
    return str(path)


# -- splits --------------------------------------------------------------------------------------------------
def test_one_tail_cut_rule_for_documents_and_pieces():
    """The same text held out by its tail gives the same cut whether its rows are whole documents or pieces."""
    texts = ["alpha beta gamma\ndelta epsilon zeta eta " * 20, "theta iota kappa\nlambda mu " * 30]
    rows = datasets.Dataset.from_dict({"text": texts})
    pieces = [{"text": t[i : i + 50], "ends_document": i + 50 >= len(t)} for t in texts for i in range(0, len(t), 50)]
    pieces = datasets.Dataset.from_list(pieces)
    cut_rows = [split_tail(rows, 0.3, "x")[i]["text"] for i in (0, 1)]
    cut_pieces = [split_tail(pieces, 0.3, "x")[i]["text"] for i in (0, 1)]
    assert "".join(cut_rows[0]) == "".join(cut_pieces[0]) and "".join(cut_rows[1]) == "".join(cut_pieces[1])
    assert "".join(cut_rows[0]).endswith("\n"), "cut after the line break before the exact fraction"
    assert tail_cut("no line break here", 9) == 8 and tail_cut("nospaces", 3) == 3


def test_document_split_is_datasets_train_test_split_for_whole_documents_and_keeps_pieces_together():
    rows = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(40)]})
    train, val = split_documents(rows, 0.1, seed=7, path="x")
    reference = rows.train_test_split(test_size=4, seed=7, shuffle=True)
    assert train["text"] == reference["train"]["text"] and val["text"] == reference["test"]["text"]
    pieces = datasets.Dataset.from_list(
        [{"text": f"d{d}p{p}", "ends_document": p == 1} for d in range(40) for p in range(2)]
    )
    train, val = split_documents(pieces, 0.1, seed=7, path="x")
    assert [t[:-2] for t in val["text"][::2]] == [t[:-2] for t in val["text"][1::2]], "a document's pieces together"
    assert sorted({t[:-2] for t in val["text"]}) == sorted({t.replace("doc ", "d") for t in reference["test"]["text"]})
    with pytest.raises(ConfigError, match="data.holdout=tail"):
        split_documents(rows.select([0]), 0.1, seed=7, path="x")


# -- the cache key -------------------------------------------------------------------------------------------
def test_a_source_key_follows_the_files_not_their_loading(tmp_path):
    path = _corpus_file(tmp_path)
    key = source_key(path, {"text_column": "text"})
    assert key == source_key(path, {"text_column": "text"})
    assert key != source_key(path, {"text_column": "body"})
    with open(path, "a") as f:
        f.write("one more line\n")
    assert source_key(path, {"text_column": "text"}) != key, "a changed file is new data"
    assert fingerprint("a", 1) == fingerprint("a", 1) != fingerprint("a", 2)


def test_an_embedded_corpus_is_keyed_by_the_file_it_is_written_to(tmp_path):
    key = source_key("embedded:pydoc_topics", {}, tmp_path)
    written = materialize_embedded("embedded:pydoc_topics", tmp_path)
    assert source_key("embedded:pydoc_topics", {}, tmp_path) == key
    written.write_text(written.read_text() + '{"text": "a corpus built anew"}\n')
    assert source_key("embedded:pydoc_topics", {}, tmp_path) != key


# -- the corpus ----------------------------------------------------------------------------------------------
def test_the_corpus_is_keyed_before_it_loads_and_split_by_its_settings(tmp_path, monkeypatch):
    path = _corpus_file(tmp_path)

    def corpus(**settings) -> TextCorpus:
        return TextCorpus([Source("", path)], CorpusSettings(sample_by="paragraph", **settings), str(tmp_path))

    keys = corpus().keys
    assert corpus(val_fraction=0.2).keys != keys and corpus(pipeline=("normalize",)).keys != keys
    documents, stats = corpus(val_fraction=0.2).load()
    part = documents[""]
    assert (len(part.train), len(part.val)) == (24, 6) and stats == {}
    assert sorted(t.strip() for t in [*part.train["text"], *part.val["text"]]) == sorted(_paragraphs())
    monkeypatch.setattr("lightning_llm.data.text_corpus.load_rows", lambda *a, **k: pytest.fail("loaded"))
    assert corpus().keys == keys, "the key needs no loading"


# -- the token store -----------------------------------------------------------------------------------------
def test_the_token_store_writes_once_and_opens_without_the_documents(tmp_path):
    corpus = TextCorpus([Source("", _corpus_file(tmp_path, 10))], CorpusSettings(sample_by="paragraph"), str(tmp_path))
    documents, _ = corpus.load()
    characters = sorted(set("".join([*documents[""].train["text"], *documents[""].val["text"]])))
    tokenizer = CharTokenizer([*BASE_SPECIAL_TOKENS, *characters])
    keys = {name: d.keys for name, d in documents.items()}
    store = TokenStore(tmp_path / "cache", [""], None, None)
    assert not store.is_written(keys, "tok", "")
    store.write(documents, tokenizer, "tok", "")
    assert store.is_written(keys, "tok", "")
    reopened = TokenStore(tmp_path / "cache", [""], None, None)
    reopened.open(keys, "tok", "")
    train = reopened.tokens["train"][0]
    assert train.dtype == torch.int16 and int((train == tokenizer.eos_id).sum()) == len(documents[""].train)
    assert tokenizer.decode(train.tolist()) == "".join(documents[""].train["text"])
    assert reopened.counts[""]["documents"] == {"train": 9, "val": 1}
    assert reopened.totals()["tokens"]["train"] == len(train)
    assert isinstance(np.load(next((tmp_path / "cache" / "tokens").glob("*.npy")), mmap_mode="c"), np.memmap)


# -- the sampler ---------------------------------------------------------------------------------------------
class _Store:
    """A token store of given streams (two sources), in memory."""

    shards = None

    def __init__(self, streams: dict[str, list[torch.Tensor]]) -> None:
        self.tokens = streams
        names = "ab"[: len(streams["train"])]
        self.counts = {name: {"tokens": {s: len(streams[s][i]) for s in streams}} for i, name in enumerate(names)}


def test_the_sampler_draws_grid_random_padded_and_mixed_rows(tmp_path):
    eos = 3
    docs = torch.tensor([5, 6, 7, eos, 8, 9, eos, 10, 11, 12, 13, 14, eos] * 8)
    store = _Store({"train": [docs, docs + 100], "val": [docs, docs + 100]})
    objective = CausalLM()
    objective.configure(ObjectiveContext(tokenizer=CharTokenizer([*BASE_SPECIAL_TOKENS, "a"])))
    one = RowSampler(_Store({"train": [docs], "val": [docs]}), objective, eos, [1.0])
    assert one.block_counts(4)["train"] == (len(docs) - 5) // 4 + 1  # windows of block_size + 1 tokens, stride 4
    padded = RowSampler(_Store({"train": [docs], "val": [docs]}), objective, eos, [1.0], packing="pad")
    assert all(row[-1] == eos or len(row) == 5 for row in (padded.examples("train", 4)[i] for i in range(6)))
    mixed = RowSampler(store, objective, eos, [0.0, 1.0])
    assert mixed.examples("train", 4)[mixed.block_counts(4)["train"] - 1][1] == 1, "items carry their source"
    val = list(mixed.val_loader(4, 2))
    assert {int(b["source_ids"][0]) for b in val[:2]} == {0, 1}, "sources in turns"
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(val, mixed.val_loader(4, 2), strict=True))

    class Module:  # what the loader reads of a datamodule
        block_size, batch_size, num_workers, trainer = 4, 8, 0, None

    batch = next(iter(mixed.train_loader(Module())))
    assert batch["source_ids"].tolist() == [1] * 8 and int(batch["input_ids"].min()) >= 100, "weight 0 never drawn"
    with pytest.raises(ConfigError, match="data.block_size=400 is longer than"):
        one.check_blocks(400, {"a": "x"})


# -- the datamodule ------------------------------------------------------------------------------------------
def test_prepare_data_writes_caches_only_and_setup_builds_state_from_them(tmp_path, monkeypatch):
    path = _corpus_file(tmp_path)

    def datamodule() -> TextDataModule:
        settings = dict(path=path, sample_by="paragraph", block_size=16, batch_size=2, val_fraction=0.2)
        return TextDataModule(CausalLM(), {"type": "char"}, cache_dir=str(tmp_path / "cache"), **settings)

    first = datamodule()
    before = dict(vars(first))
    first.prepare_data()
    assert vars(first) == before, "prepare_data assigns no state"
    assert os.listdir(tmp_path / "cache" / "prepared")
    monkeypatch.setattr(TextCorpus, "load", lambda self: pytest.fail("setup read the corpus again"))
    second = datamodule()  # another process: setup alone, from the caches
    second.setup("fit")
    assert second.stats["documents"] == {"train": 24, "val": 6} and not second.tokenizer_trained
    second.objective.configure(second.objective_context(None))
    assert next(iter(second.train_dataloader()))["input_ids"].shape == (2, 16)


def test_the_datamodule_never_configures_the_objective_and_it_is_configured_once(tmp_path):
    """The datamodule exposes its tokenizer and packing and leaves the objective alone: collating before
    `configure`, or configuring twice, is a clear error; configured from the data, its loaders collate."""
    objective = CausalLM()
    settings = dict(path=_corpus_file(tmp_path), sample_by="paragraph", block_size=512, batch_size=2, packing="pad")
    data = TextDataModule(objective, {"type": "char"}, cache_dir=str(tmp_path / "cache"), **settings)
    data.prepare_data()
    data.setup("fit")
    with pytest.raises(RuntimeError, match="objective CausalLM is not configured: call objective.configure"):
        next(iter(data.train_dataloader()))
    context = data.objective_context(None)
    assert context.tokenizer is data.tokenizer and context.packing == "pad" and context.labels == ()
    objective.configure(context)
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].size(0) == 2 and (batch["labels"] == IGNORE_INDEX).any()  # a document a row, padded
    with pytest.raises(RuntimeError, match="configured already: configure it once"):
        objective.configure(context)
    with pytest.raises(ConfigError, match="data.packing='doc_mask' does not fit objective SpanCorruption"):
        SpanCorruption().configure(ObjectiveContext(packing="doc_mask"))
    default = CausalLM()
    default.configure(ObjectiveContext())
    assert default.packing == "concat"  # none given: the objective's default


def test_every_text_setting_is_checked_in_one_place():
    check = TextDataModule.check_settings
    with pytest.raises(ConfigError, match="data.windows=random reads a packed stream"):
        check({"windows": "random", "packing": "pad"})
    with pytest.raises(ConfigError, match="data.streaming=true writes token shards"):
        check({"streaming": True})
    with pytest.raises(ConfigError, match="data.pipeline_engine"):
        check({"pipeline_engine": "spark"})
    with pytest.raises(ConfigError, match="data.sources.a.weight"):
        check({"sources": {"a": {"path": "x", "weight": -1}}})
