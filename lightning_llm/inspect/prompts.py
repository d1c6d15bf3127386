"""Prompts as the model reads them: token ids framed as each architecture's objective frames them, labels for
the tokens, and one forward pass for any architecture."""

from __future__ import annotations

import torch

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel
from lightning_llm.tokenizers import BASE_SPECIAL_TOKENS, Tokenizer


def frame(model: LanguageModel, tokenizer: Tokenizer, ids: list[int]) -> list[int]:
    """Token ids framed as training framed them: decoders [bos] ids (+ eos with a task head), encoders
    [bos] ids eos, encoder-decoders ids eos."""
    if model.architecture == "encoder-decoder":
        return [*ids, tokenizer.eos_id]
    if model.architecture == "encoder" or model.task_head is not None:
        return [*tokenizer.sequence_start, *ids, tokenizer.eos_id]
    return tokenizer.sequence_start + ids


def encode_prompt(model: LanguageModel, tokenizer: Tokenizer, text: str) -> list[int]:
    """`text` as `frame`d ids; a prompt without tokens or longer than the model's context is a ConfigError."""
    ids = frame(model, tokenizer, tokenizer.encode(text))
    if not ids:
        raise ConfigError(f"prompt {text!r} has no tokens: give some text")
    if len(ids) > model.context_length:
        raise ConfigError(
            f"prompt {text[:40]!r} is {len(ids)} tokens, longer than the model's context of {model.context_length}:"
            " shorten it"
        )
    return ids


def token_labels(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds (decoded incrementally, so spaces survive), or its special name."""
    names = {
        getattr(tokenizer, f"{kind}_id"): name
        for kind, name in zip(("pad", "unk", "bos", "eos"), BASE_SPECIAL_TOKENS, strict=True)
    }
    labels, before = [], ""
    for i, token in enumerate(ids):
        text = tokenizer.decode(ids[: i + 1])
        piece = text[len(before) :] if text.startswith(before) else tokenizer.decode([token])
        labels.append(piece or names.get(token, f"<{token}>"))
        before = text
    return labels


def token_text(tokenizer: Tokenizer, token: int) -> str:
    """One vocabulary token as text, its leading space kept (decoded after a reference token, since
    SentencePiece drops a word-start space at the start of a text), or its special name."""
    reference = tokenizer.encode("a")
    return token_labels(tokenizer, [*reference, token])[len(reference)]


def decoder_inputs(
    model: LanguageModel, input_ids: torch.Tensor, tokenizer: Tokenizer, new_tokens: int = 8
) -> torch.Tensor:
    """An encoder-decoder's decoder ids for inspection: the start token (T5's: pad) then its greedy output
    (up to eos)."""
    start_id = tokenizer.pad_id or 0
    generated = model.generate(
        input_ids, new_tokens, decoder_start_id=start_id, eos_id=tokenizer.eos_id, temperature=0.0
    )
    return torch.cat((torch.full_like(input_ids[:, :1], start_id), generated), dim=1)


def forward(model: LanguageModel, input_ids: torch.Tensor, decoder_ids: torch.Tensor | None = None) -> torch.Tensor:
    """One forward pass of any architecture: logits for decoders and encoder-decoders (decoder ids default to
    the start token alone), class logits when the model has a task head, masked-LM logits for encoders."""
    if model.task_head is not None:
        mask = torch.ones_like(input_ids)
        return model.task_head(model.classification_features(model.encode(input_ids, mask), mask))
    if model.architecture == "encoder-decoder":
        return model(input_ids, decoder_ids if decoder_ids is not None else torch.zeros_like(input_ids[:, :1]))
    return model(input_ids)
