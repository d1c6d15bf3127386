"""Per-document text functions: Unicode/whitespace normalisation, PII redaction, words and n-gram hashes."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from itertools import chain

import numpy as np
from xxhash import xxh3_64_intdigest

# -- normalize ----------------------------------------------------------------------------------
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85]")
# C0/C1 controls except tab, newline, vertical tab and form feed (whitespace: collapsed below), plus
# zero-width space and the byte-order mark
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u200b\ufeff]")


def normalize_text(text: str, form: str = "NFC") -> str:
    """Unicode `form` (NFC or NFKC), newlines unified, control characters removed, runs of other whitespace
    collapsed to one space, spaces around newlines and at both ends stripped; newlines themselves are kept."""
    text = unicodedata.normalize(form, text)
    text = _NEWLINES.sub("\n", text)
    text = _CONTROL.sub("", text)
    # str.split() splits on the same whitespace as the regex \s, faster than a substitution
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()


# -- pii ----------------------------------------------------------------------------------------
PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>"}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# not part of a longer dotted string (a version like 1.2.3.4.5, v1.2.3.4) nor glued to a word
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\w)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?(?!\.?[\w:])"
)
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+[0-9][0-9 ().-]{6,18}[0-9]"  # international: +CC and groups (checked in _is_phone)
    r"|(?:\([0-9]{3}\) ?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"  # North American: (555) 123-4567, 555.123.4567
    r")(?!\w)"
)


def _is_ipv6(candidate: str) -> bool:
    """Whether an IPv6-shaped string is one, rather than a time (12:30:45), a slice ([1::2]) or a C++ name."""
    groups = [g for g in re.split(r"[:.]", candidate) if g]
    if len(groups) < 3 and not (len(groups) == 2 and max(map(len, groups)) >= 3):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _is_phone(candidate: str) -> bool:
    """Whether a phone-shaped string is one: `+` numbers need 8 to 15 digits (E.164) and balanced parentheses."""
    if not candidate.startswith("+"):
        return True
    digits = sum(c.isdigit() for c in candidate)
    return 8 <= digits <= 15 and "  " not in candidate and candidate.count("(") == candidate.count(")")


_PII_PATTERNS = (  # kind, a substring every match contains (a cheap test first), pattern, check
    ("email", "@", _EMAIL, None),
    ("ip", ":", _IPV6, _is_ipv6),
    ("ip", ".", _IPV4, None),
    ("phone", "", _PHONE, _is_phone),
)


def redact_pii(text: str, kinds: tuple[str, ...] = ("email", "phone", "ip")) -> tuple[str, dict[str, int]]:
    """Replace e-mail addresses, IPv4/IPv6 addresses and phone numbers by placeholders; count each kind.

    Dates (2023-01-15), times, ordinary numbers and version strings (3.11.7, v1.2.3.4) are left alone;
    a bare four-part dotted quad is taken for an IPv4 address, and bare runs of digits for numbers."""
    counts = dict.fromkeys(kinds, 0)
    for kind, needle, pattern, check in _PII_PATTERNS:
        if kind not in counts or needle not in text:
            continue

        def replace(match: re.Match, kind: str = kind, check=check) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts


# -- words and n-gram hashes ----------------------------------------------------------------------
WORD = re.compile(r"\w+")
_rng = np.random.default_rng(20211208)  # fixed: hashes must agree across processes and runs
_NGRAM_MULTIPLIERS = _rng.integers(1, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_CHAR_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def words(text: str) -> list[str]:
    """Lower-cased runs of letters, digits and underscores: the words that dedup and decontamination compare."""
    return WORD.findall(text.lower())


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every word of `texts`, one text after the other; the number of words of each text)."""
    per_text = [words(t) for t in texts]
    flat = list(chain.from_iterable(per_text))
    hashes = np.fromiter((xxh3_64_intdigest(w.encode("utf-8", "surrogatepass")) for w in flat), np.uint64, len(flat))
    return hashes, np.fromiter(map(len, per_text), dtype=np.int64, count=len(texts))


def char_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(a 64-bit value per character of the texts' words joined by spaces, one text after the other; the number
    of characters of each text)."""
    joined = [" ".join(words(t)) for t in texts]
    codes = np.frombuffer("".join(joined).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    codes *= _CHAR_MULTIPLIER
    codes ^= codes >> np.uint64(29)
    return codes, np.fromiter(map(len, joined), dtype=np.int64, count=len(texts))


def ngram_hashes(tokens: np.ndarray, n: int, starts: np.ndarray | None = None) -> np.ndarray:
    """64-bit hashes of the n-grams of `tokens` (64-bit token hashes): a random linear combination, mixed.
    All n-grams in order, or those beginning at `starts`."""
    if n > len(_NGRAM_MULTIPLIERS):
        raise ValueError(f"n-grams of at most {len(_NGRAM_MULTIPLIERS)} tokens are supported, not {n}")
    if starts is None:
        starts = np.arange(max(0, len(tokens) - n + 1))
    out = tokens[starts] * _NGRAM_MULTIPLIERS[0]
    for k in range(1, n):
        out += tokens[starts + k] * _NGRAM_MULTIPLIERS[k]
    out ^= out >> np.uint64(31)
    return out


def text_ngrams(tokens: np.ndarray, lengths: np.ndarray, n: int, short: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """N-gram hashes of many token sequences stored one after the other, `lengths[i]` tokens for sequence i:
    (the hashes of the n-grams that lie within one sequence, in order; how many each sequence has).

    `short=True`: a sequence of 1 to n-1 tokens has one n-gram instead of none, all of it."""
    counts = np.maximum(lengths - n + 1, 0)
    short_ones = np.flatnonzero((lengths > 0) & (lengths < n)) if short else np.empty(0, dtype=np.int64)
    counts[short_ones] = 1
    begins = np.cumsum(lengths) - lengths
    offsets = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(len(lengths)), counts)
    starts = begins[owner] + np.arange(len(owner)) - offsets[owner]
    out = np.empty(len(owner), dtype=np.uint64)
    full = lengths[owner] >= n
    out[full] = ngram_hashes(tokens, n, starts[full])
    for i in short_ones:
        out[offsets[i]] = ngram_hashes(tokens[begins[i] : begins[i] + lengths[i]], int(lengths[i]))[0]
    return out, counts
