"""What tensor and pipeline parallelism (trainer=tp, fsdp_tp, pp) can run, checked on the composed config before
any work: one line each (ConfigError) that says why and what to use instead."""

from __future__ import annotations

import dataclasses
from typing import Any

import hydra.utils
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from lightning_llm.errors import ConfigError
from lightning_llm.models import LanguageModel, ModelConfig
from lightning_llm.models.parallel import tensor_parallel_problem
from lightning_llm.training.parallel import SCHEDULES, parallel_trainer

TRAINER_TARGET = f"{parallel_trainer.__module__}.{parallel_trainer.__name__}"


def model_config(cfg: DictConfig) -> ModelConfig:
    """The model's architecture from the config alone (its family's defaults under the model group's keys)."""
    model_class = hydra.utils.get_class(cfg.model._target_)
    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"vocab_size"}
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    return ModelConfig.from_kwargs({**model_class.defaults, **{k: v for k, v in settings.items() if k in fields}})


def _number(trainer: DictConfig, key: str, default: int = 1) -> int:
    value = trainer.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"trainer.{key}={value!r} must be a whole number >= 1")
    return value


def check_model_parallel(cfg: DictConfig) -> None:
    """Refuse, in one line, a model-parallel run these libraries cannot build (nothing to check otherwise)."""
    trainer = cfg.trainer
    if trainer.get("_target_") != TRAINER_TARGET:
        return
    world = _number(trainer, "devices") * _number(trainer, "num_nodes")
    tensor, pipeline = _number(trainer, "tensor_parallel_size"), _number(trainer, "pipeline_parallel_size")
    if world % (tensor * pipeline):
        raise ConfigError(
            f"trainer.devices x num_nodes = {world} processes cannot be split into groups of tensor_parallel_size "
            f"{tensor} x pipeline_parallel_size {pipeline}: make the devices a multiple of their product"
        )
    if not dist.is_gloo_available() and str(trainer.get("accelerator", "auto")) == "cpu":
        raise ConfigError("model parallel on the CPU needs torch.distributed's gloo backend, which this torch lacks")
    model_class = hydra.utils.get_class(cfg.model._target_)
    method = hydra.utils.get_class(cfg.finetune._target_)
    finetune = getattr(method, "name", "none")
    if cfg.model.get("compile"):
        raise ConfigError("model.compile=true is not combined with tensor or pipeline parallel here: drop it")
    if "_target_" in (cfg.get("privacy") or {}):
        raise ConfigError(
            "privacy=dp cannot run under tensor or pipeline parallel: Opacus takes per-sample gradients of whole "
            "weights on one device (use trainer=ddp)"
        )
    if getattr(method, "quantized_base", False):
        raise ConfigError(
            f"finetune={finetune} cannot run under tensor or pipeline parallel: bitsandbytes' packed 4-bit weights "
            "cannot be split or moved between stages; use finetune=lora, or QLoRA under trainer=ddp"
        )
    if tensor > 1:
        _check_tensor_parallel(model_class, model_config(cfg), tensor)
    if pipeline > 1:
        _check_pipeline(cfg, model_class, method, world, pipeline)


def _check_tensor_parallel(model_class: type[LanguageModel], config: ModelConfig, size: int) -> None:
    if model_class.tensor_parallel_plan is LanguageModel.tensor_parallel_plan:
        raise ConfigError(
            f"model family '{model_class.family}' has no tensor-parallel plan (LanguageModel.tensor_parallel_plan): "
            "use trainer=fsdp or ddp"
        )
    problem = tensor_parallel_problem(config, size)
    if problem:
        raise ConfigError(f"trainer.tensor_parallel_size={size}: {problem}; choose a size that divides it")


def _check_pipeline(cfg: DictConfig, model_class: type[LanguageModel], method: type, world: int, stages: int) -> None:
    trainer, data, config = cfg.trainer, cfg.data, model_config(cfg)
    microbatches, schedule = _number(trainer, "microbatches"), trainer.get("pipeline_schedule")
    family = model_class.family
    refusals: dict[str, Any] = {
        f"trainer.pipeline_schedule={schedule!r} is unknown: use one of {', '.join(SCHEDULES)}": (
            schedule not in SCHEDULES
        ),
        f"model family '{family}' cannot be cut into pipeline stages: its decoder reads the encoder's output in "
        "every layer, two streams where a stage passes one on; use trainer=tp or fsdp": (
            model_class.architecture == "encoder-decoder"
        ),
        f"model family '{family}' has no pipeline stages (LanguageModel.pipeline_stages): use trainer=fsdp or tp": (
            model_class.pipeline_stages is LanguageModel.pipeline_stages
        ),
        f"trainer=pp runs one pipeline over all {world} processes: pipeline parallel with tensor or data parallel is "
        "not built here (set trainer.pipeline_parallel_size to trainer.devices x num_nodes)": world != stages,
        "model.tie_embeddings=true ties the first stage's embedding to the last stage's head, two devices apart: "
        "set model.tie_embeddings=false for trainer=pp": config.tie_embeddings,
        f"model.n_layer={config.n_layer} layers cannot fill {stages} pipeline stages: use fewer stages": (
            config.n_layer < stages
        ),
        f"data.batch_size={data.batch_size} cannot fill trainer.microbatches={microbatches}: each microbatch needs a "
        "row": data.batch_size < microbatches,
        f"trainer.accumulate_grad_batches={trainer.get('accumulate_grad_batches')} under trainer=pp: use "
        "trainer.microbatches to split a batch": trainer.get("accumulate_grad_batches", 1) != 1,
        f"finetune={getattr(method, 'name', 'none')} prepends virtual tokens the later stages would not know of: use "
        "finetune=lora or adapter with trainer=pp": getattr(method, "prepends_tokens", False),
        "trainer=pp trains on the model's per-token logits; objective="
        f"{cfg.objective._target_.rsplit('.', 1)[-1]} reads one vector per sequence: use trainer=tp or fsdp": (
            hydra.utils.get_class(cfg.objective._target_).examples == "labelled"
        ),
        f"data.packing={data.get('packing')} needs attention masks the stages do not pass on: use "
        "data.packing=concat with trainer=pp": data.get("packing", "concat") not in (None, "concat"),
    }
    for refusal, refused in refusals.items():
        if refused:
            raise ConfigError(refusal)
