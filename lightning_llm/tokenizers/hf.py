"""A Hugging Face tokenizer (tokenizer.json through the `tokenizers` library, or a SentencePiece spiece.model /
tokenizer.model as T5 ships it) behind our `Tokenizer` interface. `tokenizers` is imported only when needed."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm

from lightning_llm.errors import ConfigError
from lightning_llm.tokenizers.base import Tokenizer

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
PIECE_NORMAL, PIECE_UNKNOWN, PIECE_CONTROL, PIECE_USER_DEFINED = 1, 2, 3, 4


def import_tokenizers() -> Any:
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


class TokenizersBackend:
    """tokenizer.json through the `tokenizers` library."""

    def __init__(self, tokenizer_json: str, add_special_tokens: bool, split_special_tokens: bool) -> None:
        tokenizers = import_tokenizers()
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


class SentencePieceBackend:
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
    `adds_bos` follows the tokenizer's own convention: `add_bos_token` in tokenizer_config.json when it says,
    else whether its post-processor puts bos first (Llama: yes; GPT-2, Qwen2, SmolLM: no); `chat_template` is
    the folder's Jinja chat template, if any.
    """

    def __init__(
        self,
        backend: TokenizersBackend | SentencePieceBackend,
        special: dict[str, str | int | None],
        add_special_tokens: bool = False,
        adds_bos: bool | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.backend = backend
        self.add_special_tokens = add_special_tokens
        self.special = dict(special)  # name -> token string or id, as found; kept for to_bytes
        ids = {name: self._resolve(value) for name, value in special.items()}
        if ids.get("pad") is None:
            ids["pad"] = ids.get("eos")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (ids.get(name) for name in SPECIAL_NAMES)
        self.adds_bos = self._post_processor_adds_bos() if adds_bos is None else bool(adds_bos)
        self.chat_template = chat_template

    def _post_processor_adds_bos(self) -> bool:
        if self.bos_id is None or not isinstance(self.backend, TokenizersBackend):
            return False
        return self.backend.tok.encode("a", add_special_tokens=True).ids[:1] == [self.bos_id]

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
            backend: TokenizersBackend | SentencePieceBackend = TokenizersBackend(
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
                extra_ids = 100 if spiece.name == "spiece.model" else 0  # T5 and mT5 ship spiece.model
            backend = SentencePieceBackend(spiece.read_bytes(), int(extra_ids), add_special_tokens)
        add_bos = config.get("add_bos_token")
        template = config.get("chat_template")
        if not isinstance(template, str):  # a list of named templates: the default one
            named = {t.get("name"): t.get("template") for t in template or [] if isinstance(t, dict)}
            template = named.get("default")
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        special = _find_special(config, model_config, backend)
        return cls(backend, special, add_special_tokens, add_bos if isinstance(add_bos, bool) else None, template)

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
        """JSON {"type": "hf", ...}; rebuild with `HFTokenizer.from_bytes` (or `tokenizer_from_bytes`)."""
        if isinstance(self.backend, TokenizersBackend):
            payload = {"format": "tokenizers", "tokenizer_json": self.backend.json}
            payload["split_special_tokens"] = bool(self.backend.tok.encode_special_tokens)
        else:
            payload = {"format": "sentencepiece", "model": base64.b64encode(self.backend.proto).decode()}
            payload["extra_ids"] = self.backend.extra_ids
        payload.update(type="hf", special=self.special, add_special_tokens=self.add_special_tokens)
        payload.update(adds_bos=self.adds_bos, chat_template=self.chat_template)
        return json.dumps(payload).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> HFTokenizer:
        payload = json.loads(data)
        add = bool(payload.get("add_special_tokens", False))
        if payload.get("format") == "sentencepiece":
            backend: TokenizersBackend | SentencePieceBackend = SentencePieceBackend(
                base64.b64decode(payload["model"]), int(payload.get("extra_ids", 0)), add
            )
        else:
            backend = TokenizersBackend(payload["tokenizer_json"], add, bool(payload.get("split_special_tokens")))
        adds_bos = payload.get("adds_bos")
        return cls(backend, payload["special"], add, adds_bos, payload.get("chat_template"))


def _find_special(
    config: dict[str, Any], model_config: dict[str, Any], backend: TokenizersBackend | SentencePieceBackend
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
            if isinstance(backend, SentencePieceBackend) and token_id is None:
                token_id = getattr(backend.sp, f"{name}_id")()
                token_id = token_id if token_id >= 0 else None
            if token_id is None:
                token_id = next((t for t in _CONVENTIONAL[name] if backend.piece_to_id(t) is not None), None)
            found[name] = token_id
    return found
