"""Tokenizers we train: SentencePiece (BPE, unigram) and characters, trained once per corpus and cached."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm
from filelock import FileLock

from lightning_llm.errors import ConfigError
from lightning_llm.files import write_bytes_atomic
from lightning_llm.memory import release_free_heap
from lightning_llm.tokenizers.base import BASE_SPECIAL_TOKENS, Tokenizer

TOKENIZER_TYPES = ("bpe", "unigram", "char", "hf")  # hf: a Hugging Face tokenizer, loaded, never trained


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model (BPE or unigram) with byte fallback: every string round-trips."""

    def __init__(self, model_proto: bytes) -> None:
        self._proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def token_to_id(self, token: str) -> int:
        return self.sp.piece_to_id(token)

    def to_bytes(self) -> bytes:
        return self._proto


class CharTokenizer(Tokenizer):
    """One token per character seen in training (as nanoGPT's Shakespeare); unseen characters map to unk."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab
        self.index = {piece: i for i, piece in enumerate(vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[self.index.get(ch, self.unk_id) for ch in text] for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        n_special = len(BASE_SPECIAL_TOKENS)
        return "".join(self.vocab[i] for i in map(int, ids) if i >= n_special and i < len(self.vocab))

    def token_to_id(self, token: str) -> int:
        return self.index.get(token, self.unk_id)

    def to_bytes(self) -> bytes:
        return json.dumps({"type": "char", "vocab": self.vocab}).encode()


def trained_from_bytes(data: bytes) -> Tokenizer:
    """Rebuild one of our trained tokenizers from its `to_bytes()` (JSON for characters, a SentencePiece proto)."""
    if data[:1] == b"{":
        return CharTokenizer(json.loads(data)["vocab"])
    return SentencePieceTokenizer(data)


def check_tokenizer_type(type: str) -> None:
    """Fail fast on an unknown tokenizer.type."""
    if type not in TOKENIZER_TYPES:
        raise ConfigError(f"tokenizer.type={type!r} is unknown: use one of {list(TOKENIZER_TYPES)}")


MAX_SENTENCE_CHARS = 16_384  # SentencePiece skips longer sentences (its limit is 64 KiB)
SAMPLE_LINES_FOR_LENGTH = 10_000  # lines read to estimate the mean line length of a corpus
MIN_SAMPLE_LINES = 1_000  # the smallest line sample SentencePiece is given (it needs more than 100)
SAMPLE_SEED = 0  # the line sample's seed: the same corpus gives the same sample, hence the same tokenizer


def _sentences(texts: Iterable[str]) -> Iterator[str]:
    """SentencePiece trains on lines, so feed each document line by line; a longer line (text with no newline)
    goes in parts cut at spaces, so that no text is skipped."""
    for text in texts:
        for line in text.splitlines():
            while len(line) > MAX_SENTENCE_CHARS:
                cut = line.rfind(" ", 0, MAX_SENTENCE_CHARS) + 1 or MAX_SENTENCE_CHARS
                yield line[:cut]
                line = line[cut:]
            if line.strip():
                yield line


def _sample_lines(lines: Iterable[str], size: int, seed: int) -> list[str]:
    """A uniform sample of `size` of `lines` (all of them when there are fewer), the same for the same lines and
    seed: reservoir sampling (Algorithm R), one draw per line past the first `size`."""
    rng = random.Random(seed)
    sample: list[str] = []
    for seen, line in enumerate(lines):
        if seen < size:
            sample.append(line)
            continue
        slot = int(rng.random() * (seen + 1))
        if slot < size:
            sample[slot] = line
    return sample


def _handed_over(sample: list[str]) -> Iterator[str]:
    """The lines of `sample` in order, each dropped from it as it is taken, so that the sample is not held twice
    while SentencePiece copies it."""
    sample.reverse()
    while sample:
        yield sample.pop()


def train_or_load_tokenizer(
    texts: Iterable[str],
    type: str,
    special_tokens: tuple[str, ...] | list[str],
    data_fingerprint: str,
    cache_dir: str | os.PathLike,
    vocab_size: int | None = None,
    input_sentence_size: int = 2_000_000,
    character_coverage: float = 0.9995,
    input_characters: int = 50_000_000,
) -> tuple[Tokenizer, Path, bool]:
    """Train a tokenizer on `texts`, or reuse the one cached for this config and data fingerprint.

    SentencePiece trains on a uniform sample of at most `input_sentence_size` lines and about `input_characters`
    characters, so its memory stays bounded however large the corpus. The sample is drawn here with a fixed seed
    (SentencePiece's own sampler is seeded from the OS), so the same settings and data give the same tokenizer
    in every process: the cache key names one tokenizer.
    Returns the tokenizer, its file, and whether it was trained now (False on a cache hit).
    """
    check_tokenizer_type(type)
    if type != "char" and not vocab_size:
        raise ConfigError(f"tokenizer.vocab_size is required for tokenizer.type={type}: set e.g. 4096")
    settings = {
        "type": type,
        "vocab_size": vocab_size if type != "char" else None,
        "special_tokens": list(special_tokens),
        "input_sentence_size": input_sentence_size,
        "character_coverage": character_coverage,
        "data": data_fingerprint,
    }
    if type != "char":
        if not (isinstance(input_characters, int) and input_characters > 0):
            raise ConfigError(f"tokenizer.input_characters={input_characters!r} must be an integer > 0")
        settings["input_characters"] = input_characters
        settings["sample_seed"] = SAMPLE_SEED  # tokenizers cached before the sample was seeded are not reused
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"{type}-{key}" / "tokenizer.model"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return trained_from_bytes(path.read_bytes()), path, False
        if type == "char":
            chars = sorted({ch for text in texts for ch in text})
            vocab = [*BASE_SPECIAL_TOKENS, *special_tokens, *(c for c in chars if c not in special_tokens)]
            data = CharTokenizer(vocab).to_bytes()
        else:
            data = _train_sentencepiece(
                texts, type, vocab_size, special_tokens, input_sentence_size, character_coverage, input_characters
            )
            release_free_heap()  # the trainer's and the sample's memory, freed, leaves the process too
        write_bytes_atomic(path, data)
        (path.parent / "settings.json").write_text(json.dumps(settings, indent=2))
    return trained_from_bytes(data), path, True


def _train_sentencepiece(
    texts: Iterable[str],
    model_type: str,
    vocab_size: int,
    special_tokens: tuple[str, ...] | list[str],
    input_sentence_size: int,
    character_coverage: float,
    input_characters: int,
) -> bytes:
    model = io.BytesIO()
    sentences = _sentences(texts)
    # a sample of lines: long lines (paragraphs) would let a line budget keep the whole corpus, so the budget is
    # also cut to about `input_characters` at the mean length of the first lines
    first = list(itertools.islice(sentences, SAMPLE_LINES_FOR_LENGTH))
    mean_chars = max(1.0, sum(map(len, first)) / max(1, len(first)))
    input_sentence_size = max(MIN_SAMPLE_LINES, min(input_sentence_size, int(input_characters / mean_chars)))
    sample = _sample_lines(itertools.chain(first, sentences), input_sentence_size, SAMPLE_SEED)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_handed_over(sample),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small corpus gets a smaller vocabulary instead of an error
            character_coverage=character_coverage,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            user_defined_symbols=list(special_tokens),
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=False,  # the sample is ours: SentencePiece takes it as it is
            max_sentence_length=1 << 16,
            num_threads=max(1, len(os.sched_getaffinity(0))),
            minloglevel=2,
        )
    except RuntimeError as err:
        if "Vocabulary size is smaller than required_chars" in str(err):
            needed = re.findall(r"(\d+) vs (\d+)", str(err))[0][1]
            raise ConfigError(
                f"tokenizer.vocab_size={vocab_size} is too small for this corpus "
                f"(it needs more than {needed} pieces): raise tokenizer.vocab_size or lower "
                "tokenizer.character_coverage (rare characters then fall back to bytes)"
            ) from err
        raise
    return model.getvalue()
