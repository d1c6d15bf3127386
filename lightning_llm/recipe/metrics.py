"""What a run reads off the trainer and the model for its results: scalars, eval metrics for loggers, whether
the replicas agree and whether the model is sharded."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_llm.errors import ConfigError
from lightning_llm.eval.forgetting import AUTO_PROBE_BATCHES, PROBE_STEPS_PER_WINDOW
from lightning_llm.log import count_batches

log = logging.getLogger(__name__)


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The train/ and val/ scalars of a metrics dict, as floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(("train/", "val/"))}


def eval_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    """Numeric eval results as `eval/<task>/<metric>` for the loggers."""
    out = {
        f"eval/{task}/{name}": float(value)
        for task, result in evaluation["tasks"].items()
        for name, value in result.get("metrics", {}).items()
        if isinstance(value, int | float)
    }
    out.update({f"eval/summary/{k}": float(v) for k, v in evaluation["summary"].items() if isinstance(v, int | float)})
    return out


def sharded(model: torch.nn.Module) -> bool:
    """Whether the model's parameters are sharded across ranks (FSDP2 DTensors)."""
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def replicas_in_sync(trainer: pl.Trainer, model: torch.nn.Module) -> bool:
    """Whether every data-parallel rank ends with the same weights (a checksum gathered from all ranks)."""
    with torch.no_grad():
        local = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
        checksum = torch.stack([p.detach().double().sum() for p in local]).sum().reshape(1)
    gathered = trainer.strategy.all_gather(checksum.to(trainer.strategy.root_device))
    return bool(torch.allclose(gathered, gathered[0].expand_as(gathered), rtol=0, atol=0))


#: when fine-tuning an imported model, held-out reads are sized to the run (trainer.limit_val_batches=auto, and
#: forgetting.batches=auto: eval/forgetting.py): each validation reads one batch per HELD_OUT_STEPS training steps,
#: 1 to AUTO_VAL_BATCHES. A 20-step smoke test then reads one validation batch each time and two probe windows (7%
#: of a first run's wall; bench/finetune_135m.py), a run of 80 steps or more the full bounds.
HELD_OUT_STEPS = 20
AUTO_VAL_BATCHES = 4


def auto_val_batches(max_steps: int | None) -> int:
    """The batches each validation of an imported model's fine-tune of `max_steps` steps reads when sized to it (a
    run bounded by epochs, `max_steps` -1 or None: AUTO_VAL_BATCHES)."""
    if max_steps is None or max_steps <= 0:
        return AUTO_VAL_BATCHES
    return max(1, min(AUTO_VAL_BATCHES, math.ceil(max_steps / HELD_OUT_STEPS)))


def check_val_batches(value: Any) -> None:
    """trainer.limit_val_batches is auto, a number of batches, a fraction of the validation or null."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is None or value == "auto" or (number and value >= 0 and (isinstance(value, int) or value <= 1.0)):
        return
    raise ConfigError(
        f"trainer.limit_val_batches={value!r} must be auto (all batches, or one per {HELD_OUT_STEPS} training steps "
        f"up to {AUTO_VAL_BATCHES} when fine-tuning an imported model), a number of batches (0: no validation) or a "
        "fraction of them up to 1.0"
    )


def resolve_val_batches(trainer: Mapping[str, Any], imported: bool) -> int | float | None:
    """The Trainer's limit_val_batches for the `trainer` settings: auto is every batch, or one per HELD_OUT_STEPS
    of the run's max_steps (1 to AUTO_VAL_BATCHES) when fine-tuning an imported model (said in one line); other
    values as Lightning takes them."""
    value, max_steps = trainer.get("limit_val_batches", 1.0), trainer.get("max_steps")
    if value != "auto":
        return value
    if not imported:
        return 1.0
    batches = auto_val_batches(max_steps)
    log.info(
        "validation: the first %s of the held-out split each time, before fit, during it and at the end "
        "(trainer.limit_val_batches=auto when fine-tuning an imported model: one per %d training steps, at most %d; "
        "1.0: all of them)",
        count_batches(batches), HELD_OUT_STEPS, AUTO_VAL_BATCHES,
    )  # fmt: skip
    return batches


def check_probe_batches(value: Any) -> None:
    """forgetting.batches is auto or a positive number of batches."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return
    raise ConfigError(
        f"forgetting.batches={value!r} must be a positive number of batches or auto (one window per "
        f"{PROBE_STEPS_PER_WINDOW} training steps, at least 2, at most {AUTO_PROBE_BATCHES} batches)"
    )


def check_validate_before_fit(value: Any) -> None:
    """validate_before_fit is true, false or a positive number of batches."""
    if isinstance(value, bool) or (isinstance(value, int) and value > 0):
        return
    raise ConfigError(
        f"validate_before_fit={value!r} must be a number of validation batches (the untrained model's loss over at "
        "most that many), true (the whole validation, as trainer.limit_val_batches) or false (none)"
    )


def val_batches_allowed(trainer: pl.Trainer, datamodule: Any) -> int | None:
    """How many batches a validation reads under trainer.limit_val_batches (None: a fraction of a stream, which
    has no length)."""
    limit = trainer.limit_val_batches
    try:
        total = len(datamodule.val_dataloader())
    except TypeError:  # a stream
        return limit if isinstance(limit, int) else None
    return min(total, limit) if isinstance(limit, int) else round(limit * total)


def validate_before_fit(trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any, batches: int | bool) -> dict:
    """The untrained model's validation (the loss curve's first point), over at most `batches` batches (true: as
    trainer.limit_val_batches), said in one line when that is fewer than the validation has; fit's and the final
    validation keep trainer.limit_val_batches."""
    limit, allowed = trainer.limit_val_batches, val_batches_allowed(trainer, datamodule)
    bounded = batches is not True and (allowed is None or allowed > batches)
    if bounded:
        of = f" of {allowed}" if allowed is not None else ""
        log.info(
            "validation before fit: the first %d%s batches (validate_before_fit=%d; true: all, as after fit)",
            batches, of, batches,
        )  # fmt: skip
        trainer.limit_val_batches = batches
    try:
        measured = trainer.validate(module, datamodule=datamodule, verbose=False)
        return scalars(measured[0]) if measured else {}  # none with trainer.limit_val_batches=0
    finally:
        trainer.limit_val_batches = limit
