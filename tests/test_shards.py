"""data.format=shards: text read in pieces, tokenized once into LitData chunks, streamed, resumable, guarded."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_llm.data.shards import streaming_dataset
from lightning_llm.data.text_files import split_pieces, text_pieces
from lightning_llm.errors import ConfigError
from lightning_llm.recipe import train
from lightning_llm.recipe.checks import check_config

from .conftest import TINY, compose_config, straight_and_resumed_losses

SHARDS = [*TINY, "data.format=shards", "~callbacks.sample", "~callbacks.compute", "~callbacks.loss_spike"]


def test_a_file_without_newlines_is_read_in_bounded_pieces(tmp_path):
    (tmp_path / "one_line.txt").write_text("lorem ipsum " * 50_000)  # 600k characters, no newline
    (tmp_path / "paragraphs.txt").write_text("first\nstill first\n\nsecond\n\n\n\nthird")
    rows = list(text_pieces([str(tmp_path / "one_line.txt")], "document", piece_chars=65_536))
    assert max(len(r["text"]) for r in rows) <= 65_536 and len(rows) >= 10
    assert "".join(r["text"] for r in rows) == "lorem ipsum " * 50_000
    assert [r["ends_document"] for r in rows] == [False] * (len(rows) - 1) + [True]
    assert all(r["text"].endswith(" ") for r in rows[:-1]), "pieces end between words"
    rows = list(text_pieces([str(tmp_path / "paragraphs.txt")], "paragraph"))
    assert [r["text"] for r in rows] == ["first\nstill first", "second", "third"]


def test_one_long_line_trains_from_shards(make_cfg, tmp_path):
    import random

    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "with",
        "as",
        "on",
        "by",
        "it",
        "be",
        "this",
        "are",
        "from",
    ]
    rng = random.Random(0)
    (tmp_path / "one_line.txt").write_text(" ".join(rng.choice(words) for _ in range(120_000)))  # ~0.5 MB
    results = train(
        make_cfg(
            "data=text",
            f"data.path={tmp_path / 'one_line.txt'}",
            "data.format=shards",
            "data.holdout=tail",
            "tokenizer.vocab_size=300",
            "trainer.max_steps=20",
            "~callbacks.sample",
        )
    )
    assert results["data"]["documents"] == {"train": 1, "val": 1}  # one document, its tail held out
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]


def test_split_keeps_a_document_together_and_in_order():
    import datasets

    rows = [{"text": f"doc{d} piece{p}", "ends_document": p == 2} for d in range(20) for p in range(3)]
    ds = datasets.Dataset.from_list(rows)
    train, val = split_pieces(ds, "documents", 0.2, seed=0, path="x")
    for part in (train, val):
        texts = part["text"]
        assert all(texts[i].endswith("piece0") for i in range(0, len(texts), 3)), "whole documents, in order"
    assert len(val) == 12 and len(train) == 48
    tail_train, tail_val = split_pieces(ds, "tail", 0.1, seed=0, path="x")
    assert "".join(tail_train["text"]) + "".join(tail_val["text"]) == "".join(ds["text"])
    assert len("".join(tail_val["text"])) == pytest.approx(0.1 * len("".join(ds["text"])), abs=15)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("shards")
    results = train(compose_config([*SHARDS, "trainer.max_steps=40"], out, cache_dir))
    return out, results


def test_training_from_shards_learns(sharded_run):
    _, results = sharded_run
    assert results["metrics"]["val/loss"] < 0.9 * results["val_start"]["val/loss"]
    assert results["data"]["tokens"]["train"] > 50_000 and results["data"]["blocks"]["val"] > 0


def test_shards_are_written_once_and_reused(sharded_run, make_cfg, cache_dir):
    manifests = sorted((cache_dir / "shards").glob("*/corpus/*/lightning_llm.json"))
    assert [m.parent.name for m in manifests[-2:]] == ["train", "val"]
    stamps = {m: m.stat().st_mtime_ns for m in manifests}
    train(make_cfg("data.format=shards", "~callbacks.sample", "trainer.max_steps=2"))
    assert {m: m.stat().st_mtime_ns for m in manifests} == stamps


def test_a_shard_folder_of_another_tokenizer_is_refused(make_cfg, tmp_path):
    shard_dir = tmp_path / "shards"
    train(make_cfg("data.format=shards", f"data.shard_dir={shard_dir}", "trainer.max_steps=1", "~callbacks.sample"))
    other = make_cfg(
        "data.format=shards", f"data.shard_dir={shard_dir}", "tokenizer.vocab_size=400", output_dir=tmp_path / "b"
    )
    with pytest.raises(ConfigError, match=r"data.shard_dir=.* holds shards written with another tokenizer"):
        train(other)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_mid_epoch_continues_on_the_same_next_sample(tmp_path, cache_dir, workers):
    args = [
        *SHARDS,
        f"data.num_workers={workers}",
        "validate_before_fit=false",
        "scheduler=constant",
        "scheduler.warmup_steps=5",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=1",
    ]
    straight, resumed = straight_and_resumed_losses(args, tmp_path, cache_dir)
    assert [resumed[s] for s in range(30)] == [straight[s] for s in range(30)]


class CountingTokenizer:
    """Document n becomes the ids 100n .. 100n+98 and eos: every token of the corpus is different."""

    eos_id, vocab_size = 2**30, 2**31

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(range(100 * int(t), 100 * int(t) + 99)) for t in texts]


def test_writing_shards_leaves_the_seeds_as_they_were(tmp_path):
    """litdata.optimize reseeds the calling process: a run that writes its shards must train like one that
    reuses them."""
    import random

    import datasets
    import numpy as np

    from lightning_llm.data.shards import write_shards

    def draws() -> tuple:
        return torch.initial_seed(), torch.rand(1).item(), random.random(), float(np.random.rand())

    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    expected = draws()
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    ds = datasets.Dataset.from_dict({"text": [str(n) for n in range(50)]})
    write_shards(ds, CountingTokenizer(), str(tmp_path / "shards"), {"data": "counting"}, num_workers=2)
    assert draws() == expected


def test_each_rank_reads_its_own_blocks(tmp_path):
    import datasets
    from litdata.utilities.env import _DistributedEnv

    from lightning_llm.data.shards import write_shards

    ds = datasets.Dataset.from_dict({"text": [str(n) for n in range(400)]})
    write_shards(ds, CountingTokenizer(), str(tmp_path / "shards"), {"data": "counting"}, num_workers=2)
    seen = []
    for rank in range(2):
        dataset = streaming_dataset(str(tmp_path / "shards"), 50, shuffle=True, seed=5)
        dataset.distributed_env = _DistributedEnv(world_size=2, global_rank=rank, num_nodes=1)
        seen.append([int(block[0]) for block in dataset])
    assert len(set(seen[0])) == len(seen[0]) and len(set(seen[1])) == len(seen[1]), "no block twice on a rank"
    assert not set(seen[0]) & set(seen[1]), "no block on both ranks"
    assert len(seen[0]) + len(seen[1]) >= 400 * 100 // 50 - 2  # drop_last may leave out a block per rank


@pytest.mark.slow  # about 10 s; mixtures and shards each have fast tests
def test_a_mixture_streams_from_shards(make_cfg):
    results = train(make_cfg("data=mixture", "data.format=shards", "~callbacks.sample", "trainer.max_steps=30"))
    mixture = results["data"]["mixture"]
    assert abs(mixture["topics"]["realized"] - 0.7) < 0.15
    assert "val/topics/loss" in results["metrics"] and "val/docstrings/loss" in results["metrics"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.packing=pad",), "data.packing=pad needs documents in memory"),
        (("data.windows=random",), "data.windows=random needs tokens in memory"),
        (("data.format=parquet",), "data.format='parquet' is unknown"),
    ],
)
def test_what_shards_cannot_do_is_refused_up_front(make_cfg, overrides, message):
    fmt = [] if any("format" in o for o in overrides) else ["data.format=shards"]
    with pytest.raises(ConfigError, match=message):
        check_config(make_cfg(*fmt, *overrides))


def test_an_unreachable_bucket_is_one_line(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    cfg = make_cfg("data.format=shards", "data.shard_dir=s3://no-such-bucket-lightning-llm/shards")
    with pytest.raises(ConfigError, match=r"data.shard_dir='s3://no-such-bucket-lightning-llm/shards' is unreachable"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_results_name_the_shard_folder(sharded_run):
    out, _ = sharded_run
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["format"] == "shards" and "/shards/" in data["shards"]
