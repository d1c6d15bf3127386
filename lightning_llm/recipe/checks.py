"""Checks on the composed config that run before any heavy work (no data, no weights): one line each, naming
the key and the fix."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from lightning_llm.checkpoints import describe_pretrained
from lightning_llm.conf import group_options, load_option
from lightning_llm.data.interface import LLMDataModule
from lightning_llm.data.loading import check_data_path, check_loader_settings
from lightning_llm.data.mixture import parse_sources
from lightning_llm.errors import ConfigError
from lightning_llm.eval import build_suite
from lightning_llm.extras import require
from lightning_llm.finetune import FinetuneMethod
from lightning_llm.log import get_logger
from lightning_llm.models import Family, ModelConfig, family_of
from lightning_llm.objectives import EXAMPLES
from lightning_llm.recipe.metrics import check_probe_batches, check_val_batches, check_validate_before_fit
from lightning_llm.recipe.objective_checks import check_post_training
from lightning_llm.recipe.schema import MODEL_SWITCHES
from lightning_llm.tokenizers import check_tokenizer_type
from lightning_llm.training.parallel_checks import check_model_parallel

log = get_logger(__name__)


def model_family(cfg: DictConfig) -> Family:
    """The family the model group builds (from its `_target_` class)."""
    return family_of(hydra.utils.get_class(cfg.model._target_))


def check_config(cfg: DictConfig) -> None:
    """Fail fast, with one line naming the key and the fix, on a config that cannot run."""
    check_tokenizer_type(cfg.tokenizer.type)
    check_model(cfg)
    check_optimizer(cfg)
    data = cfg.data
    check_loader_settings(data.batch_size, data.block_size, data.val_fraction, data.num_workers)

    model_block, data_block = cfg.model.block_size, cfg.data.block_size
    if data_block > model_block:
        raise ConfigError(
            f"data.block_size={data_block} exceeds the model's context model.block_size={model_block}: "
            "lower data.block_size or raise model.block_size"
        )
    check_objective(cfg)
    check_examples(cfg)
    check_post_training(cfg, model_family(cfg))
    check_packing(cfg)
    check_precision(cfg)
    check_strategy(cfg)
    warn_about_devices(cfg)
    check_pretrained(cfg)
    check_data_sources(cfg.data)
    hydra.utils.get_class(cfg.data._target_).check_settings(OmegaConf.to_container(cfg.data, resolve=True))
    check_privacy(cfg)
    check_training_texts(cfg)
    check_validate_before_fit(cfg.get("validate_before_fit", True))
    check_val_batches(cfg.trainer.get("limit_val_batches", 1.0))
    check_probe_batches((cfg.get("forgetting") or {}).get("batches", "auto"))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).exists():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist: give the path of a .ckpt file to resume")
    check_model_parallel(cfg)


def check_training_texts(cfg: DictConfig) -> None:
    """Eval tasks that read the training texts (memorization) need them kept; a stream keeps none."""
    if not cfg.data.get("streaming"):
        return
    _, tasks = build_suite(cfg.get("eval"))
    needing = [task.name for task in tasks if task.needs_train_texts]
    if needing:
        raise ConfigError(
            f"eval task {needing[0]!r} reads the training texts, which data.streaming=true does not keep: drop "
            "data.streaming or that task"
        )


def check_model(cfg: DictConfig) -> None:
    """The architecture's settings (heads that divide the width, known choices) from the config alone."""
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    architecture = {k: v for k, v in settings.items() if k != "_target_" and k not in MODEL_SWITCHES}
    ModelConfig.from_kwargs({**model_family(cfg).model_class.defaults, **architecture})


@dataclass(frozen=True)
class Span:
    """The numbers a setting takes: one number (or a list of `count`) between `low` and `high`."""

    low: float | None = None
    high: float | None = None
    low_included: bool = True
    high_included: bool = True
    count: int | None = None

    def holds(self, value: Any) -> bool:
        values = list(value) if isinstance(value, ListConfig | list) else [value]
        if (self.count or 1) != len(values) or (self.count is None and isinstance(value, ListConfig | list)):
            return False
        for x in values:
            if not isinstance(x, int | float) or isinstance(x, bool):
                return False
            if self.low is not None and (x < self.low or (x == self.low and not self.low_included)):
                return False
            if self.high is not None and (x > self.high or (x == self.high and not self.high_included)):
                return False
        return True

    def __str__(self) -> str:
        what = f"{self.count} numbers" if self.count else "a number"
        if self.high is None:
            return f"{what} {'>=' if self.low_included else '>'} {self.low:g}"
        opening, closing = "[" if self.low_included else "(", "]" if self.high_included else ")"
        return f"{what} in {opening}{self.low:g}, {self.high:g}{closing}"


