"""Shard folders are checked before training (each file's size and checksum in the manifest), LitData's working
files stay in our cache, and the training loader starts `data.num_workers` workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lightning_llm.data import shard_manifest
from lightning_llm.data.shard_manifest import MANIFEST, checked_manifest
from lightning_llm.data.shards import ShardStore, write_shards
from lightning_llm.data.text_corpus import Documents
from lightning_llm.errors import ConfigError
from lightning_llm.recipe import train

from .conftest import TINY, run_cli
from .test_shards import CountingTokenizer

EXPECTED = {"data": "counting"}


def _rows(n: int = 400):
    import datasets

    return datasets.Dataset.from_dict({"text": [str(i) for i in range(n)]})


def _damaged(path: str, difference: str, folder: str) -> str:
    """The one-line error for a changed shard file, as a pattern."""
    fix = rf"delete the folder {re.escape(folder)} and rerun"
    return rf"shard file {re.escape(path)} {difference} \(truncated or overwritten .*\): {fix}"


def test_a_truncated_overwritten_or_missing_chunk_is_one_line(tmp_path, monkeypatch):
    folder = str(tmp_path / "shards")
    write_shards(_rows(), CountingTokenizer(), folder, EXPECTED, 1, tmp_path / "work")
    hashed = []
    real_hash = shard_manifest._xxh3
    monkeypatch.setattr(shard_manifest, "_xxh3", lambda path: hashed.append(path.name) or real_hash(path))
    assert set(checked_manifest(folder, EXPECTED, "data.shard_dir")["files"]) == {"index.json", "chunk-0-0.bin"}
    assert hashed == [], "the folder this process wrote is not hashed again"
    monkeypatch.setattr(shard_manifest, "_hashed", set())  # as in a fresh process: hashed once, then sizes only
    checked_manifest(folder, EXPECTED, "data.shard_dir")
    checked_manifest(folder, EXPECTED, "data.shard_dir")
    assert sorted(hashed) == ["chunk-0-0.bin", "index.json"]

    chunk = Path(folder) / "chunk-0-0.bin"
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-4])
    with pytest.raises(
        ConfigError, match=_damaged(str(chunk), f"is {len(data) - 4} bytes, its manifest recorded {len(data)}", folder)
    ) as err:
        checked_manifest(folder, EXPECTED, "data.shard_dir")
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    chunk.write_bytes(bytes(len(data)))  # the same size, other bytes
    monkeypatch.setattr(shard_manifest, "_hashed", set())
    with pytest.raises(
        ConfigError, match=_damaged(str(chunk), "has xxh3_64 [0-9a-f]+, its manifest recorded [0-9a-f]+", folder)
    ):
        checked_manifest(folder, EXPECTED, "data.shard_dir")
    chunk.unlink()
    with pytest.raises(ConfigError, match=_damaged(str(chunk), "is missing", folder)):
        checked_manifest(folder, EXPECTED, "data.shard_dir")


def test_a_damaged_chunk_stops_the_run_before_training(make_cfg, tmp_path):
    shard_dir = tmp_path / "shards"
    args = ("data.format=shards", f"data.shard_dir={shard_dir}", "trainer.max_steps=1", "~callbacks.sample")
    train(make_cfg(*args, output_dir=tmp_path / "a"))
    chunk = next((shard_dir / "corpus" / "train").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:-2])
    with pytest.raises(ConfigError, match=rf"shard file {re.escape(str(chunk))} is \d+ bytes, its manifest recorded"):
        train(make_cfg(*args, output_dir=tmp_path / "b"))
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_shards_written_without_checksums_are_written_again(tmp_path, caplog):
    """An older version wrote no checksums: the folder is written again (the same data and tokenizer give the same
    tokens), since nothing else could tell a damaged chunk from a whole one."""
    parts = {"": Documents(_rows(), _rows(40), {"train": "a", "val": "b"})}
    keys = {"": parts[""].keys}
    ShardStore(str(tmp_path / "shards"), tmp_path / "cache", [""], 1, 0).write(parts, CountingTokenizer(), "t", "")
    manifest_path = tmp_path / "shards" / "corpus" / "train" / MANIFEST
    old = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({k: v for k, v in old.items() if k != "files"}))
    store = ShardStore(str(tmp_path / "shards"), tmp_path / "cache", [""], 1, 0)
    assert not store.is_written(keys, "t", "")
    store.write(parts, CountingTokenizer(), "t", "")
    store.open(keys, "t", "")
    new = json.loads(manifest_path.read_text())
    assert new.pop("files")["chunk-0-0.bin"] == old.pop("files")["chunk-0-0.bin"] and new == old
    assert "have no checksums (an older version wrote them): writing them again" in caplog.text
    assert store.tokens["", "train"] == old["tokens"]


@pytest.mark.slow  # about 5 s: LitData writes through a mocked S3
def test_chunks_in_a_bucket_are_checked_by_size_and_etag(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    for key, value in {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    folder = "s3://runs/shards/corpus/train"
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="runs")
        write_shards(_rows(), CountingTokenizer(), folder, EXPECTED, 1, tmp_path / "work")
        files = checked_manifest(folder, EXPECTED, "data.shard_dir")["files"]
        assert set(files) == {"index.json", "chunk-0-0.bin"} and all(f["etag"] for f in files.values())
        key = "shards/corpus/train/chunk-0-0.bin"
        data = s3.get_object(Bucket="runs", Key=key)["Body"].read()
        s3.put_object(Bucket="runs", Key=key, Body=bytes(len(data)))
        with pytest.raises(
            ConfigError, match=_damaged(f"{folder}/chunk-0-0.bin", "has etag \\w+, its manifest recorded \\w+", folder)
        ):
            checked_manifest(folder, EXPECTED, "data.shard_dir")
        s3.put_object(Bucket="runs", Key=key, Body=data[:-2])
        truncated = f"is {len(data) - 2} bytes, its manifest recorded {len(data)}"
        with pytest.raises(ConfigError, match=_damaged(f"{folder}/chunk-0-0.bin", truncated, folder)):
            checked_manifest(folder, EXPECTED, "data.shard_dir")
    assert not list((tmp_path / "work").iterdir()), "LitData's working folder is removed"


def left_in(folder: Path) -> set[Path]:
    """What a folder holds (nothing when it does not exist)."""
    return set(folder.iterdir()) if folder.is_dir() else set()


def test_a_shards_run_writes_nothing_outside_the_run_folder_and_the_cache(tmp_path, cache_dir):
    """LitData's defaults are the system temporary folder (/tmp/chunks, /tmp/data) and ~/.lightning, torch's and
    matplotlib's are $TMPDIR and ~/.cache: a shards run keeps them all in the cache (the shards go to a new folder,
    so they are written in this run)."""
    temp, home = tmp_path / "tmp", tmp_path / "home"
    temp.mkdir(), home.mkdir()
    working = cache_dir / "litdata"  # LitData's working folder: other tests of this session may have left theirs
    before = left_in(working)
    args = [*TINY, "data.format=shards", f"data.shard_dir={tmp_path / 'shards'}", "~callbacks.sample"]
    args += ["trainer.max_steps=2", "trainer.limit_val_batches=1", f"paths.cache_dir={cache_dir}", "hydra.run.dir=run"]
    result = run_cli(*args, cwd=tmp_path, env={"TMPDIR": str(temp), "HOME": str(home)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(temp.iterdir()) == []  # torch's compile cache too (it went to $TMPDIR/torchinductor_<user>)
    assert list(home.iterdir()) == []  # no ~/.lightning, ~/.cache/matplotlib, ~/.config/matplotlib
    assert list((tmp_path / "shards").glob("corpus/train/chunk-*.bin"))
    assert left_in(working) <= before, "this run's LitData working folder is removed"


@pytest.mark.parametrize("workers", [0, 1])
def test_the_shard_loader_starts_data_num_workers_workers(make_cfg, workers):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lightning_llm.objectives import CausalLM

    cfg = make_cfg("data.format=shards", f"data.num_workers={workers}")
    dm = instantiate(cfg.data, objective=CausalLM(), tokenizer=OmegaConf.to_container(cfg.tokenizer))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_dataloader().num_workers == workers
