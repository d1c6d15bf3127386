"""Tokenizers across the Hugging Face boundary.

- `HFTokenizer`: a Hugging Face tokenizer (tokenizer.json through the `tokenizers` library, or a SentencePiece
  spiece.model / tokenizer.model as T5 ships it) behind our `Tokenizer` interface.
- `export_tokenizer`: write one of our tokenizers as files `transformers.AutoTokenizer` loads.

`tokenizers` (and `protobuf`, to read SentencePiece model settings) come with `transformers`; they are imported
only here, when needed.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm

from lightning_llm.data.tokenizer import (
    BASE_SPECIAL_TOKENS,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    tokenizer_from_bytes,
)
from lightning_llm.errors import ConfigError

SPECIAL_NAMES = ("pad", "unk", "bos", "eos")
# Conventional spellings, tried in order when a folder names no special token of that kind.
_CONVENTIONAL = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]"),
    "bos": ("<s>", "[CLS]", "<bos>", "<|begin_of_text|>", "<|endoftext|>"),
    "eos": ("</s>", "[SEP]", "<eos>", "<|end_of_text|>", "<|endoftext|>"),
}
# BERT-style tokenizers frame a sequence with cls/sep: they serve as bos/eos.
_ALIASES = {"bos": ("bos_token", "cls_token"), "eos": ("eos_token", "sep_token")}
_SENTINEL = re.compile(r"<extra_id_(\d+)>")
_SPIECE_FILES = ("spiece.model", "tokenizer.model")
# SentencePiece piece types (sentencepiece_model.proto)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED = 1, 2, 3, 4


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as err:
        raise ConfigError(
            "the `tokenizers` package is missing: pip install tokenizers (it comes with transformers)"
        ) from err
    return tokenizers


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class _TokenizersBackend:
    """tokenizer.json through the `tokenizers` library."""

    def __init__(self, tokenizer_json: str, add_special_tokens: bool, split_special_tokens: bool) -> None:
        tokenizers = _import_tokenizers()
        self.json = tokenizer_json
        self.tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        self.tok.encode_special_tokens = split_special_tokens
        self.tok.no_padding()  # whole texts, unpadded, as our tokenizers give them: batching pads later
        self.tok.no_truncation()
        self.add_special_tokens = add_special_tokens

    @property
    def size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=self.add_special_tokens)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def piece_to_id(self, piece: str) -> int | None:
        return self.tok.token_to_id(piece)


class _SentencePieceBackend:
    """A SentencePiece model as T5 ships it (spiece.model), plus `extra_ids` sentinels <extra_id_N> at the top."""

    def __init__(self, proto: bytes, extra_ids: int, add_eos: bool) -> None:
        self.proto, self.extra_ids, self.add_eos = proto, extra_ids, add_eos
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.sp_size = self.sp.get_piece_size()

    @property
    def size(self) -> int:
        return self.sp_size + self.extra_ids

    def _sentinel_id(self, n: int) -> int | None:
        return self.size - 1 - n if n < self.extra_ids else None

    def _encode(self, text: str) -> list[int]:
        ids: list[int] = []
        parts = _SENTINEL.split(text) if self.extra_ids else [text]
        for i, part in enumerate(parts):  # text, sentinel number, text, ...
            sentinel = self._sentinel_id(int(part)) if i % 2 else None
            if sentinel is not None:
                ids.append(sentinel)
            elif i % 2:
                ids += self.sp.encode(f"<extra_id_{part}>")
            elif part:
                ids += self.sp.encode(part)
        if self.add_eos and self.sp.eos_id() >= 0:
            ids.append(self.sp.eos_id())
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self._encode(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        """As transformers' T5 tokenizer: sentinels as text, a word after a sentinel keeps its space."""
        out: list[str] = []
        run: list[int] = []

        def flush() -> None:
            text = self.sp.decode(run)
            if out and run and self.sp.id_to_piece(run[0]).startswith("▁"):  # the dummy prefix only starts text
                text = " " + text
            out.append(text)

        for i in ids:
            if i < self.sp_size:
                run.append(i)
                continue
            flush()
            out.append(f"<extra_id_{self.size - 1 - i}>")
            run = []
        flush()
        return "".join(out)

    def piece_to_id(self, piece: str) -> int | None:
        match = _SENTINEL.fullmatch(piece)
        if match and self._sentinel_id(int(match.group(1))) is not None:
            return self._sentinel_id(int(match.group(1)))
        i = self.sp.piece_to_id(piece)
        return None if i == self.sp.unk_id() and piece != self.sp.id_to_piece(i) else i


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer with our `Tokenizer` interface.

    `encode_batch` adds no special tokens unless `add_special_tokens=True` (then it frames as the tokenizer's
    own post-processor does, e.g. BERT's [CLS] ... [SEP]; T5's SentencePiece appends </s>); it never pads or
    truncates. `decode` drops special tokens. `bos_id`/`unk_id` are
    None when the tokenizer has none (T5 has no bos); `pad_id` falls back to `eos_id` (GPT-2 has no pad).
    """

    def __init__(
        self,
        backend: _TokenizersBackend | _SentencePieceBackend,
        special: dict[str, str | int | None],
        add_special_tokens: bool = False,
    ) -> None:
        self.backend = backend
        self.add_special_tokens = add_special_tokens
        self.special = dict(special)  # name -> token string or id, as found; kept for to_bytes
        ids = {name: self._resolve(value) for name, value in special.items()}
        if ids.get("pad") is None:
            ids["pad"] = ids.get("eos")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (ids.get(name) for name in SPECIAL_NAMES)

    def _resolve(self, value: str | int | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        return self.backend.piece_to_id(value)

    @classmethod
    def from_pretrained(cls, path: str | Path, add_special_tokens: bool = False) -> HFTokenizer:
        """Load a local folder's tokenizer.json (preferred) or spiece.model / tokenizer.model, or that file itself;
        special tokens come from the folder's tokenizer_config.json, special_tokens_map.json and config.json."""
        path = Path(path).expanduser()
        if not path.exists():
            raise ConfigError(f"tokenizer {path} does not exist: give a folder with tokenizer.json or spiece.model")
        folder = path if path.is_dir() else path.parent
        config = {**_read_json(folder / "special_tokens_map.json"), **_read_json(folder / "tokenizer_config.json")}
        model_config = _read_json(folder / "config.json")
        candidates = [path] if path.is_file() else [folder / name for name in ("tokenizer.json", *_SPIECE_FILES)]
        file = next((f for f in candidates if f.is_file()), None)
        if file is not None and file.suffix == ".json":
            backend: _TokenizersBackend | _SentencePieceBackend = _TokenizersBackend(
                file.read_text(encoding="utf-8"), add_special_tokens, bool(config.get("split_special_tokens", False))
            )
        else:
            spiece = file
            if spiece is None:
                raise ConfigError(
                    f"{folder} has no tokenizer: expected tokenizer.json, spiece.model or tokenizer.model"
                )
            extra_ids = config.get("extra_ids")
            if extra_ids is None:
                extra_ids = 100 if model_config.get("model_type") in ("t5", "mt5") else 0
            backend = _SentencePieceBackend(spiece.read_bytes(), int(extra_ids), add_special_tokens)
        return cls(backend, _find_special(config, model_config, backend), add_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.backend.size

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.backend.encode_batch(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids])

    def token_to_id(self, token: str) -> int:
        i = self.backend.piece_to_id(token)
        return self.unk_id if i is None else i

    def to_bytes(self) -> bytes:
        """JSON {"type": "hf", ...}; rebuild with `HFTokenizer.from_bytes` (or `load_tokenizer_bytes`)."""
        if isinstance(self.backend, _TokenizersBackend):
            payload = {"format": "tokenizers", "tokenizer_json": self.backend.json}
            payload["split_special_tokens"] = bool(self.backend.tok.encode_special_tokens)
        else:
            payload = {"format": "sentencepiece", "model": base64.b64encode(self.backend.proto).decode()}
            payload["extra_ids"] = self.backend.extra_ids
        payload.update(type="hf", special=self.special, add_special_tokens=self.add_special_tokens)
        return json.dumps(payload).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> HFTokenizer:
        payload = json.loads(data)
        add = bool(payload.get("add_special_tokens", False))
        if payload.get("format") == "sentencepiece":
            backend: _TokenizersBackend | _SentencePieceBackend = _SentencePieceBackend(
                base64.b64decode(payload["model"]), int(payload.get("extra_ids", 0)), add
            )
        else:
            backend = _TokenizersBackend(payload["tokenizer_json"], add, bool(payload.get("split_special_tokens")))
        return cls(backend, payload["special"], add)