#: The numeric settings of the optimizer and scheduler groups, by key (whichever optimizer or schedule has it).
NUMBERS = {
    "optimizer.lr": Span(0, low_included=False),
    "optimizer.eps": Span(0),
    "optimizer.weight_decay": Span(0),
    "optimizer.momentum": Span(0),
    "optimizer.betas": Span(0, 1, high_included=False, count=2),
    "scheduler.warmup_steps": Span(0),
    "scheduler.min_lr_ratio": Span(0, 1),
}


def check_optimizer(cfg: DictConfig) -> None:
    """The optimizer's and the schedule's numbers in range (NUMBERS), then both built once on a stand-in weight,
    so that whatever else they refuse fails here, not after the data and the model are set up."""
    for key, span in NUMBERS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not span.holds(value):
            shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
            raise ConfigError(f"{key}={shown!r} must be {span}")
    try:
        optimizer = hydra.utils.instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        if cfg.get("scheduler"):
            hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=max(1, int(cfg.trainer.max_steps)))
    except (ValueError, TypeError, RuntimeError, InstantiationException) as err:
        raise ConfigError(
            f"optimizer={_choice(cfg, 'optimizer')} with scheduler={_choice(cfg, 'scheduler')} cannot be built "
            f"({str(err).splitlines()[0]}): fix the optimizer.* or scheduler.* setting it names"
        ) from err


def _objective_classes() -> dict[str, type]:
    """Every objective option and its class."""
    return {name: hydra.utils.get_class(load_option("objective", name)._target_) for name in group_options("objective")}


def check_objective(cfg: DictConfig) -> None:
    """The objective must train the model's architecture; name the objectives that would."""
    family = model_family(cfg)
    settings = OmegaConf.to_container(cfg.objective, resolve=True)
    objective_cls = hydra.utils.get_class(settings.pop("_target_"))
    if family.architecture in objective_cls.architectures:
        objective_cls(**settings)  # the settings' own one-line errors
        return
    fitting = [name for name, cls in _objective_classes().items() if family.architecture in cls.architectures]
    raise ConfigError(
        f"objective={_choice(cfg, 'objective')} does not fit model family '{family.name}' ({family.architecture}): "
        f"use objective={' or objective='.join(fitting) or '(none yet)'}"
    )


def composed_option(group: str, option: str) -> DictConfig:
    """An option's YAML merged over the options of its own group it builds on (its defaults list), as Hydra
    composes them; interpolations stay unresolved."""
    raw = load_option(group, option)
    defaults = list(raw.pop("defaults", None) or [])
    own = raw if "_self_" in defaults else None
    parts = [own if entry == "_self_" else composed_option(group, entry) for entry in defaults]
    return OmegaConf.merge(*parts, *([] if own is not None else [raw]))


def examples_of(data: DictConfig) -> str:
    """The kind of examples (EXAMPLES) a data config yields, from its datamodule class."""
    data_cls = hydra.utils.get_class(data._target_)
    if not (isinstance(data_cls, type) and issubclass(data_cls, LLMDataModule)):
        raise ConfigError(
            f"data._target_={data._target_!r} is not a datamodule of this project: subclass "
            "lightning_llm.data.interface.LLMDataModule"
        )
    return data_cls.examples_of(data)


def check_examples(cfg: DictConfig) -> None:
    """The data must yield the examples the objective trains on; name the objectives (for this model) and the
    data options that would fit."""
    kind, objective = examples_of(cfg.data), _choice(cfg, "objective")
    wanted = hydra.utils.get_class(cfg.objective._target_).examples
    if kind == wanted:
        return
    architecture = model_family(cfg).architecture
    objectives = [
        name for name, cls in _objective_classes().items() if cls.examples == kind and architecture in cls.architectures
    ]
    data = [name for name in group_options("data") if examples_of(composed_option("data", name)) == wanted]
    fixes = ([f"use {_one_of('objective', objectives)} with this data"] if objectives else []) + [
        f"{'or' if objectives else 'use'} {_one_of('data', data)} with objective={objective}"
    ]
    raise ConfigError(
        f"data={_choice(cfg, 'data')} gives {EXAMPLES[kind]}, which objective={objective} does not train on (it "
        f"takes {EXAMPLES[wanted]}): {', '.join(fixes)}"
    )


