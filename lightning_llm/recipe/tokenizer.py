"""The run's tokenizer: which one (a checkpoint's, a Hugging Face folder's, or settings to train one on the data)
and how results.json names it."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_llm.checkpoints import Pretrained
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.errors import ConfigError
from lightning_llm.tokenizers import HFTokenizer, Tokenizer


def choose_tokenizer(cfg: DictConfig, pretrained: Pretrained | None) -> dict[str, Any] | Tokenizer:
    """The pretrained model's tokenizer; else `tokenizer=hf` loads a Hugging Face one (tokenizer.path, else
    model.pretrained); the other options are settings for training one on the data."""
    if pretrained is not None and pretrained.tokenizer is not None:
        return pretrained.tokenizer
    if cfg.tokenizer.type != "hf":
        return OmegaConf.to_container(cfg.tokenizer)
    path = cfg.tokenizer.get("path") or cfg.model.get("pretrained")
    if not path:
        raise ConfigError("tokenizer=hf needs tokenizer.path (a folder with tokenizer.json or spiece.model)")
    return HFTokenizer.from_pretrained(path)


def tokenizer_record(cfg: DictConfig, pretrained: Pretrained | None, datamodule: LLMDataModule) -> dict[str, Any]:
    """Which tokenizer the run used, named by where it came from (`pretrained`: the checkpoint it came with,
    model.pretrained's or a distillation teacher's), for results.json and the report (it said `tokenizer: bpe` and a
    path of "None" for a checkpoint's Hugging Face tokenizer)."""
    tokenizer = datamodule.tokenizer
    if pretrained is not None and pretrained.tokenizer is not None:  # model.pretrained's, or a distillation teacher's
        key = "model.pretrained" if cfg.model.get("pretrained") else "objective.teacher"
        source, kind = pretrained.source, f"the checkpoint's ({key})"
    elif cfg.tokenizer.type == "hf":
        source, kind = str(cfg.tokenizer.get("path") or cfg.model.get("pretrained")), "Hugging Face (tokenizer=hf)"
    else:
        source, kind = str(datamodule.tokenizer_path), f"trained: {cfg.tokenizer.type}"
    return {
        "kind": kind,
        "source": source,
        "class": type(tokenizer).__name__,
        "vocab_size": tokenizer.vocab_size,
        "trained_now": datamodule.tokenizer_trained,
        "adds_bos": tokenizer.adds_bos,
    }
