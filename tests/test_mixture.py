"""data.sources: corpora mixed by weight, realized proportions reported, validation per source, resumable."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_llm.data.mixture import MixtureSampler, parse_sources
from lightning_llm.errors import ConfigError
from lightning_llm.recipe import train

MIXTURE = ["data=mixture", "data.val_fraction=0.1", "~callbacks.sample", "trainer.max_steps=40"]


def test_draws_follow_the_weights_not_the_sizes():
    sampler = MixtureSampler([100, 5_000, 900], [0.2, 0.3, 0.5], seed=3, num_examples=30_000)
    sources = torch.bucketize(torch.tensor(list(sampler)), torch.tensor([100, 5_100]), right=True)
    shares = torch.bincount(sources, minlength=3) / 30_000
    torch.testing.assert_close(shares, torch.tensor([0.2, 0.3, 0.5]), atol=0.015, rtol=0)


def test_a_resumed_epoch_replays_the_same_draws():
    sampler = MixtureSampler([50, 70], [1.0, 3.0], seed=7)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip = 33
    assert list(sampler) == full[33:]
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_a_source_of_weight_zero_is_never_drawn():
    sampler = MixtureSampler([10, 10], [0.0, 1.0], seed=0, num_examples=500)
    assert min(sampler) >= 10


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"a": {"path": "x.txt", "weight": float("nan")}}, "data.sources.a.weight=nan must be a number >= 0"),
        ({"a": {"weight": 1}}, "data.sources.a.path is missing"),
    ],
)
def test_bad_sources_are_named(sources, message):
    with pytest.raises(ConfigError, match=message):
        parse_sources(sources)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, cache_dir):
    from .conftest import TINY, compose_config

    out = tmp_path_factory.mktemp("mixture")
    return out, train(compose_config([*TINY, *MIXTURE], out, cache_dir))


def test_realized_proportions_are_reported_and_near_the_weights(mixed_run):
    out, results = mixed_run
    mixture = json.loads((out / "results.json").read_text())["data"]["mixture"]
    assert set(mixture) == {"topics", "docstrings"}
    assert mixture["topics"]["weight"] == 0.7 and mixture["docstrings"]["weight"] == 0.3
    # 40 steps x 8 rows = 320 draws: the share of either source is within 4 standard deviations of its weight
    assert abs(mixture["topics"]["realized"] - 0.7) < 4 * (0.21 / 320) ** 0.5
    assert sum(m["tokens"] for m in mixture.values()) == results["tokens"]
    assert "train/mix/topics" in (out / "csv" / "metrics.csv").read_text().splitlines()[0]


def test_each_source_is_validated_on_its_own(mixed_run):
    _, results = mixed_run
    metrics = results["metrics"]
    losses = [metrics["val/topics/loss"], metrics["val/docstrings/loss"]]
    assert min(losses) <= metrics["val/loss"] <= max(losses)
    assert losses[0] != losses[1]
    sources = results["data"]["sources"]
    assert sources["topics"]["documents"]["val"] >= 1 and sources["docstrings"]["tokens"]["train"] > 0


def test_resume_continues_the_token_count_per_source(mixed_run, make_cfg, tmp_path):
    out, first = mixed_run
    resumed = train(make_cfg(*MIXTURE[:-1], "trainer.max_steps=50", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"))
    mixture = resumed["data"]["mixture"]
    assert sum(m["tokens"] for m in mixture.values()) == resumed["tokens"] == first["tokens"] * 50 // 40


def test_a_source_without_text_is_named(make_cfg, tmp_path):
    (tmp_path / "blank.txt").write_text("   \n\n  ")
    cfg = make_cfg("data=mixture", f"data.sources.docstrings.path={tmp_path / 'blank.txt'}")
    with pytest.raises(ConfigError, match="data.sources.docstrings.path=.*blank.txt' has no text"):
        train(cfg)