def check_privacy(cfg: DictConfig) -> None:
    """privacy=dp: its settings, Opacus installed, and a run DP-SGD can take (one device or DDP, no accumulation,
    a fine-tuning method with ordinary trainable weights, one in-memory corpus on fixed windows)."""
    privacy = cfg.get("privacy") or {}
    if "_target_" not in privacy:
        return
    settings = OmegaConf.to_container(privacy, resolve=True)
    hydra.utils.get_class(settings.pop("_target_"))(**settings)  # the settings' own one-line errors
    require("opacus", "privacy=dp")
    finetune = _choice(cfg, "finetune")
    refusals = {
        f"finetune={finetune} (4-bit base weights)": finetune_method(cfg).quantized_base,
        f"trainer.strategy={strategy_name(cfg)}": strategy_name(cfg) not in ("auto", "single_device", "ddp"),
        f"trainer.devices={cfg.trainer.get('devices')} without trainer=ddp": (
            strategy_name(cfg) != "ddp" and cfg.trainer.get("devices", 1) not in (1, "1")
        ),
        f"trainer.devices={cfg.trainer.get('devices')} (give a number)": not str(
            cfg.trainer.get("devices", 1)
        ).isdigit(),
        f"trainer.accumulate_grad_batches={cfg.trainer.get('accumulate_grad_batches')}": (
            cfg.trainer.get("accumulate_grad_batches", 1) != 1
        ),
        "data.sources (a mixture)": bool(cfg.data.get("sources")),
        "data.format=shards": cfg.data.get("format", "memory") == "shards",
        "data.windows=random": cfg.data.get("windows", "grid") == "random",
        f"finetune.dropout={cfg.finetune.get('dropout')} (set it to 0)": bool(cfg.finetune.get("dropout")),
    }
    for what, refused in refusals.items():
        if refused:
            raise ConfigError(
                f"privacy=dp cannot run with {what}: DP-SGD here takes Poisson batches of one in-memory corpus on "
                "one device or under trainer=ddp, each batch one step; change that setting or use privacy=none"
            )


def check_data_sources(data: DictConfig) -> None:
    """Each source of a mixture (weights, keys, paths), or the one `data.path`, before anything loads."""
    sources = data.get("sources")
    if not sources:
        if data.get("path") is None:
            raise ConfigError("data.path is not set: give a file, folder or `datasets` name (or data.sources)")
        check_data_path(data.path)
        return
    for source in parse_sources(OmegaConf.to_container(sources, resolve=True)):
        check_data_path(source.path, source.key)


def check_packing(cfg: DictConfig) -> None:
    """`data.packing` must be one the objective lays out and, for document masks, the model can read."""
    packing = cfg.data.get("packing")
    if packing is None:
        return
    objective_cls = hydra.utils.get_class(cfg.objective._target_)
    if packing not in objective_cls.packings:
        raise ConfigError(
            f"data.packing={packing!r} does not fit objective={_choice(cfg, 'objective')}: "
            f"use one of {list(objective_cls.packings)}"
        )
    family = model_family(cfg)
    if packing == "doc_mask" and not family.model_class.document_masks:
        raise ConfigError(
            f"data.packing=doc_mask needs a model that takes document ids; family '{family.name}' does not: "
            "use data.packing=concat or pad"
        )


def on_cpu(cfg: DictConfig) -> bool:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def warn_about_devices(cfg: DictConfig) -> None:
    """More CPU processes than cores runs, but each process gets less than a core: say so once."""
    devices, cores = cfg.trainer.get("devices", 1), len(os.sched_getaffinity(0))
    if on_cpu(cfg) and isinstance(devices, int) and devices > cores:
        log.warning(
            "trainer.devices=%d starts %d processes on %d CPU cores: each gets less than a core and every step "
            "waits for the slowest; use trainer.devices=%d or fewer",
            devices,
            devices,
            cores,
            cores,
        )


