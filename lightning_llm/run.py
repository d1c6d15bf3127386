"""The one path every run takes: check, data, model, module, trainer, fit, validate, results.json."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lightning_llm.callbacks import SampleGeneration
from lightning_llm.config import check_config

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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment from a composed config; returns (and writes) its results."""
    started = time.perf_counter()
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    threads = set_num_threads(cfg.get("num_threads"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    objective = instantiate(cfg.objective)
    tokenizer_cfg = OmegaConf.to_container(cfg.tokenizer, resolve=True)
    datamodule = instantiate(cfg.data, objective=objective, tokenizer=tokenizer_cfg)
    datamodule.prepare_data()  # the model's vocabulary size comes from the tokenizer
    model = instantiate(cfg.model, vocab_size=datamodule.tokenizer.vocab_size)
    module = instantiate(cfg.module, model=model, objective=objective)

    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_all(cfg.get("callbacks")),
        logger=instantiate_all(cfg.get("logger")),
    )
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
        "model": {"parameters": sum(p.numel() for p in model.parameters()), "config": model.config.to_dict()},
    }
    ckpt_path = cfg.get("ckpt_path")
    if cfg.train:
        if cfg.get("validate_before_fit") and not ckpt_path:
            results["val_start"] = _scalars(trainer.validate(module, datamodule=datamodule, verbose=False)[0])
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
    return results
