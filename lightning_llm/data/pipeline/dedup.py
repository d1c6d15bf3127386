"""Exact and near (MinHash-LSH) deduplication and n-gram decontamination.

Each has two halves: a pure per-batch function that `datasets.map` can run in parallel (hashes, signatures,
n-gram hits) and, for dedup, a stateful decider that sees documents in order in one process and keeps the first
of each duplicate group. The deciders' results do not depend on how documents are split into batches, so the
in-memory and the streaming paths agree.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from xxhash import xxh3_64_intdigest

from lightning_llm.data.pipeline.text import char_hashes, text_ngrams, word_hashes

_SHIFT32 = np.uint64(32)


class FirstSeen:
    """For each uint64 key, the smallest id it has come with. Keys arrive with non-decreasing ids.

    Stored as a few sorted runs (merged like a binary counter: O(log n) runs, O(n log n) total work), so memory
    is 16 bytes per distinct key and no Python object per key."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def first(self, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The first id of each key, counting this batch (remembered for the next)."""
        keys = np.asarray(keys, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")  # sorted queries search much faster; stable keeps id order
        sorted_keys, sorted_ids = keys[order], np.asarray(ids, dtype=np.int64)[order]
        found = np.full(len(keys), -1, dtype=np.int64)
        for run_keys, run_ids in self._runs:
            pos = np.minimum(np.searchsorted(run_keys, sorted_keys), len(run_keys) - 1)
            hit = run_keys[pos] == sorted_keys
            found[hit] = run_ids[pos[hit]]
        new = found < 0
        if new.any():
            new_keys, new_ids = sorted_keys[new], sorted_ids[new]
            starts = np.concatenate([[True], new_keys[1:] != new_keys[:-1]])  # first of each run of equal keys
            first_ids = new_ids[starts]
            found[new] = first_ids[np.cumsum(starts) - 1]
            self._add(new_keys[starts], first_ids)
        result = np.empty_like(found)
        result[order] = found
        return result

    def _add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        self._runs.append((keys, ids))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            keys_b, ids_b = self._runs.pop()
            keys_a, ids_a = self._runs.pop()
            merged = np.concatenate([keys_a, keys_b])
            order = np.argsort(merged, kind="stable")
            self._runs.append((merged[order], np.concatenate([ids_a, ids_b])[order]))


# -- exact --------------------------------------------------------------------------------------
def exact_key(text: str) -> int:
    """64-bit hash of the text case-folded with all whitespace runs made one space."""
    return xxh3_64_intdigest(" ".join(text.casefold().split()).encode("utf-8", "surrogatepass"))


class ExactDuplicates:
    """Keeps a document unless an earlier one had the same `exact_key`."""

    def __init__(self) -> None:
        self.index = FirstSeen()
        self.stats: dict[str, int] = {}

    def __call__(self, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return self.index.first(keys, ids) == ids


# -- MinHash ------------------------------------------------------------------------------------
def shingles(texts: list[str], shingle: str = "word", ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hashes of the word or character n-grams of each text, one text after the other; how many each has).
    Words are lower-cased with punctuation dropped; a text shorter than one n-gram is one shingle."""
    tokens, lengths = word_hashes(texts) if shingle == "word" else char_hashes(texts)
    return text_ngrams(tokens, lengths, ngram, short=True)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (a, b) of `num_perm` hash functions x -> (a*x + b) >> 32 on 32-bit x (multiply-shift)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash(
    shingle_hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192
) -> np.ndarray:
    """MinHash signatures (documents, len(a)) uint32 of documents whose `counts` shingles lie one after the
    other in `shingle_hashes`; a document without shingles gets all 2**32-1."""
    out = np.full((len(counts), len(a)), np.iinfo(np.uint32).max, dtype=np.uint32)
    docs = np.flatnonzero(counts)
    ends = np.cumsum(counts[docs])
    start = 0
    while start < len(docs):  # groups of documents with about `chunk` shingles in all
        begin = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, begin + chunk, side="right")))
        values = np.multiply.outer(shingle_hashes[begin : ends[stop - 1]] >> _SHIFT32, a)
        values += b
        values >>= _SHIFT32
        group = docs[start:stop]
        out[group] = np.minimum.reduceat(values, ends[start:stop] - counts[group] - begin, axis=0)
        start = stop
    return out


def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows): the most rows per band such that a pair at Jaccard `threshold` still becomes a candidate
    with probability >= `recall`; candidates are then checked on their full signatures, so precision comes
    from that check and the bands only need to be selective enough to keep the candidates few."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


class NearDuplicates:
    """Drops a document when, in one of its LSH bands, the first document with the same band has an estimated
    Jaccard similarity (the fraction of equal signature values) >= `threshold` with it.

    Memory: for each document its signature's low 16 bits (2 bytes per permutation; an equal-value test then
    over-counts by 2**-16, negligible) and 16 bytes per distinct band."""

    def __init__(
        self,
        threshold: float,
        num_perm: int,
        bands: int | None = None,
        rows: int | None = None,
        record_matches: bool = False,
    ) -> None:
        if bands is None or rows is None:
            bands, rows = lsh_params(threshold, num_perm)
        if bands * rows > num_perm:
            raise ValueError(f"bands*rows = {bands}*{rows} exceeds num_perm={num_perm}")
        self.threshold, self.bands, self.rows = threshold, bands, rows
        self.index = FirstSeen()
        self._band_multipliers = permutations(bands * rows, seed=1)[0].reshape(bands, rows)
        self._signatures = np.empty((0, num_perm), dtype=np.uint16)
        self.count = 0
        self.stats = {"candidate_pairs": 0}
        self.matches: dict[int, int] | None = {} if record_matches else None  # dropped id -> earlier id matched

    def _store(self, signatures: np.ndarray) -> None:
        end = self.count + len(signatures)
        if end > len(self._signatures):
            grown = np.empty((max(end, 2 * len(self._signatures)), signatures.shape[1]), dtype=np.uint16)
            grown[: self.count] = self._signatures[: self.count]
            self._signatures = grown
        self._signatures[self.count : end] = signatures
        self.count = end

    def similarity(self, left: np.ndarray, right: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Estimated Jaccard similarity of the pairs (left[i], right[i]) of stored documents."""
        return np.concatenate(
            [
                (self._signatures[left[i : i + chunk]] == self._signatures[right[i : i + chunk]]).mean(axis=1)
                for i in range(0, len(left), chunk)
            ]
            or [np.empty(0)]
        )

    def __call__(self, signatures: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Keep mask for a batch of signatures; `ids` must continue 0, 1, 2, ... from the previous batch."""
        signatures = np.asarray(signatures, dtype=np.uint32)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and ids[0] != self.count:
            raise ValueError(f"documents must arrive in order: expected id {self.count}, got {ids[0]}")
        self._store(signatures.astype(np.uint16))
        used = signatures[:, : self.bands * self.rows].astype(np.uint64).reshape(len(ids), self.bands, self.rows)
        band_keys = (used * self._band_multipliers).sum(axis=2, dtype=np.uint64)
        first = self.index.first(band_keys.ravel(), np.repeat(ids, self.bands)).reshape(len(ids), self.bands)
        later = np.broadcast_to(ids[:, None], first.shape)
        earlier = first < later  # the band's first document came before this one: a candidate pair
        pairs = np.unique(np.stack([later[earlier], first[earlier]], axis=1), axis=0)
        self.stats["candidate_pairs"] += len(pairs)
        similar = pairs[self.similarity(pairs[:, 0], pairs[:, 1]) >= self.threshold]
        if self.matches is not None:
            for dropped, match in similar[::-1]:  # the smallest matching id wins
                self.matches[int(dropped)] = int(match)
        return ~np.isin(ids, similar[:, 0])


def find_near_duplicates(
    texts: Iterable[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: str = "word",
    ngram: int = 5,
    bands: int | None = None,
    rows: int | None = None,
    seed: int = 42,
    batch_size: int = 1000,
) -> dict[int, int]:
    """{index of a near-duplicate document: index of the earlier document it matched}, as dedup_near decides."""
    a, b = permutations(num_perm, seed)
    decide = NearDuplicates(threshold, num_perm, bands, rows, record_matches=True)
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        decide(minhash(*shingles(batch, shingle, ngram), a, b), np.arange(start, start + len(batch)))
    return decide.matches


# -- decontamination ----------------------------------------------------------------------------
def eval_ngrams(texts: list[str], n: int) -> tuple[np.ndarray, int]:
    """(sorted unique hashes of every word n-gram of the eval `texts`, number of texts shorter than n words)."""
    hashes, counts = text_ngrams(*word_hashes(texts), n)
    return np.unique(hashes), int((counts == 0).sum())


def contaminated(texts: list[str], ngrams: np.ndarray, n: int) -> np.ndarray:
    """Whether each text shares at least one word n-gram with the sorted eval `ngrams`."""
    hashes, counts = text_ngrams(*word_hashes(texts), n)
    if len(ngrams) == 0 or len(hashes) == 0:
        return np.zeros(len(texts), dtype=bool)
    hit = ngrams[np.minimum(np.searchsorted(ngrams, hashes), len(ngrams) - 1)] == hashes
    owner = np.repeat(np.arange(len(texts)), counts)
    return np.bincount(owner[hit], minlength=len(texts)) > 0
