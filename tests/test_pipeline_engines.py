"""The pipeline on Ray Data (`data.pipeline_engine=ray`, a local Ray with 2 workers) keeps exactly the
documents the local engine keeps, with the same report, and runs from the datamodule."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from lightning_llm.data.datamodule import TextDataModule
from lightning_llm.data.pipeline import apply_pipeline
from lightning_llm.objectives import CausalLM
from tests.test_pipeline import ALL_STEPS, mixed_corpus, planted_near_duplicates, without_seconds

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 worker CPUs for the module (the engine reuses a running Ray and leaves it up)."""
    from lightning_llm.data.pipeline.ray_engine import start_ray

    start_ray(2)
    yield
    ray.shutdown()


def test_ray_exact_dedup_keeps_the_same_documents(tmp_path):
    """The quick check (make test): a batch map, a filter and one distributed group-by."""
    texts = mixed_corpus(seed=5, n=300)
    dataset = Dataset.from_dict({"text": texts})
    steps = ["normalize", "quality", "dedup_exact"]
    local, local_report = apply_pipeline(dataset, steps)
    on_ray, ray_report = apply_pipeline(dataset, steps, engine="ray")
    assert on_ray["text"] == local["text"] and without_seconds(ray_report) == without_seconds(local_report)
    assert ray_report[2]["documents_removed"] > 0


@pytest.mark.slow  # about 50 s: three group-bys at ~5 s of Ray's shuffle start-up each, on 2 cores
def test_ray_keeps_the_same_documents_with_the_same_report():
    texts = mixed_corpus(seed=3, n=500) + planted_near_duplicates(seed=1, n_base=80)
    dataset = Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    steps = [*ALL_STEPS, "decontaminate"]
    against = [texts[3], texts[40]]
    local, local_report = apply_pipeline(dataset, steps, decontaminate_against=against)
    on_ray, ray_report = apply_pipeline(dataset, steps, decontaminate_against=against, engine="ray")
    assert on_ray.to_list() == local.to_list()  # same documents, same order, every column kept
    assert without_seconds(ray_report) == without_seconds(local_report)
    removed = {entry["name"]: entry["documents_removed"] for entry in ray_report}
    assert all(removed[name] > 0 for name in ("quality", "dedup_exact", "dedup_near", "decontaminate")), removed
    assert ray_report[ALL_STEPS.index("dedup_near")]["details"]["candidate_pairs"] > removed["dedup_near"] > 20


@pytest.mark.slow  # the engines' agreement above runs in make test
def test_datamodule_cleans_on_ray(tmp_path):
    texts = mixed_corpus(seed=4, n=120)
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
    stats, train_texts = {}, {}
    for engine in ("local", "ray"):
        dm = TextDataModule(
            CausalLM(),
            {"type": "char"},
            path=str(tmp_path / "corpus.jsonl"),
            block_size=16,
            pipeline=["normalize", "quality", "dedup_exact"],
            pipeline_engine=engine,
            cache_dir=str(tmp_path / engine),
        )
        dm.prepare_data()
        dm.setup("fit")
        stats[engine], train_texts[engine] = without_seconds(dm.stats["pipeline"]), list(dm.train_texts)
    assert stats["ray"] == stats["local"] and train_texts["ray"] == train_texts["local"]
    assert stats["ray"][2]["documents_removed"] > 0
