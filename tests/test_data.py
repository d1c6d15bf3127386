"""Embedded corpus, tokenizers (round trip, cache reuse) and packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class

from lightning_llm.conf import group_options
from lightning_llm.data import PackedBlocks, TextDataModule
from lightning_llm.data.corpus import materialize_embedded
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.data.loading import load_rows
from lightning_llm.errors import ConfigError
from lightning_llm.objectives import EXAMPLES, CausalLM, ObjectiveContext
from lightning_llm.recipe import TrainingRecipe, train
from lightning_llm.recipe.checks import composed_option
from lightning_llm.tokenizers import BASE_SPECIAL_TOKENS, load_tokenizer, train_or_load_tokenizer
from lightning_llm.tokenizers.trained import CharTokenizer


@pytest.fixture(scope="module")
def topics(cache_dir):
    path = materialize_embedded("embedded:pydoc_topics", cache_dir)
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def test_the_stdlib_corpora_come_from_one_parse(tmp_path, monkeypatch):
    import ast

    from lightning_llm.data import corpus

    source = 'def add(a, b):\n    """Add two numbers.\n\n    More."""\n    return a + b\n'
    parses = []

    def trees():
        parses.append(1)
        yield Path("arith.py"), ast.parse(source), source

    monkeypatch.setattr(corpus, "_stdlib_trees", trees)
    docs = materialize_embedded("embedded:python_docs", tmp_path)
    functions = materialize_embedded("embedded:stdlib_functions", tmp_path)
    materialize_embedded("embedded:stdlib_docstrings", tmp_path)
    assert len(parses) == 1
    rows = [json.loads(line) for line in functions.read_text().splitlines()]
    assert [(r["module"], r["summary"], r["code"]) for r in rows] == [
        ("arith", "Add two numbers.", "def add(a, b):\n    return a + b")
    ]
    parts = [materialize_embedded(f"embedded:{n}", tmp_path).read_text() for n in ("pydoc_topics", "stdlib_docstrings")]
    assert docs.read_text() == "".join(parts)
    assert json.loads(parts[1]) == {
        "text": "Add two numbers.\n\nMore.",
        "source": "stdlib:arith.py",
    }


def test_embedded_corpus_is_real_english(topics):
    assert len(topics) > 50
    assert sum(map(len, topics)) > 400_000
    assert any("for" in t and "loop" in t for t in topics)


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char"])
def test_tokenizer_round_trips_and_is_cached(topics, tmp_path, kind):
    kwargs = dict(type=kind, vocab_size=400, special_tokens=("<mask>",), data_fingerprint="abc", cache_dir=tmp_path)
    tok, path, trained = train_or_load_tokenizer(topics[:20], **kwargs)
    assert trained
    mtime = path.stat().st_mtime_ns
    again, path2, trained2 = train_or_load_tokenizer(topics[:20], **kwargs)
    assert not trained2 and path2 == path and path.stat().st_mtime_ns == mtime
    text = topics[3][:500] + " ünïcödé → ✓\ttabs  and  spaces"
    for t in (tok, again, load_tokenizer(path)):
        assert t.decode(t.encode(text)) == text or kind == "char"
    assert tok.token_to_id("<mask>") == 4  # objective tokens follow pad/unk/bos/eos
    changed, _, trained3 = train_or_load_tokenizer(topics[:20], **{**kwargs, "data_fingerprint": "other"})
    assert trained3, "new data means a new tokenizer"


def test_packed_blocks_keep_every_token_in_order():
    tokens = torch.arange(1000)
    length, stride = CausalLM().block_layout(31)
    blocks = PackedBlocks(tokens, length, stride)
    assert len(blocks) == (1000 - 32) // 31 + 1
    stream = torch.cat([blocks[0]] + [blocks[i][1:] for i in range(1, len(blocks))])
    assert torch.equal(stream, tokens[: len(stream)])
    assert len(tokens) - len(stream) < stride  # only a short tail is dropped
    objective = CausalLM()
    objective.configure(ObjectiveContext(tokenizer=CharTokenizer(BASE_SPECIAL_TOKENS)))
    batch = objective.collate([blocks[0], blocks[1]])
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])


def test_datamodule_stream_is_documents_joined_by_eos(make_cfg):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = make_cfg()
    dm = instantiate(cfg.data, objective=CausalLM(), tokenizer=OmegaConf.to_container(cfg.tokenizer))
    dm.prepare_data()
    dm.setup("fit")
    tok = dm.tokenizer
    val_tokens = dm.tokens("val")[0].tolist()
    pieces, current = [], []
    for t in val_tokens:
        if t == tok.eos_id:
            pieces.append(current)
            current = []
        else:
            current.append(t)
    assert not current and len(pieces) == dm.stats["documents"]["val"]
    for ids in pieces:
        assert tok.encode(tok.decode(ids)) == ids
    # the split is deterministic and does not depend on the run's seed
    dm2 = instantiate(cfg.data, objective=CausalLM(), tokenizer=OmegaConf.to_container(cfg.tokenizer))
    dm2.prepare_data()
    dm2.setup("fit")
    assert torch.equal(dm2.tokens("val")[0], dm.tokens("val")[0])
    assert not dm2.tokenizer_trained
    dm.objective.configure(dm.objective_context(None))
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (cfg.data.batch_size, cfg.data.block_size)


def test_local_text_and_jsonl_files(tmp_path, cache_dir):
    texts = [f"Document number {i}. " + "Some words repeat here. " * 30 for i in range(12)]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in texts))
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, t in enumerate(texts):
        (folder / f"{i}.txt").write_text(t)
    tokenizer = {"type": "char"}
    for path, column in ((tmp_path / "corpus.jsonl", "body"), (folder, "text")):
        dm = TextDataModule(
            CausalLM(), tokenizer, path=str(path), text_column=column, block_size=16, cache_dir=cache_dir
        )
        dm.prepare_data()
        dm.setup("fit")
        assert dm.stats["documents"]["train"] + dm.stats["documents"]["val"] == 12
        assert dm.stats["characters"]["train"] + dm.stats["characters"]["val"] == sum(map(len, texts))


def test_pipeline_runs_before_tokenization_and_reports(tmp_path, cache_dir):
    words = [
        "the",
        "model",
        "reads",
        "text",
        "and",
        "learns",
        "which",
        "word",
        "comes",
        "next",
        "in",
        "a",
        "sentence",
        "of",
        "plain",
        "English",
    ]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(60)) + f" doc {i}" for i in range(20)]
    texts += [texts[0], texts[1], "Write to alice@example.com or call +1 415 555 0100 about it. " * 10]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
    dm = TextDataModule(
        CausalLM(),
        {"type": "char"},
        path=str(tmp_path / "corpus.jsonl"),
        block_size=16,
        pipeline=["normalize", "pii", "dedup_exact"],
        cache_dir=cache_dir,
    )
    dm.prepare_data()
    dm.setup("fit")
    report = {step["name"]: step for step in dm.stats["pipeline"]}
    assert report["dedup_exact"]["documents_removed"] == 2
    assert report["pii"]["details"]["email"] == 10
    assert dm.stats["documents"]["train"] + dm.stats["documents"]["val"] == 21
    assert all("alice@example.com" not in t for t in dm.train_texts)


def test_vocabulary_too_small_for_the_corpus_is_named(topics, tmp_path):
    from lightning_llm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tokenizer.vocab_size=200 is too small .* more than \d+ pieces"):
        train_or_load_tokenizer(
            topics[:20],
            type="bpe",
            vocab_size=200,
            special_tokens=(),
            data_fingerprint="x",
            cache_dir=tmp_path,
            character_coverage=1.0,
        )


def _topics_file(tmp_path) -> str:
    from pydoc_data.topics import topics

    path = tmp_path / "topics.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics))[:200_000])
    return str(path)


def test_one_file_with_its_tail_held_out(tmp_path):
    path = _topics_file(tmp_path)
    text = Path(path).read_text()
    data = TextDataModule(
        CausalLM(),
        {"type": "char"},
        path=path,
        holdout="tail",
        val_fraction=0.1,
        block_size=64,
        cache_dir=str(tmp_path / "cache"),
    )
    data.prepare_data()
    data.setup("fit")
    train, val = (
        data.tokenizer.decode(data.tokens("train")[0].tolist()),
        data.tokenizer.decode(data.tokens("val")[0].tolist()),
    )
    assert train + val == text, "the stream is cut once, in order, nothing dropped (eos separators decode to nothing)"
    assert abs(len(val) / len(text) - 0.1) < 0.01 and train.endswith("\n")
    with pytest.raises(ConfigError, match="data.holdout=tail, or give a validation file with data.val_path"):
        TextDataModule(CausalLM(), {"type": "char"}, path=path, cache_dir=str(tmp_path / "cache")).prepare_data()


def test_a_separate_validation_file(tmp_path):
    path = _topics_file(tmp_path)
    (tmp_path / "val.txt").write_text("A held-out paragraph about the for statement.\n" * 40)
    data = TextDataModule(
        CausalLM(),
        {"type": "char"},
        path=path,
        val_path=str(tmp_path / "val.txt"),
        block_size=64,
        cache_dir=str(tmp_path / "cache"),
    )
    data.prepare_data()
    data.setup("fit")
    assert data.stats["documents"] == {"train": 1, "val": 1}
    assert "held-out paragraph" in data.tokenizer.decode(data.tokens("val")[0][:100].tolist())


def test_random_windows_start_anywhere_and_replay_on_resume():
    from lightning_llm.data.sampling import RandomWindowSampler

    sampler = RandomWindowSampler(num_tokens=10_000, length=65, num_examples=500, seed=3)
    first = list(sampler)
    assert len(first) == 500 and len({s % 64 for s in first}) > 50, "not on a 64-token grid"
    assert max(first) <= 10_000 - 65
    sampler.skip = 120
    assert list(sampler) == first[120:], "a resumed epoch continues the same starts"
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_random_windows_resume_exactly(tmp_path, cache_dir):

    from .conftest import TINY, straight_and_resumed_losses

    args = [
        *TINY,
        "~callbacks.sample",
        "data.windows=random",
        "validate_before_fit=false",
        "scheduler=constant",  # the same learning rate whatever max_steps is: the runs are comparable
        "scheduler.warmup_steps=5",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=1",
    ]
    straight, resumed = straight_and_resumed_losses(args, tmp_path, cache_dir)
    assert [resumed[s] for s in range(20, 30)] == [straight[s] for s in range(20, 30)]


# -- the datamodule interface ------------------------------------------------------------------------------


class NotOurs:
    """A datamodule target outside `LLMDataModule`."""

    def __init__(self, **settings) -> None:
        self.settings = settings


@pytest.mark.parametrize("option", group_options("data"))
def test_every_data_option_is_a_datamodule_of_the_interface(option):
    """Each data option builds an `LLMDataModule` that says, from its settings alone, which examples it yields."""
    data = composed_option("data", option)
    data_cls = get_class(data._target_)
    assert issubclass(data_cls, LLMDataModule) and data_cls.examples_of(data) in EXAMPLES


def test_a_datamodule_outside_the_interface_is_refused_at_the_check(make_cfg):
    with pytest.raises(ConfigError, match="is not a datamodule of this project: subclass .*LLMDataModule"):
        train(make_cfg(f"data._target_={__name__}.NotOurs"))


def test_held_out_evaluation_never_scores_a_training_document(make_cfg, cache_dir):
    """The perplexity task holds out by its own fraction and seed (0.05, 1234); with the run's data split another
    way it scored training documents as held-out ones (25 of 29). The run's training documents are dropped from
    its held-out rows, and results.json records which rows it scored."""
    cfg = make_cfg(
        "data.val_fraction=0.3",
        "data.split_seed=7",
        "eval=offline",
        "~eval.tasks.stdlib_summaries",
        "~eval.tasks.memorization",
        "~eval.tasks.human_eval",
        "eval.tasks.perplexity.path=embedded:pydoc_topics",  # the run's own corpus
        "eval.progress=false",
        "trainer.max_steps=2",
        "~callbacks.sample",
    )
    recipe = TrainingRecipe(cfg)
    task = recipe.run().to_dict()["eval"]["tasks"]["perplexity"]
    heldout = task["data"]["holdout"]
    table = [t for t in load_rows("embedded:pydoc_topics", None, "train", cache_dir)["text"] if t and t.strip()]
    scored = [table[i].strip() for i in heldout["rows_scored"]]
    trained = {text.strip() for text in recipe.datamodule.train_texts}
    assert task["n_samples"] == len(scored) > 0 and not trained & set(scored)
    assert heldout["training_rows_dropped"] > 0, "the task's own split held out documents the run trained on"


def test_under_ddp_each_process_resumes_its_own_share():
    """The sampler deals each epoch's order out to the processes itself: the shares are disjoint, together the
    epoch, and a resumed epoch skips each process's own trained rows (Lightning's DistributedSamplerWrapper
    indexed past the end of a skipped sampler: resuming a DDP run failed with an IndexError)."""
    from lightning_llm.data.sampling import ResumableSampler

    def share(rank: int, skip: int = 0) -> list[int]:
        sampler = ResumableSampler(num_examples=103, seed=7)
        sampler.distribute(num_replicas=2, rank=rank)
        sampler.set_epoch(3)
        sampler.skip = skip
        return list(sampler)

    first, second = share(0), share(1)
    assert len(first) == len(second) == 51 and not set(first) & set(second)
    single = ResumableSampler(num_examples=103, seed=7)
    single.set_epoch(3)
    assert sorted(first + second) == sorted(list(single)[:102])
    assert share(0, skip=8) == first[8:] and share(1, skip=8) == second[8:]


def test_preference_pairs_end_on_any_corpus():
    """A corpus of one module (no 'other' summary exists) or a summary of one repeated word (no shuffle differs):
    the pair builder looped forever on both; such rows are left out."""
    from lightning_llm.data.synthetic import summary_pairs

    one_module = [{"module": "m", "summary": f"adds {i} to numbers", "code": "...", "source": "m.py"} for i in range(3)]
    assert list(summary_pairs(one_module)) == []
    repeated = {"module": "n", "summary": "go go go", "code": "...", "source": "n.py"}
    assert list(summary_pairs([*one_module, repeated])) == []
    another = {"module": "n", "summary": "splits a path", "code": "...", "source": "n.py"}
    pairs = list(summary_pairs([*one_module, repeated, another]))
    assert len(pairs) == 4 and [p["other"] for p in pairs[:3]] == ["splits a path"] * 3
    for pair in pairs:
        assert pair["shuffled"] != pair["chosen"] and sorted(pair["shuffled"].split()) == sorted(pair["chosen"].split())