def _find_special(
    config: dict[str, Any], model_config: dict[str, Any], backend: _TokenizersBackend | _SentencePieceBackend
) -> dict[str, str | int | None]:
    """pad/unk/bos/eos: tokenizer_config.json / special_tokens_map.json, then config.json ids, then the
    SentencePiece model's own ids, then conventional spellings present in the vocabulary."""
    found: dict[str, str | int | None] = {}
    for name in SPECIAL_NAMES:
        for key in _ALIASES.get(name, (f"{name}_token",)):
            token = _token_content(config.get(key))
            if token is not None and backend.piece_to_id(token) is not None:
                found[name] = token
                break
        else:
            token_id = model_config.get(f"{name}_token_id")
            if isinstance(token_id, list):
                token_id = token_id[0] if token_id else None
            if isinstance(backend, _SentencePieceBackend) and token_id is None:
                token_id = getattr(backend.sp, f"{name}_id")()
                token_id = token_id if token_id >= 0 else None
            if token_id is None:
                token_id = next((t for t in _CONVENTIONAL[name] if backend.piece_to_id(t) is not None), None)
            found[name] = token_id
    return found


def load_tokenizer_bytes(data: bytes) -> Tokenizer:
    """Rebuild any tokenizer from its `to_bytes()`: an HFTokenizer or one of ours."""
    if data[:1] == b"{":
        try:
            payload = json.loads(data)
        except ValueError:
            payload = {}
        if isinstance(payload, dict) and payload.get("type") == "hf":
            return HFTokenizer.from_bytes(data)
    return tokenizer_from_bytes(data)


