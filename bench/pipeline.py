"""Data-preparation pipeline throughput: MB/s per step, and near-dedup time against corpus size.

    python -m bench.pipeline [--quick] [--slow] [--num-proc N] [--datasketch]
    python -m bench.pipeline --engines [--quick] [--slow]   # local vs Ray Data, 1 and 2 workers

Per step: each step alone, then all five, over >= 50 MB of generated English-like text (5 MB with --quick) with
e-mail addresses and phone numbers, junk, exact and near duplicates, as an in-memory `datasets.Dataset` (nothing
is cached between runs). Near dedup: 10k and 100k short documents (1M with --slow; 2k and 20k with --quick), to
show that time grows about linearly. --datasketch also times `datasketch` MinHash + MinHashLSH on 20k short
documents against ours (when it is installed).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
from datasets import Dataset  # noqa: E402

from bench.common import load_average  # noqa: E402
from lightning_llm.data.pipeline import apply_pipeline  # noqa: E402

STEPS = ["normalize", "quality", "pii", "dedup_exact", "dedup_near"]
STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with", "a", "in", "is", "it", "for", "on", "as"]


def vocabulary(rng: random.Random, size: int = 20_000) -> tuple[list[str], list[float]]:
    """Pseudo-words with Zipf-like cumulative weights; stop words first (the most frequent)."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    words = STOP_WORDS + [
        "".join(rng.choice(letters[: rng.randint(8, 26)]) for _ in range(rng.randint(2, 10))) for _ in range(size)
    ]
    cumulative, total = [], 0.0
    for rank in range(len(words)):
        total += 1 / (rank + 1)
        cumulative.append(total)
    return words, cumulative


def document(rng: random.Random, vocab: tuple[list[str], list[float]], n_words: int) -> str:
    """Sentences of 5-25 words, paragraphs of 1-6 sentences."""
    words = rng.choices(vocab[0], cum_weights=vocab[1], k=n_words)
    paragraphs, sentences, i = [], [], 0
    while i < n_words:
        length = rng.randint(5, 25)
        sentences.append(" ".join(words[i : i + length]).capitalize() + ".")
        i += length
        if rng.random() < 0.25:
            paragraphs.append(" ".join(sentences))
            sentences = []
    return "\n\n".join([*paragraphs, " ".join(sentences)]).strip()


def corpus(megabytes: float, seed: int = 0) -> list[str]:
    """About `megabytes` MB of documents: 80% prose (some with PII), 5% junk, 7% exact, 8% near duplicates."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    docs: list[str] = []
    size = 0
    while size < megabytes * 1e6:
        kind = rng.random()
        if kind < 0.07 and docs:
            doc = rng.choice(docs)
        elif kind < 0.15 and docs:
            words = rng.choice(docs).split(" ")
            words[rng.randrange(len(words))] = rng.choice(vocab[0])
            doc = " ".join(words)
        elif kind < 0.2:
            doc = "click here " * rng.randint(10, 200)
        else:
            doc = document(rng, vocab, rng.randint(100, 1500))
            if kind > 0.9:
                doc += f"\nContact: user{rng.randint(0, 10**6)}@example.com, +1 (202) 555-{rng.randint(0, 9999):04d}."
        docs.append(doc)
        size += len(doc.encode())
    return docs


def short_documents(n: int, seed: int = 0) -> list[str]:
    """`n` documents of 30-60 words, 10% of them a lightly edited copy of an earlier one."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    docs: list[str] = []
    for _ in range(n):
        if docs and rng.random() < 0.1:
            words = rng.choice(docs).split(" ")
            words[rng.randrange(len(words))] = rng.choice(vocab[0])
            docs.append(" ".join(words))
        else:
            docs.append(" ".join(rng.choices(vocab[0], cum_weights=vocab[1], k=rng.randint(30, 60))))
    return docs