def check_pretrained(cfg: DictConfig) -> None:
    """A fine-tuning method adapts a pretrained model: without one it would tune random weights."""
    method = hydra.utils.get_class(cfg.finetune._target_)
    if method.adapts_pretrained and not cfg.model.get("pretrained"):
        raise ConfigError(
            f"finetune={method.name} adapts a pretrained model and model.pretrained is not set: give "
            "model.pretrained=<run folder, .ckpt or Hugging Face folder>, or train from scratch with finetune=none"
        )


def check_precision(cfg: DictConfig) -> None:
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision.startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise ConfigError(
            f"precision={precision} needs NVIDIA Transformer Engine on a CUDA GPU: pip install transformer-engine, "
            "or use precision=bf16-mixed"
        )
    if on_cpu(cfg) and precision.startswith("16") and not cfg.get("estimate"):  # an estimate names its device
        raise ConfigError(
            f"precision={precision} needs a CUDA GPU and this run is on the CPU: use precision=bf16-mixed"
        )


def _one_of(group: str, options: list[str]) -> str:
    """`group=a`, `group=a or b`, `group=a, b or c`."""
    return f"{group}={', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else f"{group}={options[0]}"


def _choice(cfg: DictConfig, group: str) -> str:
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group))
    return cfg[group]._target_.rsplit(".", 1)[-1]


def finetune_method(cfg: DictConfig) -> type[FinetuneMethod]:
    """The fine-tuning method's class (`none` when the config has no finetune group)."""
    return hydra.utils.get_class(cfg.finetune._target_) if cfg.get("finetune") else FinetuneMethod


def strategy_name(cfg: DictConfig) -> str:
    """The trainer's strategy as a name (a `_target_` strategy by its class name)."""
    strategy = cfg.trainer.get("strategy", "auto")
    return strategy.get("_target_", "").rsplit(".", 1)[-1] if isinstance(strategy, DictConfig) else str(strategy)


def check_strategy(cfg: DictConfig) -> None:
    """Refuse strategy/hardware/method combinations that cannot run, saying what to use instead."""
    strategy = strategy_name(cfg)
    if strategy.startswith("deepspeed"):
        if not torch.cuda.is_available() and not cfg.get("estimate"):  # an estimate names its device
            raise ConfigError(
                f"trainer.strategy={strategy} needs CUDA GPUs and this machine has none: use trainer=fsdp "
                "(sharded, also on CPU) or trainer=ddp"
            )
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"trainer.strategy={strategy} needs the deepspeed package: pip install deepspeed")
    if strategy == "xla" and importlib.util.find_spec("torch_xla") is None:
        raise ConfigError("trainer=xla needs torch_xla on a TPU host: pip install torch_xla[tpu], or use trainer=gpu")
    setting = cfg.trainer.get("strategy")
    strategy_class = hydra.utils.get_class(setting._target_) if isinstance(setting, DictConfig) else None
    if strategy_class and issubclass(strategy_class, ModelParallelStrategy) and finetune_method(cfg).quantized_base:
        raise ConfigError(
            f"finetune={_choice(cfg, 'finetune')} cannot run under trainer=fsdp: FSDP cannot shard bitsandbytes' "
            "packed 4-bit weights; use trainer=ddp (QLoRA's base is already 4x smaller) or finetune=lora with "
            "trainer=fsdp"
        )


def adopt_architecture(cfg: DictConfig, source: str, overrides: list[str]) -> None:
    """Make the pretrained model's architecture the run's (`data.block_size` etc. follow)."""
    family, config = describe_pretrained(source)
    expected = model_family(cfg).name
    if family != expected:
        raise ConfigError(
            f"model.pretrained={source!r} is a '{family}' checkpoint but the model group builds "
            f"'{expected}': use the model option of that family"
        )
    overridden = {o.split("=", 1)[0][len("model.") :]: o.split("=", 1)[1] for o in overrides if o.startswith("model.")}
    with open_dict(cfg.model):
        for key, value in config.items():
            if key in ("vocab_size", "dropout"):
                continue
            if key in overridden and str(value) != overridden[key]:
                raise ConfigError(
                    f"model.{key}={overridden[key]} differs from the pretrained checkpoint's {value}: drop the override"
                )
            cfg.model[key] = value
