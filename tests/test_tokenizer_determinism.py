"""A trained tokenizer is a function of its cache key: the same corpus and settings give the same model file in
every process, also when the corpus is larger than the sample it trains on (SentencePiece's own sampler is seeded
from the OS, so the sample is drawn by us, seeded)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lightning_llm.tokenizers import train_or_load_tokenizer
from lightning_llm.tokenizers.trained import _sample_lines

TRAIN = """
import sys
from pathlib import Path
from lightning_llm.tokenizers import train_or_load_tokenizer
corpus, kind, cache, characters = sys.argv[1:]
texts = Path(corpus).read_text().split("\\n\\n")
_, path, trained = train_or_load_tokenizer(
    texts, kind, ["<mask>"], "stdlib", cache, vocab_size=600, input_characters=int(characters)
)
assert trained
print(path.relative_to(cache))
"""


def _stdlib_sources(path: Path, characters: int) -> None:
    """About `characters` characters of the standard library's sources, module after module."""
    written = 0
    with path.open("w") as out:
        for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            text = source.read_text(encoding="utf-8", errors="replace")
            out.write(text + "\n\n")
            written += len(text)
            if written >= characters:
                return


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_two_fresh_processes_train_the_same_tokenizer_file(tmp_path, kind):
    corpus = tmp_path / "stdlib.txt"
    _stdlib_sources(corpus, 2_000_000)
    characters = 400_000  # a fifth of the corpus: the tokenizer trains on a sample of its lines
    runs = []
    for name in ("a", "b"):
        cache = tmp_path / name
        args = [sys.executable, "-c", TRAIN, str(corpus), kind, str(cache), str(characters)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(cache / done.stdout.strip())
    assert runs[0].relative_to(tmp_path / "a") == runs[1].relative_to(tmp_path / "b"), "the same cache key"
    assert runs[0].read_bytes() == runs[1].read_bytes()


def test_the_line_sample_is_uniform_bounded_and_seeded():
    lines = [str(i) for i in range(100_000)]
    sample = _sample_lines(iter(lines), 1_000, seed=0)
    assert len(sample) == len(set(sample)) == 1_000
    assert _sample_lines(iter(lines), 1_000, seed=0) == sample
    assert _sample_lines(iter(lines), 1_000, seed=1) != sample
    positions = sorted(int(line) for line in sample)
    assert 45_000 < sum(positions) / 1_000 < 55_000, "drawn from the whole stream, not its opening"
    assert sum(p >= 90_000 for p in positions) > 60, "the last tenth is in the sample too"
    assert _sample_lines(iter(lines[:10]), 1_000, seed=0) == lines[:10], "fewer lines than the sample: all, in order"


def test_sentencepiece_trains_on_a_sample_bounded_in_characters_as_well_as_lines(tmp_path, monkeypatch):
    """Paragraph-long lines would let a line budget (input_sentence_size) hold a whole large corpus: the budget is
    cut to about tokenizer.input_characters at the corpus's mean line length, and the lines are a uniform sample of
    all of it, which SentencePiece takes as it is."""
    from pydoc_data.topics import topics

    import sentencepiece as spm

    seen: dict = {}
    real_train = spm.SentencePieceTrainer.train

    def train(**kwargs):
        lines = list(kwargs.pop("sentence_iterator"))
        seen.update(lines=lines, size=kwargs["input_sentence_size"], shuffle=kwargs["shuffle_input_sentence"])
        return real_train(sentence_iterator=iter(lines), **kwargs)

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", train)
    paragraphs = [f"{copy} " + " ".join(text.split())[:10_000] for copy in range(30) for text in topics.values()]
    mean = sum(map(len, paragraphs)) / len(paragraphs)
    budget = int(1_200 * mean)  # about 1,200 of the ~2,400 lines
    train_or_load_tokenizer(paragraphs, "bpe", (), "bounded", tmp_path, vocab_size=400, input_characters=budget)
    assert abs(seen["size"] - 1_200) <= 1 and len(seen["lines"]) == seen["size"] and not seen["shuffle"]
    assert abs(sum(map(len, seen["lines"])) - budget) < 0.2 * budget
    copies = {int(line.split(" ", 1)[0]) for line in seen["lines"]}
    assert copies == set(range(30)), "every part of the corpus is in the sample"