def _row(step: str, texts: list[str], seconds: float, removed: int | None = None) -> dict:
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    return {
        "step": step,
        "documents": len(texts),
        "MB": round(megabytes, 2),
        "seconds": round(seconds, 3),
        "MB/s": round(megabytes / seconds, 2),
        "docs/s": round(len(texts) / seconds),
        "removed": removed,
    }


def _timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def measure_steps(texts: list[str], num_proc: int | None) -> list[dict]:
    """Each step alone over `texts`, then all of them in order."""
    dataset = Dataset.from_dict({"text": texts})
    eval_texts = [" ".join(t.split()[:40]) for t in texts[::50]]
    rows = []
    for steps in [[step] for step in [*STEPS, "decontaminate"]] + [STEPS]:
        seconds, (_, report) = _timed(
            lambda steps=steps: apply_pipeline(dataset, steps, num_proc=num_proc, decontaminate_against=eval_texts)
        )
        name = steps[0] if len(steps) == 1 else "all five, in order"
        rows.append(_row(name, texts, seconds, sum(e["documents_removed"] for e in report)))
    return rows


def measure_near_dedup(sizes: list[int], num_proc: int | None) -> list[dict]:
    """dedup_near over short documents of each size."""
    rows = []
    for n in sizes:
        texts = short_documents(n)
        dataset = Dataset.from_dict({"text": texts})
        seconds, (_, report) = _timed(lambda d=dataset: apply_pipeline(d, ["dedup_near"], num_proc=num_proc))
        rows.append(_row(f"dedup_near, {n:,} short docs", texts, seconds, report[0]["documents_removed"]))
    return rows


def measure_datasketch(n: int = 20_000) -> list[dict]:
    """datasketch MinHash (128 permutations, word 5-grams) + MinHashLSH at 0.8, against our dedup_near."""
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print("[bench] datasketch is not installed: skipping the comparison")
        return []
    from lightning_llm.data.pipeline.text import words

    texts = short_documents(n)

    def run_datasketch() -> int:
        lsh, removed = MinHashLSH(threshold=0.8, num_perm=128), 0
        for i, text in enumerate(texts):
            w = words(text)
            minhash = MinHash(num_perm=128, seed=42)
            minhash.update_batch([" ".join(w[k : k + 5]).encode() for k in range(max(1, len(w) - 4))])
            removed += bool(lsh.query(minhash))
            lsh.insert(str(i), minhash)
        return removed

    seconds, removed = _timed(run_datasketch)
    ours = measure_near_dedup([n], None)[0]
    ours["step"] = f"dedup_near (numpy), {n:,} short docs"
    return [ours, _row(f"datasketch MinHash+LSH, {n:,} short docs", texts, seconds, removed)]


ENGINES = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def _engine_run(engine: str, workers: int, jobs: list[tuple[str, Dataset, list[str], list[str]]]) -> dict:
    """{(job, step): (documents in, seconds)} for each job's steps on one engine; Ray starts once, untimed."""
    from lightning_llm.data.pipeline.ray_engine import start_ray

    started = engine == "ray" and start_ray(workers)
    results = {}
    try:
        for job, dataset, steps, eval_texts in jobs:
            _, report = apply_pipeline(
                dataset, steps, num_proc=workers, decontaminate_against=eval_texts, engine=engine
            )
            for e in report:
                results[job, e["name"]] = (e["documents_in"], e["seconds"], e["documents_removed"])
    finally:
        if started:
            import ray

            ray.shutdown()
    return results


