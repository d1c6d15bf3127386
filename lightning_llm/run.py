"""The one path every run takes: check, data, model, module, trainer, fit, validate, results.json."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra.utils
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from lightning_llm.callbacks import SampleGeneration
from lightning_llm.checkpoints import Pretrained, load_pretrained, load_weights
from lightning_llm.cli import DDP_JOB_ENV, user_error_in
from lightning_llm.config import check_config
from lightning_llm.data.tokenizer import Tokenizer
from lightning_llm.errors import ConfigError
from lightning_llm.eval import build_suite, evaluate
from lightning_llm.finetune import FinetuneMethod, count_parameters
from lightning_llm.finetune.forgetting import ForgettingProbe
from lightning_llm.interop.tokenizer import HFTokenizer
from lightning_llm.objectives import Objective
from lightning_llm.provenance import provenance

warnings.filterwarnings("ignore", ".*does not have many workers.*")


def set_num_threads(num_threads: int | None) -> int:
    """Pin torch's intra-op threads (default: the cores this process may use); oversubscription stalls."""
    n = num_threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, logger) that has a `_target_`."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def replicas_in_sync(trainer: pl.Trainer, model: nn.Module) -> bool:
    """Whether every data-parallel rank ends with the same weights (a checksum gathered from all ranks)."""
    with torch.no_grad():
        local = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
        checksum = torch.stack([p.detach().double().sum() for p in local]).sum().reshape(1)
    gathered = trainer.strategy.all_gather(checksum.to(trainer.strategy.root_device))
    return bool(torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=0))