# ---------------------------------------------------------------------------------------------- export


def sentencepiece_to_tokenizers(proto: bytes) -> Any:
    """A `tokenizers.Tokenizer` that encodes and decodes like `SentencePieceProcessor` on this model.

    Follows the model's own settings (as transformers' SentencePiece conversion does): precompiled normalisation
    (none for ours: identity rule), extra-whitespace removal, whitespace escaping, the dummy prefix, BPE merges
    ranked by piece score (or the unigram scores), byte fallback. User-defined pieces (objective tokens such as
    <mask>) are isolated whole wherever they occur, as SentencePiece does. Control pieces (<pad>, <unk>, <s>,
    </s>) are special tokens: `decode` skips them, and with `encode_special_tokens` (transformers'
    `split_special_tokens`) a literal "<s>" in text is plain text, as in SentencePiece.
    """
    tokenizers = _import_tokenizers()
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as err:
        raise ConfigError("reading a SentencePiece model's settings needs protobuf: pip install protobuf") from err
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    spec, trainer = model.normalizer_spec, model.trainer_spec
    pieces = [(p.piece, p.score, p.type) for p in model.pieces]
    user_defined = [piece for piece, _, kind in pieces if kind == _USER_DEFINED]
    byte_fallback = trainer.byte_fallback
    if trainer.model_type == 2:  # BPE: merges of normal pieces, ranked by the merged piece's score
        vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
        normal = {piece: (score, i) for i, (piece, score, kind) in enumerate(pieces) if kind == _NORMAL}
        ranked = [
            (-score, i, piece[:k], piece[k:])
            for piece, (score, i) in normal.items()
            for k in range(1, len(piece))
            if piece[:k] in normal and piece[k:] in normal
        ]
        merges = [(left, right) for _, _, left, right in sorted(ranked)]
        backend = models.BPE(
            vocab,
            merges,
            unk_token=trainer.unk_piece,
            fuse_unk=True,
            byte_fallback=byte_fallback,
            dropout=None,
            ignore_merges=bool(user_defined),  # an isolated user-defined piece maps to itself
        )
    elif trainer.model_type == 1:  # unigram: the lattice may choose normal and user-defined pieces only
        scores = [(piece, score if kind in (_NORMAL, _USER_DEFINED) else -1e9) for piece, score, kind in pieces]
        backend = models.Unigram(scores, unk_id=trainer.unk_id, byte_fallback=byte_fallback)
    else:
        raise ConfigError(f"SentencePiece model type {trainer.model_type} has no tokenizers equivalent (BPE, unigram)")
    tok = tokenizers.Tokenizer(backend)

    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:  # only spaces count, as in SentencePiece
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:  # SentencePiece prefixes a text that starts with a space too; Metaspace would not
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    splits = []
    if spec.add_dummy_prefix:
        splits.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False))
    if user_defined:
        pattern = "|".join(re.escape(piece) for piece in sorted(user_defined, key=len, reverse=True))
        splits.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if splits:
        tok.pre_tokenizer = pre_tokenizers.Sequence(splits)

    parts = [decoders.Replace("▁", " ")]
    if byte_fallback:
        parts.append(decoders.ByteFallback())
    parts.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        parts.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(parts)
    tok.add_tokens(
        [AddedToken(p, normalized=False, special=True) for p, _, kind in pieces if kind in (_CONTROL, _UNKNOWN)]
    )
    return tok