def measure_engines(texts: list[str], sizes: list[int]) -> list[dict]:
    """Documents/s of each step (the whole pipeline in order over `texts`, then dedup_near alone over short
    documents of each size) on the local engine and on Ray Data, with 1 and 2 workers each."""
    eval_texts = [" ".join(t.split()[:40]) for t in texts[::50]]
    jobs = [("corpus", Dataset.from_dict({"text": texts}), [*STEPS, "decontaminate"], eval_texts)]
    jobs += [(f"{n:,} short docs", Dataset.from_dict({"text": short_documents(n)}), ["dedup_near"], []) for n in sizes]
    measured = {}
    for engine, workers in ENGINES:
        print(f"[bench] engine {engine}, {workers} worker(s)", flush=True)
        measured[engine, workers] = _engine_run(engine, workers, jobs)
    rows = []
    for key, (documents, _, removed) in measured["local", 1].items():
        row = {"step": f"{key[1]} ({key[0]})", "documents": documents, "removed": removed}
        for engine, workers in ENGINES:
            seconds = measured[engine, workers][key][1]
            row[f"{engine} {workers}"] = round(documents / seconds) if seconds else None
            assert measured[engine, workers][key][2] == removed, f"{engine} removed a different count at {key}"
        row["ray 2 / local 2"] = round(row["ray 2"] / row["local 2"], 2) if row["local 2"] else None
        rows.append(row)
    return rows


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table (readable as plain text too)."""
    columns = columns or ["step", "documents", "MB", "seconds", "MB/s", "docs/s", "removed"]
    cells = [[str(row[c]) if row[c] is not None else "" for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|")
    for r in cells:
        lines.append(
            "| "
            + " | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
            + " |"
        )
    return "\n".join(lines)


def main(quick: bool, slow: bool = False, num_proc: int | None = None, datasketch: bool = False) -> list[dict]:
    """Run the measurements, print the table, return its rows."""
    datasets.disable_progress_bars()
    megabytes = 5 if quick else 50
    sizes = [2_000, 20_000] if quick else [10_000, 100_000] + ([1_000_000] if slow else [])
    print(f"[bench] pipeline steps over {megabytes} MB of generated text (num_proc={num_proc})", flush=True)
    rows = measure_steps(corpus(megabytes), num_proc)
    print(f"[bench] dedup_near over {', '.join(f'{n:,}' for n in sizes)} short documents", flush=True)
    rows += measure_near_dedup(sizes, num_proc)
    if datasketch:
        rows += measure_datasketch()
    print(table(rows))
    print(f"load average (1/5/15 min): {load_average()}")
    return rows


def main_engines(quick: bool, slow: bool, near_only: bool = False) -> list[dict]:
    """Local vs Ray Data, 1 and 2 workers: print the documents/s table, return its rows. `near_only`: near dedup
    of the short documents, with the whole pipeline over a 2 MB corpus only (e.g. the 1M row alone)."""
    datasets.disable_progress_bars()
    megabytes = 2 if quick or near_only else 20
    sizes = [20_000] if quick else ([] if near_only else [100_000]) + ([1_000_000] if slow else [])
    print(f"[bench] engines over {megabytes} MB of generated text and {sizes} short documents", flush=True)
    rows = measure_engines(corpus(megabytes), sizes)
    columns = ["step", "documents", "removed", *(f"{e} {w}" for e, w in ENGINES), "ray 2 / local 2"]
    print("documents/s per step (Ray's start-up not counted; the same documents removed on every engine)")
    print(table(rows, columns))
    print(f"load average (1/5/15 min): {load_average()}")
    return rows


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 MB and 2k/20k short documents: a smoke check")
    p.add_argument("--slow", action="store_true", help="also near-dedup 1M short documents")
    p.add_argument("--num-proc", type=int, default=None, help="datasets.map workers (default: in-process)")
    p.add_argument("--datasketch", action="store_true", help="also time datasketch on 20k short documents")
    p.add_argument("--engines", action="store_true", help="local vs Ray Data, 1 and 2 workers (documents/s)")
    p.add_argument("--near-only", action="store_true", help="with --engines --slow: the 1M near-dedup row only")
    args = p.parse_args(argv)
    if args.engines:
        main_engines(args.quick, args.slow, args.near_only)
        return 0
    main(args.quick, slow=args.slow, num_proc=args.num_proc, datasketch=args.datasketch)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