def is_multirun() -> bool:
    """Whether this process runs one job of a Hydra multirun (sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """Write a failed trial's results.json (status, error) so the sweep summary reports it."""
    err = user_error_in(err) or err
    message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "results.json", {"status": "failed", "error": message, **_hydra_info()})
    print(f"trial failed ({output_dir}): {message}", file=sys.stderr)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint `resume=auto` continues from: the run folder's last.ckpt, if there is one."""
    path = output_dir / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def _hydra_info() -> dict[str, Any]:
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"choices": dict(hc.runtime.choices), "overrides": list(hc.overrides.task)}


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data, interpolations resolved (Hydra's own node left out)."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("train/", "val/"))}


def adopt_pretrained(cfg: DictConfig) -> Pretrained | None:
    """Load `model.pretrained` and make its architecture the run's (`data.block_size` etc. follow)."""
    source = cfg.model.get("pretrained")
    if not source:
        return None
    pretrained = load_pretrained(source)
    family = hydra.utils.get_class(cfg.model._target_).family
    if pretrained.family != family:
        raise ConfigError(
            f"model.pretrained={source!r} is a '{pretrained.family}' checkpoint but the model group builds "
            f"'{family}': use the model option of that family"
        )
    overridden = {
        o.split("=", 1)[0][len("model.") :]: o.split("=", 1)[1]
        for o in _hydra_info().get("overrides", [])
        if o.startswith("model.")
    }
    with open_dict(cfg.model):
        for key, value in pretrained.config.items():
            if key in ("vocab_size", "dropout"):
                continue
            if key in overridden and str(value) != overridden[key]:
                raise ConfigError(
                    f"model.{key}={overridden[key]} differs from the pretrained checkpoint's {value}: drop the override"
                )
            cfg.model[key] = value
    return pretrained


MODEL_SWITCHES = ("pretrained", "activation_checkpointing", "compile")  # model-group keys that are not architecture


def instantiate_model(model_cfg: DictConfig, vocab_size: int) -> nn.Module:
    """The model group's model, with its memory and speed switches applied."""
    model = instantiate({k: v for k, v in model_cfg.items() if k not in MODEL_SWITCHES}, vocab_size=vocab_size)
    model.activation_checkpointing = bool(model_cfg.get("activation_checkpointing"))
    if model_cfg.get("compile"):
        model.compile()  # in place: parameter names (and so checkpoints) stay as they are
    return model


def tokenizer_from_config(cfg: DictConfig) -> dict[str, Any] | Tokenizer:
    """`tokenizer=hf` loads a Hugging Face tokenizer (tokenizer.path, else model.pretrained); the other options
    are settings for training one on the data."""
    if cfg.tokenizer.type != "hf":
        return OmegaConf.to_container(cfg.tokenizer)
    path = cfg.tokenizer.get("path") or cfg.model.get("pretrained")
    if not path:
        raise ConfigError("tokenizer=hf needs tokenizer.path (a folder with tokenizer.json or spiece.model)")
    return HFTokenizer.from_pretrained(path)


def build_model(cfg: DictConfig, vocab_size: int, objective: Objective, pretrained: Pretrained | None) -> nn.Module:
    """The model group's model, the objective's task head, the pretrained weights, in that order."""
    model = instantiate_model(cfg.model, vocab_size)
    objective.prepare_model(model)
    if pretrained is not None:
        load_weights(model, pretrained.state_dict, pretrained.source)
    return model


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment from a composed config; returns (and writes) its results."""
    return run_experiment(cfg)[0]


def run_experiment(cfg: DictConfig) -> tuple[dict[str, Any], pl.LightningModule]:
    """`train`, also handing back the trained LightningModule (for tests and notebooks)."""
    started = time.perf_counter()
    pretrained = adopt_pretrained(cfg)
    check_config(cfg)
    _, eval_tasks = build_suite(cfg.get("eval"))  # a mistake in the eval suite fails before training
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = cfg.get("ckpt_path") or (last_checkpoint(output_dir) if cfg.get("resume") == "auto" else None)
    write_json_atomic(
        output_dir / "provenance.json", provenance(output_dir, cfg.seed, _hydra_info().get("overrides", []))
    )
    threads = set_num_threads(cfg.get("num_threads"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    objective = instantiate(cfg.objective)
    tokenizer = pretrained.tokenizer if pretrained and pretrained.tokenizer else tokenizer_from_config(cfg)
    datamodule = instantiate(cfg.data, objective=objective, tokenizer=tokenizer)
    datamodule.prepare_data()  # the model's vocabulary size comes from the tokenizer
    model = build_model(cfg, datamodule.tokenizer.vocab_size, objective, pretrained)
    finetune: FinetuneMethod = instantiate(cfg.finetune)
    finetune.apply(model)
    _check_context(cfg, model)
    extras = {"finetune": OmegaConf.to_container(cfg.finetune)}
    if pretrained is not None and finetune.saves_trainable_only:
        source = Path(pretrained.source).expanduser()  # a local checkpoint or folder, or a hub id
        extras["base_checkpoint"] = str(source.resolve()) if source.exists() else pretrained.source
    module = instantiate(cfg.module, model=model, objective=objective, finetune=finetune)
    module.checkpoint_extras = extras  # set after instantiate, which would build the `_target_` inside
    probe = _forgetting_probe(cfg, model, datamodule, pretrained, finetune)

    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_all(cfg.get("callbacks")),
        logger=instantiate_all(cfg.get("logger")),
    )
    if is_multirun():  # DDP children of this job must run this job only (see cli.ddp_child_argv)
        job = {"overrides": _hydra_info()["overrides"], "output_dir": str(output_dir)}
        os.environ[DDP_JOB_ENV] = json.dumps(job)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved_config(cfg))

    results: dict[str, Any] = {
        "status": "running",
        **_hydra_info(),
        "seed": cfg.seed,
        "output_dir": str(output_dir),
        "threads": threads,
        "data": datamodule.stats,
        "tokenizer": {"path": str(datamodule.tokenizer_path), "trained_now": datamodule.tokenizer_trained},
        "model": {"config": model.config.to_dict(), "pretrained": pretrained.source if pretrained else None},
        "parameters": count_parameters(model),
    }
    if cfg.train:
        if probe is not None and not ckpt_path:
            results["forgetting"] = {"before": probe.measure(model)}
        if cfg.get("validate_before_fit") and not ckpt_path:
            results["val_start"] = _scalars(trainer.validate(module, datamodule=datamodule, verbose=False)[0])
        if is_multirun():  # DDP children of this job must run this job only (see cli.ddp_child_argv)
            os.environ[DDP_JOB_ENV] = json.dumps(
                {"overrides": _hydra_info()["overrides"], "output_dir": str(output_dir)}
            )
        tokens_before, fit_started = module.tokens_seen, time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - fit_started
        results["fit_seconds"] = round(fit_seconds, 2)
        results["tokens_per_s"] = round((module.tokens_seen - tokens_before) / fit_seconds, 1)
        ckpt_path = None  # validate the weights fit ended with
    results["metrics"] = _scalars(trainer.callback_metrics)
    results["metrics"].update(
        _scalars(trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    )
    if probe is not None:
        results.setdefault("forgetting", {})["after"] = after = probe.measure(model)
        for logger in trainer.loggers:
            logger.log_metrics({f"forgetting/{k}": v for k, v in after.items()}, step=trainer.global_step)
    if trainer.world_size > 1:
        results["replicas_in_sync"] = replicas_in_sync(trainer, model)
    if eval_tasks:
        results["eval"] = evaluate(
            cfg.eval, model, datamodule.tokenizer, model.family, output_dir, cfg.seed, datamodule.train_texts
        )
        for logger in trainer.loggers:
            logger.log_metrics(_eval_scalars(results["eval"]), step=trainer.global_step)
    results.update(
        status="completed",
        steps=trainer.global_step,
        tokens=module.tokens_seen,
        wall_seconds=round(time.perf_counter() - started, 2),
        samples=[s for cb in trainer.callbacks if isinstance(cb, SampleGeneration) for s in cb.samples],
    )
    checkpoints = [cb for cb in trainer.checkpoint_callbacks if cb.best_model_path]
    if checkpoints:
        results["checkpoints"] = {
            "best": checkpoints[0].best_model_path,
            "last": checkpoints[-1].best_model_path,
        }
    if trainer.is_global_zero:
        write_json_atomic(output_dir / "results.json", results)
        print(f"outputs: {output_dir} (results.json, checkpoints/, csv/metrics.csv)")
    return results, module


def _check_context(cfg: DictConfig, model: nn.Module) -> None:
    """Packed blocks plus a prepended prefix (prompt tuning) must fit the model's context."""
    prefix = getattr(model.prefix, "length", 0)
    block = cfg.data.get("block_size")
    if prefix and block and cfg.data._target_.endswith("TextDataModule") and block + prefix > model.config.block_size:
        raise ConfigError(
            f"data.block_size={block} plus {prefix} virtual tokens exceeds model.block_size="
            f"{model.config.block_size}: set data.block_size={model.config.block_size - prefix}"
        )


def _eval_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    """Numeric eval results as `eval/<task>/<metric>` for the loggers."""
    out = {
        f"eval/{task}/{name}": float(value)
        for task, result in evaluation["tasks"].items()
        for name, value in result.get("metrics", {}).items()
        if isinstance(value, int | float)
    }
    out.update({f"eval/summary/{k}": float(v) for k, v in evaluation["summary"].items() if isinstance(v, int | float)})
    return out


def _forgetting_probe(
    cfg: DictConfig, model: nn.Module, datamodule: Any, pretrained: Pretrained | None, finetune: FinetuneMethod
) -> ForgettingProbe | None:
    """Set up the forgetting measurement for a fine-tuning run from a pretrained model."""
    forgetting = cfg.get("forgetting")
    if pretrained is None or type(finetune) is FinetuneMethod or not (forgetting and forgetting.enabled):
        return None
    return ForgettingProbe(
        model.family,
        datamodule.tokenizer,
        forgetting.path,
        model.config.block_size - getattr(model.prefix, "length", 0),
        cfg.data.batch_size,
        forgetting.batches,
        cfg.paths.cache_dir,
    )
