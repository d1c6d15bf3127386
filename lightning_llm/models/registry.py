"""The one list of model families: name -> Family. Nothing else in the project names a family."""

from __future__ import annotations

import importlib

from torch import nn

from lightning_llm.errors import ConfigError
from lightning_llm.models.family import Family

#: Packages whose `FAMILY` is registered when the registry is first used.
BUILTIN_FAMILIES = ("lightning_llm.models.gpt", "lightning_llm.models.bert", "lightning_llm.models.t5")

_FAMILIES: dict[str, Family] = {}
_BUILTINS_LOADED = False


def register_family(family: Family) -> Family:
    """Add a family (a plug-in or a test's toy family); its name must be new or the same family."""
    known = families().get(family.name) if _BUILTINS_LOADED else _FAMILIES.get(family.name)
    if known is not None and known != family:
        raise ValueError(f"a different model family named {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """Every registered family by name (the built-in ones first)."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        builtin = [importlib.import_module(package).FAMILY for package in BUILTIN_FAMILIES]
        plugins = dict(_FAMILIES)
        _FAMILIES.clear()
        for family in [*builtin, *plugins.values()]:
            register_family(family)
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    """The family called `name` (as a checkpoint records it)."""
    known = families()
    if name not in known:
        raise ConfigError(f"model family {name!r} is unknown: known families are {', '.join(known)}")
    return known[name]


def family_of(model: nn.Module | type[nn.Module]) -> Family:
    """The family a model (or model class) belongs to."""
    name = getattr(model, "family", None)
    if not isinstance(name, str):
        raise ConfigError(f"{getattr(model, '__name__', type(model).__name__)} is not a model of a registered family")
    return get_family(name)
