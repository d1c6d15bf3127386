"""Check an exported folder against transformers (imported here only: it is a test/dev dependency)."""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.models import family_of


def compare_with_transformers(
    model: nn.Module, out_dir: str | os.PathLike, batch: int = 2, length: int = 12, seed: int = 0
) -> float:
    """Load `out_dir` with the transformers Auto class the model's family names and return the largest absolute
    logit difference to `model` on a random batch (the second row padded, with an attention mask)."""
    try:
        import transformers
    except ImportError as err:
        raise ConfigError("verifying an export needs transformers: pip install transformers") from err
    converter = family_of(model).converter
    hf = getattr(transformers, converter.auto_class).from_pretrained(out_dir).float().eval()
    generator = torch.Generator().manual_seed(seed)
    length = min(length, model.config.block_size)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1:, length // 2 :] = 0
    plain = next(model.parameters()).dtype == torch.float32 and next(model.parameters()).device.type == "cpu"
    ours = model if plain else copy.deepcopy(model).float().cpu()
    training = ours.training
    ours.eval()
    with torch.no_grad():
        a, b = converter.compare_logits(ours, hf, ids, mask, generator)
    ours.train(training)
    return (a - b).abs().max().item()