def char_to_tokenizers(tokenizer: CharTokenizer) -> Any:
    """A `tokenizers.Tokenizer` for our character tokenizer: BPE without merges (one token per character)."""
    tokenizers = _import_tokenizers()
    from tokenizers import AddedToken, decoders, models

    unk = BASE_SPECIAL_TOKENS[Tokenizer.unk_id]
    tok = tokenizers.Tokenizer(models.BPE(dict(tokenizer.index), [], unk_token=unk))
    tok.decoder = decoders.Fuse()
    tok.add_tokens([AddedToken(piece, normalized=False, special=True) for piece in BASE_SPECIAL_TOKENS])
    return tok


def export_tokenizer(tokenizer: Tokenizer, out_dir: str | Path, model_max_length: int | None = None) -> list[str]:
    """Write `tokenizer` so `transformers.AutoTokenizer.from_pretrained(out_dir)` loads it; returns the files.

    Ours become tokenizer.json (+ the SentencePiece tokenizer.model as trained) and tokenizer_config.json with
    pad/unk/bos/eos. Encoding adds no bos/eos, as ours. Literal special tokens in text ("<s>") stay plain
    text, as ours (split_special_tokens).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    if isinstance(tokenizer, HFTokenizer):
        if isinstance(tokenizer.backend, _SentencePieceBackend):
            (out / "spiece.model").write_bytes(tokenizer.backend.proto)
            files.append("spiece.model")
            config: dict[str, Any] = {"extra_ids": tokenizer.backend.extra_ids}
        else:
            (out / "tokenizer.json").write_text(tokenizer.backend.json, encoding="utf-8")
            files.append("tokenizer.json")
            split = bool(tokenizer.backend.tok.encode_special_tokens)
            config = {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": split}
        tokens = {name: tokenizer.special.get(name) for name in SPECIAL_NAMES}
    else:
        if isinstance(tokenizer, SentencePieceTokenizer):
            tok = sentencepiece_to_tokenizers(tokenizer.to_bytes())
            (out / "tokenizer.model").write_bytes(tokenizer.to_bytes())
            files.append("tokenizer.model")
        elif isinstance(tokenizer, CharTokenizer):
            tok = char_to_tokenizers(tokenizer)
        else:
            raise ConfigError(f"cannot export a {type(tokenizer).__name__}: only SentencePiece, char and HF tokenizers")
        tok.save(str(out / "tokenizer.json"))
        files.append("tokenizer.json")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": True}
        tokens = dict(zip(SPECIAL_NAMES, BASE_SPECIAL_TOKENS, strict=True))
    named = {f"{name}_token": value for name, value in tokens.items() if isinstance(value, str)}
    config.update(named, clean_up_tokenization_spaces=False)
    if model_max_length:
        config["model_max_length"] = model_max_length
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(named, indent=2, ensure_ascii=False) + "\n")
    return [*files, "tokenizer_config.json", "special_tokens_map.json"]
