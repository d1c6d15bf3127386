"""data.format=shards: text read in pieces, tokenized once into LitData chunks, streamed, resumable, guarded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lightning_llm.data.shards import streaming_dataset
from lightning_llm.data.splits import split_documents, split_tail
from lightning_llm.data.text_files import releasing_pages, text_pieces
from lightning_llm.errors import ConfigError
from lightning_llm.memory import drop_read_only_files
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
    (tmp_path / "blanks.txt").write_text("word " * 20_000 + " " * 200_000 + "last")  # blanks, then one word
    rows = list(text_pieces([str(tmp_path / "blanks.txt")], "document", piece_chars=65_536))
    assert all(r["text"].strip() for r in rows), "a piece of nothing but blanks is no row"
    assert rows[-1]["text"].strip() == "last" and rows[-1]["ends_document"]


def _resident_arrow_bytes() -> int:
    """Resident bytes of this process's mappings of Arrow files (Linux /proc/self/smaps)."""
    total, arrow = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            arrow = fields[-1].endswith(".arrow")
        elif arrow and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(sys.platform != "linux", reason="page residency is read from /proc")
def test_a_pass_over_an_arrow_table_keeps_only_a_bounded_part_resident(tmp_path):
    """Reading a 32 MB column through `releasing_pages` leaves at most about its release interval of the table
    resident (read plainly, all of it stays) and yields every row unchanged."""
    import datasets

    rows = [{"text": f"{i:07d} " + "x" * 4000} for i in range(8000)]  # 32 MB of text
    ds = datasets.Dataset.from_generator(lambda: iter(rows), cache_dir=str(tmp_path))
    ds = datasets.Dataset.from_file(ds.cache_files[0]["filename"])  # memory-mapped from its Arrow file
    plain = sum(len(t) for t in ds["text"])
    assert _resident_arrow_bytes() >= 30_000_000
    drop_read_only_files(".arrow")
    assert _resident_arrow_bytes() < 2**20
    seen, peak = [], 0
    for text in releasing_pages(ds["text"], every_chars=4_000_000):
        seen.append(text[:7])
        peak = max(peak, _resident_arrow_bytes()) if len(seen) % 500 == 0 else peak
    assert seen == [f"{i:07d}" for i in range(8000)] and plain == 8000 * 4008
    assert peak < 12_000_000, peak  # about the 4 MB interval, plus what Arrow reads ahead
    assert _resident_arrow_bytes() < 2**20


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
    train, val = split_documents(ds, 0.2, seed=0, path="x")
    for part in (train, val):
        texts = part["text"]
        assert all(texts[i].endswith("piece0") for i in range(0, len(texts), 3)), "whole documents, in order"
    assert len(val) == 12 and len(train) == 48
    tail_train, tail_val = split_tail(ds, 0.1, path="x")
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
    write_shards(ds, CountingTokenizer(), str(tmp_path / "shards"), {"data": "counting"}, 2, tmp_path / "work")
    assert draws() == expected


def test_each_rank_reads_its_own_blocks(tmp_path):
    import datasets
    from litdata.utilities.env import _DistributedEnv

    from lightning_llm.data.shards import write_shards

    ds = datasets.Dataset.from_dict({"text": [str(n) for n in range(400)]})
    write_shards(ds, CountingTokenizer(), str(tmp_path / "shards"), {"data": "counting"}, 2, tmp_path / "work")
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
        (("data.streaming=true", "data.format=memory"), "data.streaming=true writes token shards as it reads"),
        (("data.streaming=true", "data.holdout=tail"), "data.holdout=tail needs the corpus's length"),
        (("data.streaming=true", "data.pipeline=[quality]"), "data.pipeline needs the whole corpus at once"),
        (("data.streaming=true", "data.canaries.n=2"), "data.canaries are planted into stored documents"),
        (("data.streaming=true", "eval=offline"), "eval task 'memorization' reads the training texts"),
    ],
)
def test_what_shards_and_streams_cannot_do_is_refused_up_front(make_cfg, overrides, message):
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


