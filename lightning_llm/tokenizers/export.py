"""Write one of our tokenizers (or a Hugging Face one we loaded) as files `transformers.AutoTokenizer` loads.

`tokenizers` (and `protobuf`, to read SentencePiece model settings) come with `transformers`; they are imported
only here, when needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.tokenizers.base import BASE_SPECIAL_TOKENS, Tokenizer
from lightning_llm.tokenizers.hf import (
    PIECE_CONTROL,
    PIECE_NORMAL,
    PIECE_UNKNOWN,
    PIECE_USER_DEFINED,
    SPECIAL_NAMES,
    HFTokenizer,
    SentencePieceBackend,
    import_tokenizers,
)
from lightning_llm.tokenizers.trained import CharTokenizer, SentencePieceTokenizer


def sentencepiece_to_tokenizers(proto: bytes) -> Any:
    """A `tokenizers.Tokenizer` that encodes and decodes like `SentencePieceProcessor` on this model.

    Follows the model's own settings (as transformers' SentencePiece conversion does): precompiled normalisation
    (none for ours: identity rule), extra-whitespace removal, whitespace escaping, the dummy prefix, BPE merges
    ranked by piece score (or the unigram scores), byte fallback. User-defined pieces (objective tokens such as
    <mask>) are isolated whole wherever they occur, as SentencePiece does. Control pieces (<pad>, <unk>, <s>,
    </s>) are special tokens: `decode` skips them, and with `encode_special_tokens` (transformers'
    `split_special_tokens`) a literal "<s>" in text is plain text, as in SentencePiece.
    """
    tokenizers = import_tokenizers()
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as err:
        raise ConfigError("reading a SentencePiece model's settings needs protobuf: pip install protobuf") from err
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    spec, trainer = model.normalizer_spec, model.trainer_spec
    pieces = [(p.piece, p.score, p.type) for p in model.pieces]
    user_defined = [piece for piece, _, kind in pieces if kind == PIECE_USER_DEFINED]
    byte_fallback = trainer.byte_fallback
    if trainer.model_type == 2:  # BPE: merges of normal pieces, ranked by the merged piece's score
        vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
        normal = {piece: (score, i) for i, (piece, score, kind) in enumerate(pieces) if kind == PIECE_NORMAL}
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
        scores = [
            (piece, score if kind in (PIECE_NORMAL, PIECE_USER_DEFINED) else -1e9) for piece, score, kind in pieces
        ]
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
        [
            AddedToken(p, normalized=False, special=True)
            for p, _, kind in pieces
            if kind in (PIECE_CONTROL, PIECE_UNKNOWN)
        ]
    )
    return tok


def char_to_tokenizers(tokenizer: CharTokenizer) -> Any:
    """A `tokenizers.Tokenizer` for our character tokenizer: BPE without merges (one token per character)."""
    tokenizers = import_tokenizers()
    from tokenizers import AddedToken, decoders, models

    unk = BASE_SPECIAL_TOKENS[Tokenizer.unk_id]
    tok = tokenizers.Tokenizer(models.BPE(dict(tokenizer.index), [], unk_token=unk))
    tok.decoder = decoders.Fuse()
    tok.add_tokens([AddedToken(piece, normalized=False, special=True) for piece in BASE_SPECIAL_TOKENS])
    return tok


def export_tokenizer(
    tokenizer: Tokenizer, out_dir: str | Path, model_max_length: int | None = None, frame_with_bos: bool = False
) -> list[str]:
    """Write `tokenizer` so `transformers.AutoTokenizer.from_pretrained(out_dir)` loads it; returns the files.

    Ours become tokenizer.json (+ the SentencePiece tokenizer.model as trained) and tokenizer_config.json with
    pad/unk/bos/eos. With `frame_with_bos` (a decoder, which reads every sequence after <s> as ours do) encoding
    puts bos first, as Llama's tokenizers (`add_bos_token: true`), so that transformers, lm-evaluation-harness
    and our own loader frame a text as training did; otherwise it adds no bos/eos. Literal special tokens in text
    ("<s>") stay plain text, as ours (split_special_tokens). A Hugging Face tokenizer is written as it came.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    if isinstance(tokenizer, HFTokenizer):
        if isinstance(tokenizer.backend, SentencePieceBackend):
            (out / "spiece.model").write_bytes(tokenizer.backend.proto)
            files.append("spiece.model")
            config: dict[str, Any] = {"extra_ids": tokenizer.backend.extra_ids}
        else:
            (out / "tokenizer.json").write_text(tokenizer.backend.json, encoding="utf-8")
            files.append("tokenizer.json")
            split = bool(tokenizer.backend.tok.encode_special_tokens)
            config = {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": split}
        tokens = {name: tokenizer.special.get(name) for name in SPECIAL_NAMES}
        if tokenizer.chat_template:  # an instruct model keeps its chat template
            config["chat_template"] = tokenizer.chat_template
    else:
        if isinstance(tokenizer, SentencePieceTokenizer):
            tok = sentencepiece_to_tokenizers(tokenizer.to_bytes())
            (out / "tokenizer.model").write_bytes(tokenizer.to_bytes())
            files.append("tokenizer.model")
        elif isinstance(tokenizer, CharTokenizer):
            tok = char_to_tokenizers(tokenizer)
        else:
            raise ConfigError(f"cannot export a {type(tokenizer).__name__}: only SentencePiece, char and HF tokenizers")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": True}
        if frame_with_bos and tokenizer.sequence_start:
            from tokenizers import processors

            bos = BASE_SPECIAL_TOKENS[tokenizer.bos_id]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_id)]
            )
            config.update(add_bos_token=True, add_eos_token=False)
        tok.save(str(out / "tokenizer.json"))
        files.append("tokenizer.json")
        tokens = dict(zip(SPECIAL_NAMES, BASE_SPECIAL_TOKENS, strict=True))
    named = {f"{name}_token": value for name, value in tokens.items() if isinstance(value, str)}
    config.update(named, clean_up_tokenization_spaces=False)
    if model_max_length:
        config["model_max_length"] = model_max_length
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(named, indent=2, ensure_ascii=False) + "\n")
    return [*files, "tokenizer_config.json", "special_tokens_map.json"]
