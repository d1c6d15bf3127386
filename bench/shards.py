"""Peak memory as the corpus grows: in-memory tokens vs streamed token shards (`python -m bench.shards`).

Generated English-like text (words of the embedded corpus drawn with their own frequencies, in paragraphs) of
10 MB, 100 MB and 1 GB, plus one 200 MB file with no newline at all. Each run is `python train.py data=text
data.path=FILE data.format=F` for a few steps in its own process (`stream`: `data.format=shards
data.streaming=true`, no stored copy of the text); its peak RSS (the kernel's high-water mark of the process and
its children) and wall time are reported, with the ratio of peak RSS to the corpus size.
`--sizes 10,100` limits the sizes (MB); `--quick` runs 2 MB and 5 MB only.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import ROOT, machine

MB = 1_000_000


def vocabulary() -> tuple[list[str], np.ndarray]:
    """Words of the embedded help() topics and their frequencies."""
    from pydoc_data.topics import topics

    counts = Counter(re.findall(r"[A-Za-z]+|[.,;:()]", " ".join(topics.values())))
    words, freq = zip(*counts.most_common(20_000), strict=True)
    p = np.array(freq, dtype=np.float64)
    return list(words), p / p.sum()


def generate(path: Path, size: int, newlines: bool, seed: int = 0) -> None:
    """Write about `size` bytes of text: paragraphs of 50-400 words (or one endless line)."""
    words, p = vocabulary()
    rng = np.random.default_rng(seed)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            ids = rng.choice(len(words), size=200_000, p=p)
            text = " ".join(words[i] for i in ids)
            if newlines:
                pieces = text.split(" ")
                cuts = np.cumsum(rng.integers(50, 400, size=len(pieces) // 50))
                text = "\n\n".join(" ".join(pieces[a:b]) for a, b in zip([0, *cuts[:-1]], cuts, strict=False))
                text += "\n\n"
            else:
                text += " "
            f.write(text)
            written += len(text.encode())


def run(path: Path, fmt: str, workdir: Path, paragraphs: bool) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, status) of a short training run on `path`: documents are its paragraphs,
    or (one long line) its last 5% is held out."""
    split = ["data.sample_by=paragraph"] if paragraphs else ["data.holdout=tail"]
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=text",
        f"data.path={path}",
        *(["data.format=shards", "data.streaming=true"] if fmt == "stream" else [f"data.format={fmt}"]),
        *split,
        "trainer.max_steps=20",
        "trainer.val_check_interval=20",
        "trainer.limit_val_batches=2",
        "validate_before_fit=false",
        "callbacks=last_checkpoint",
        "logger=none",
        f"paths.cache_dir={workdir / 'cache'}",
        f"hydra.run.dir={workdir / 'runs' / f'{path.stem}-{fmt}'}",
    ]
    started = time.perf_counter()
    log = workdir / f"{path.stem}-{fmt}.stderr"
    with log.open("w") as err:  # a file, not a pipe: a pipe nobody reads until the end fills up and blocks the run
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
    stderr = log.read_text(errors="replace")
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    note = "ok" if code == 0 else f"exit {code}: {(stderr.strip().splitlines() or [''])[-1][:80]}"
    return usage.ru_maxrss / 1024, seconds, note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shards", description=__doc__)
    p.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB, comma-separated")
    p.add_argument("--formats", default="memory,shards,stream", help="stream: shards with data.streaming=true")
    p.add_argument("--quick", action="store_true", help="2 MB and 5 MB: checks the script, measures little")
    args = p.parse_args(argv)
    sizes = [2, 5] if args.quick else [int(s) for s in args.sizes.split(",")]
    formats = args.formats.split(",")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    lines = [
        f"# Peak memory by corpus size ({machine().get('cpu', '')})\n",
        "| corpus | format | peak RSS (MB) | RSS / corpus | wall (s) | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        corpora = [(f"{size} MB, paragraphs", work / f"corpus-{size}mb.txt", size, True) for size in sizes]
        if not args.quick:
            corpora.append(("200 MB, no newline", work / "one-line-200mb.txt", 200, False))
        for label, path, size, newlines in corpora:
            generate(path, size * MB, newlines)
            for fmt in formats:
                if fmt != "shards" and not newlines:
                    continue  # one 200 MB document: memory reads it whole, by design; a stream cannot hold out a tail
                rss, seconds, note = run(path, fmt, work, newlines)
                lines.append(f"| {label} | {fmt} | {rss:,.0f} | {rss / size:.1f}x | {seconds:.0f} | {note} |")
                print(lines[-1], file=sys.stderr, flush=True)
            path.unlink()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