@pytest.mark.slow  # about 13 s: two runs through a mocked S3
def test_shards_in_an_object_store_are_written_once_and_reused(make_cfg, tmp_path, monkeypatch):
    """data.shard_dir=s3://...: LitData writes the chunks, and the manifest is read and written in the bucket too
    (moto stands in for S3 in this process)."""
    import boto3
    from moto import mock_aws

    from lightning_llm.data import shards

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path))  # LitData's default cache of chunks read from a bucket: ~/.lightning
    writes = []
    write_shards = shards.write_shards
    monkeypatch.setattr(shards, "write_shards", lambda *a, **k: writes.append(a[2]) or write_shards(*a, **k))
    quick = ["data.format=shards", "data.shard_dir=s3://runs/shards", "trainer.max_steps=2", "~callbacks.sample"]
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="runs")
        for key in ("shards/corpus/train/chunk-from-a-killed-write.bin", "shards/corpus/train-old/kept.bin"):
            s3.put_object(Bucket="runs", Key=key, Body=b"x")
        first = train(make_cfg(*quick, output_dir=tmp_path / "a"))
        assert writes == ["s3://runs/shards/corpus/train", "s3://runs/shards/corpus/val"]
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="runs")["Contents"]}
        assert {"shards/corpus/train/lightning_llm.json", "shards/corpus/val/lightning_llm.json"} <= keys
        assert "shards/corpus/train/chunk-from-a-killed-write.bin" not in keys, "an unfinished folder is rewritten"
        assert "shards/corpus/train-old/kept.bin" in keys, "a sibling folder is not touched"
        again = train(make_cfg(*quick, output_dir=tmp_path / "b"))  # its manifest read back from the bucket
        assert len(writes) == 2 and again["data"]["tokens"] == first["data"]["tokens"]
    assert not (tmp_path / ".lightning").exists(), "chunks read from the bucket are kept in our cache"


def test_results_name_the_shard_folder(sharded_run):
    out, _ = sharded_run
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["format"] == "shards" and "/shards/" in data["shards"]


def _topics_jsonl(path: Path, keys: list[str] | None = None) -> list[str]:
    from pydoc_data.topics import topics

    texts = [topics[k] for k in (keys if keys is not None else sorted(topics))]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return texts


def test_a_streamed_corpus_goes_into_shards_with_no_stored_copy(make_cfg, tmp_path, cache_dir):
    """data.streaming reads JSON lines with `datasets` streaming straight into the shards: no Arrow copy of the
    text is written, every document lands in train or val whole (held out by a seeded hash), and it trains."""
    texts = _topics_jsonl(tmp_path / "topics.jsonl")
    arrow_before = set(Path(cache_dir).rglob("*.arrow"))
    overrides = ["data=text", f"data.path={tmp_path / 'topics.jsonl'}", "data.format=shards", "data.streaming=true"]
    results = train(make_cfg(*overrides, "data.val_fraction=0.2", "trainer.max_steps=20", "~callbacks.sample"))
    assert not set(Path(cache_dir).rglob("*.arrow")) - arrow_before, "a streamed corpus is never stored"
    documents, characters = results["data"]["documents"], results["data"]["characters"]
    assert documents["train"] + documents["val"] == len(texts) and 0 < documents["val"] < 0.35 * len(texts)
    assert characters["train"] + characters["val"] == sum(map(len, texts))
    assert results["metrics"]["val/loss"] < results["val_start"]["val/loss"]


def test_streamed_and_stored_reading_write_the_same_shards(make_cfg, tmp_path):
    """With a validation file (no split), streaming the corpus and storing it first give the same tokens."""
    _topics_jsonl(tmp_path / "train.jsonl")
    _topics_jsonl(tmp_path / "val.jsonl", ["if", "for", "while"])
    common = ["data=text", f"data.path={tmp_path / 'train.jsonl'}", f"data.val_path={tmp_path / 'val.jsonl'}"]
    common += ["data.format=shards", "trainer.max_steps=2", "~callbacks.sample"]
    stored = train(make_cfg(*common, output_dir=tmp_path / "stored"))["data"]
    streamed = train(make_cfg(*common, "data.streaming=true", output_dir=tmp_path / "streamed"))["data"]
    for key in ("tokens", "documents", "characters"):
        assert streamed[key] == stored[key], key
    assert streamed["shards"] != stored["shards"]


