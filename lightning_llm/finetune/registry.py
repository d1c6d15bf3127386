"""The fine-tuning methods by name, and rebuilding one from the plain data a checkpoint records.

A checkpoint is untrusted: its `finetune` entry names a method of this list (never a class path) and settings
that must be fields of that method with plain values; anything else is refused in one line.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lightning_llm.errors import ConfigError
from lightning_llm.finetune.adapter import Adapter
from lightning_llm.finetune.base import FinetuneMethod, NoFinetuning
from lightning_llm.finetune.freeze import Freeze
from lightning_llm.finetune.full import Full
from lightning_llm.finetune.lora import LoRA
from lightning_llm.finetune.prompt import PromptTuning
from lightning_llm.finetune.qlora import QLoRA

METHODS: dict[str, type[FinetuneMethod]] = {
    cls.name: cls for cls in (NoFinetuning, Full, Freeze, LoRA, QLoRA, Adapter, PromptTuning)
}
_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(v, _PLAIN) for v in value)
    return isinstance(value, _PLAIN)


def method_from_description(description: Any, source: str) -> FinetuneMethod:
    """The method `FinetuneMethod.describe()` recorded, rebuilt from our own classes (an allow-list)."""
    if not isinstance(description, dict) or not isinstance(description.get("method"), str):
        raise ConfigError(f"{source}: its fine-tuning entry is not a method description: is it a lightning-llm file?")
    name, settings = description["method"], description.get("settings") or {}
    if name not in METHODS:
        raise ConfigError(f"{source}: fine-tuning method {name!r} is unknown: known are {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(settings, dict) or set(settings) - fields:
        extra = sorted(set(settings) - fields) if isinstance(settings, dict) else ["(not a mapping)"]
        raise ConfigError(f"{source}: finetune={name} has no setting {extra[0]!r}: the file was not written by us")
    bad = [key for key, value in settings.items() if not _plain(value)]
    if bad:
        raise ConfigError(f"{source}: finetune setting {bad[0]!r} is not plain data: the file was not written by us")
    return cls(**settings)
