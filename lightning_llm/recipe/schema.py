"""Every key of a composed config is one the code reads, with a value of the right type: a misspelt key anywhere
(`optimizer.learning_rate`, `model.n_layers`, `trainer.max_step`) or a wrong type (`trainer.max_steps=abc`)
fails in one line naming the nearest valid key or the expected type, before anything is built.

The schema of a node with `_target_` is its target's signature (a class, a function, a dataclass): there is one
source of truth, the code itself. Nodes without a target have a dataclass here.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_llm.errors import ConfigError, unknown_key
from lightning_llm.models import ModelConfig

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
#: model-group keys that are switches of the run, not architecture (see conf/model/common/switches.yaml)
MODEL_SWITCHES = ("pretrained", "activation_checkpointing", "compile")


@dataclasses.dataclass
class TokenizerSchema:
    """conf/tokenizer/*.yaml"""

    type: str = "bpe"
    vocab_size: int | None = None
    input_sentence_size: int = 2_000_000
    input_characters: int = 50_000_000
    character_coverage: float = 0.9995
    path: str | None = None


@dataclasses.dataclass
class PathsSchema:
    """conf/paths/*.yaml"""

    log_dir: str = "logs"
    output_dir: str = ""
    cache_dir: str = ""


@dataclasses.dataclass
class ForgettingSchema:
    """The `forgetting` block of conf/train.yaml."""

    enabled: bool = True
    path: str = ""
    batches: int | str = "auto"
    block_size: int | None = None


PLAIN_SCHEMAS: dict[str, type] = {"tokenizer": TokenizerSchema, "paths": PathsSchema, "forgetting": ForgettingSchema}


def _signature(target: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """(named parameters, whether it takes **kwargs, resolved type hints) of a callable or class."""
    fn = target.__init__ if inspect.isclass(target) else target
    params = dict(inspect.signature(fn).parameters)
    params.pop("self", None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: keys are still checked, types are not
        hints = {}
    named = {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return named, takes_any, hints


#: keys of a `_target_` node that the recipe resolves before instantiating it (their own checks: recipe/checks.py)
RESOLVED_BY_RECIPE = {"trainer.limit_val_batches"}

_SIMPLE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_error(key: str, value: Any, hint: Any) -> str | None:
    """Why `value` does not fit a simple annotation (int, float, bool, str, optional or unions of them)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    # a config value is never a tensor: `lr: float | Tensor` (torch's optimizers) takes a number from it
    options = tuple(o for o in options if not (isinstance(o, type) and issubclass(o, torch.Tensor)))
    if any(o not in (*_SIMPLE, type(None)) for o in options):
        return None  # a richer type (a list, a class, Any): not checked here
    if value is None:
        return None if type(None) in options else f"{key}=null needs {_SIMPLE[options[0]]}"
    ok = (
        (int in options and isinstance(value, int) and not isinstance(value, bool))
        or (float in options and isinstance(value, int | float) and not isinstance(value, bool))
        or (bool in options and isinstance(value, bool))
        or (str in options and isinstance(value, str))
    )
    if ok:
        return None
    wanted = " or ".join(_SIMPLE[o] for o in options if o in _SIMPLE)
    return f"{key}={value!r} must be {wanted}"


def check_keys(node: DictConfig, key: str, known: dict[str, Any], hints: dict[str, Any], where: str) -> None:
    for name in node:
        if name in HYDRA_KEYS:
            continue
        if name not in known:
            raise unknown_key(f"{key}.{name}", known, where)
        if OmegaConf.is_missing(node, name):
            raise ConfigError(f"{key}.{name} is required (it is ??? in the config): set {key}.{name}=...")
        hint = hints.get(name)
        value = OmegaConf.select(node, str(name), throw_on_missing=False)
        if hint is not None and not OmegaConf.is_config(value) and f"{key}.{name}" not in RESOLVED_BY_RECIPE:
            problem = _type_error(f"{key}.{name}", value, hint)
            if problem:
                raise ConfigError(problem)


def _check_target(node: DictConfig, key: str) -> None:
    """Keys (and simple types) of a `_target_` node against its target's signature."""
    try:
        target = get_object(node._target_)
    except Exception as err:
        raise ConfigError(f"{key}._target_={node._target_!r} cannot be imported: {err}") from err
    if key == "model":
        fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
        hints = {k: v for k, v in typing.get_type_hints(ModelConfig).items() if k != "vocab_size"}  # set at run time
        known = {**fields, **dict.fromkeys(MODEL_SWITCHES)}
        check_keys(node, key, known, hints, "the model (a ModelConfig field or a switch)")
        return
    named, takes_any, hints = _signature(target)
    if takes_any:
        return
    check_keys(node, key, named, hints, node._target_)


def _walk(node: Any, key: str) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_target(node, key)
        for name in node:
            child = node._get_node(name)
            if isinstance(child, DictConfig | ListConfig):
                _walk(child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk(item, f"{key}[{i}]")


def validate_config(cfg: DictConfig, known_top_level: set[str]) -> None:
    """Check every key and simple type of a composed run config (Hydra's own node aside)."""
    for name in cfg:
        if name == "hydra":
            continue
        if name not in known_top_level:
            raise unknown_key(str(name), known_top_level, "the run config (conf/train.yaml and its groups)")
    for name, schema in PLAIN_SCHEMAS.items():
        if name in cfg and isinstance(cfg[name], DictConfig):
            fields = {f.name: f for f in dataclasses.fields(schema)}
            check_keys(cfg[name], name, fields, typing.get_type_hints(schema), f"conf/{name}")
    for name in cfg:
        if name not in ("hydra", "eval", *PLAIN_SCHEMAS):
            _walk(cfg._get_node(name), str(name))


def validate_against(node: DictConfig, schema: type, key: str = "") -> None:
    """Keys and simple types of a config against a dataclass (nested dataclass fields are checked inside)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    nested = {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}
    check_keys(node, key or "the config", fields, {k: v for k, v in hints.items() if k not in nested}, key or "it")
    for name, hint in nested.items():
        if name in node and isinstance(node[name], DictConfig):
            validate_against(node[name], hint, f"{key}.{name}" if key else name)