def test_a_streamed_text_folder_holds_out_whole_documents(tmp_path):
    """Text files stream in pieces, one stream shard per file; the hash split keeps every piece of a document
    on one side, and every document on exactly one."""
    import datasets

    from lightning_llm.data.splits import split_stream

    for n in range(2):
        paragraphs = [f"file{n} paragraph {i} " + "word " * (50 if i % 3 else 600) for i in range(60)]
        (tmp_path / f"part{n}.txt").write_text("\n\n".join(paragraphs))
    files = sorted(str(p) for p in tmp_path.glob("*.txt"))
    kwargs = {"files": files, "sample_by": "paragraph", "piece_chars": 1000, "document_ids": True}
    ds = datasets.IterableDataset.from_generator(text_pieces, gen_kwargs=kwargs)
    train_part, val_part = split_stream(ds, 0.3, seed=1)
    assert train_part.num_shards == val_part.num_shards == 2
    sides: dict[str, dict[str, str]] = {"train": {}, "val": {}}
    for side, part in (("train", train_part), ("val", val_part)):
        for row in part:
            sides[side][row["document"]] = sides[side].get(row["document"], "") + row["text"]
    assert not set(sides["train"]) & set(sides["val"]), "no document on both sides"
    whole = {f"{f}:{i}": None for f in files for i in range(60)}
    assert set(sides["train"]) | set(sides["val"]) == set(whole)
    assert all(text.endswith("word ") and text.count("paragraph") == 1 for s in sides.values() for text in s.values())
    assert 0.15 < len(sides["val"]) / 120 < 0.45
    again = split_stream(ds, 0.3, seed=1)[1]
    assert {row["document"] for row in again} == set(sides["val"]), "the same split every time"


def test_a_hub_name_is_read_by_streaming(make_cfg, tmp_path, monkeypatch):
    """A `datasets` name (online) goes through `load_dataset(..., streaming=True)` and the same path as local
    streams; here the Hub is stood in for by a local JSON stream of the same type (`IterableDataset`)."""
    import datasets

    texts = _topics_jsonl(tmp_path / "topics.jsonl")
    real, calls = datasets.load_dataset, []

    def hub(name, *args, **kwargs):
        calls.append((name, kwargs.get("streaming")))
        return real("json", data_files=str(tmp_path / "topics.jsonl"), split="train", streaming=True)

    from lightning_llm.data import shards

    revision, writes = ["commit-1"], []
    write_shards = shards.write_shards
    monkeypatch.setattr(shards, "write_shards", lambda *a, **k: writes.append(a[2]) or write_shards(*a, **k))
    monkeypatch.setattr("lightning_llm.data.loading.hub_available", lambda: True)
    monkeypatch.setattr("lightning_llm.data.fingerprint.dataset_revision", lambda name: revision[0])
    monkeypatch.setattr(datasets, "load_dataset", hub)
    overrides = ["data=text", "data.path=someone/topics", "data.format=shards", "data.streaming=true"]
    cfg = make_cfg(*overrides, "data.val_fraction=0.2", "trainer.max_steps=2", "~callbacks.sample")
    results = train(cfg)
    assert calls and all(call == ("someone/topics", True) for call in calls)
    assert sum(results["data"]["documents"].values()) == len(texts)
    assert len(writes) == 2  # train and val
    revision[0] = "commit-2"  # the dataset moved on: its shards are new ones, in new folders
    train(
        make_cfg(
            *overrides, "data.val_fraction=0.2", "trainer.max_steps=2", "~callbacks.sample", output_dir=tmp_path / "b"
        )
    )
    assert len(writes) == 4 and not set(writes[:2]) & set(writes[2:])


def test_an_empty_stream_and_a_document_cap_on_text_pieces_are_one_line(make_cfg, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a.txt").write_text("one\n\ntwo\n\nthree")
    stream = ["data=text", "data.format=shards", "data.streaming=true"]
    with pytest.raises(ConfigError, match=r"empty.jsonl' has no rows: the corpus is empty"):
        train(make_cfg(*stream, f"data.path={tmp_path / 'empty.jsonl'}"))
    with pytest.raises(ConfigError, match=r"data.max_documents with data.streaming counts rows of whole documents"):
        train(make_cfg(*stream, f"data.path={tmp_path / 'a.txt'}", "data.max_documents=2", output_dir=tmp_path / "b"))
