"""The starting point's held-out numbers, measured once: the validation before fit and the forgetting probe's
`before` of a fine-tune depend only on the imported weights, the fine-tuning method's initial state and the rows
they score, not on what training will do. A rerun or a sweep (over the learning rate, the steps, the schedule ...)
from the same starting point reads them from the cache instead of measuring them again, said in one line.

The key is exact rather than descriptive: the imported model's files (sizes and modification times, or the Hub
commit) and those of any other file the settings name (a teacher, a reward model), every setting that builds the
model and its fine-tuning method (model, finetune, objective, precision, seed), this package's source code and
torch's version, and the token ids of the very batches scored. Any change to one of them measures again. One
process only: under DDP every rank must run the same validation, so nothing is cached there.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lightning_llm.data.fingerprint import fingerprint, source_key
from lightning_llm.files import write_json_atomic
from lightning_llm.log import get_logger, process_rank
from lightning_llm.recipe.metrics import val_batches_allowed, validate_before_fit

log = get_logger(__name__)

PACKAGE = Path(__file__).resolve().parent.parent
#: the settings that make the starting point (what training does later is not part of it)
START_SETTINGS = ("model", "finetune", "objective", "seed")


def source_digest(root: Path = PACKAGE) -> str:
    """A digest of this package's Python source: a change to the model or objective code measures again."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def batches_digest(batches: Iterable[dict[str, torch.Tensor]]) -> str:
    """A digest of the tensors of the batches scored (their names, shapes and values)."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            value = batch[name]
            if isinstance(value, torch.Tensor):
                digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def local_paths(settings: Any) -> list[str]:
    """The strings in `settings` that name an existing file or folder (a teacher, a reward model ...): their
    contents are part of the starting point too."""
    if isinstance(settings, dict):
        return [p for value in settings.values() for p in local_paths(value)]
    if isinstance(settings, list):
        return [p for value in settings for p in local_paths(value)]
    return [settings] if isinstance(settings, str) and settings and Path(settings).expanduser().exists() else []


class StartPoint:
    """The cache of one run's starting point: `get(kind, batches)` and `put(kind, batches, numbers)`, where `kind`
    names the measurement ("validation", "forgetting") and `batches` are the batches it scores."""

    def __init__(self, cfg: DictConfig, source: str, precision: str, cache_dir: str | Path) -> None:
        settings = {
            key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in START_SETTINGS
            if key in cfg
        }
        files = [source_key(path, {"read": "weights"}) for path in [source, *local_paths(settings)]]
        self.identity = fingerprint(files, settings, precision, source_digest(), torch.__version__)
        self.folder = Path(cache_dir).expanduser() / "start-points"

    def path(self, kind: str, batches: Iterable[dict[str, torch.Tensor]]) -> Path:
        return self.folder / f"{kind}-{fingerprint(self.identity, kind, batches_digest(batches))}.json"

    def get(self, kind: str, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, Any] | None:
        """The numbers an earlier run measured at this starting point on these batches, if any."""
        path = self.path(kind, batches)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, kind: str, batches: Iterable[dict[str, torch.Tensor]], numbers: dict[str, Any]) -> None:
        if numbers:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path(kind, batches), numbers)


def validation_batches(trainer: Any, datamodule: Any, before_fit: int | bool) -> list[dict[str, torch.Tensor]] | None:
    """The batches the validation before fit scores (at most `before_fit`, or as trainer.limit_val_batches), or None
    where they cannot be listed cheaply (a stream has no length)."""
    try:
        len(datamodule.val_dataloader())
    except TypeError:  # a stream: its batches are not listed
        return None
    count = val_batches_allowed(trainer, datamodule) or 0
    if before_fit is not True:
        count = min(count, before_fit)
    return list(itertools.islice(datamodule.val_dataloader(), count)) if count else None


def numbers_before_fit(
    cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, probe: Any, source: str | None
) -> tuple[dict | None, dict | None, dict[str, str]]:  # fmt: skip
    """(the validation before fit, the forgetting probe's `before`, which of them an earlier run measured: kind ->
    its cache file), each None where the run does not ask for it. From an imported model (`source`) in one process
    the starting point's cache is read first and filled after measuring. The random state is the same after as
    before, measured or read: a run trains the same either way."""
    one_process = source is not None and trainer.world_size == 1
    cache = StartPoint(cfg, source, str(trainer.precision), cfg.paths.cache_dir) if one_process else None
    cached: dict[str, str] = {}

    def measured(kind: str, batches: list | None, measure: Callable[[], dict]) -> dict:
        numbers = cache.get(kind, batches) if cache is not None and batches else None
        if numbers is None:
            numbers = measure()
            if cache is not None and batches:
                cache.put(kind, batches, {k: v for k, v in numbers.items() if k != "seconds"})
            return numbers
        cached[kind] = str(cache.path(kind, batches))
        shown = " | ".join(f"{k} {v:.4f}" for k, v in numbers.items() if isinstance(v, float))
        log.info("%s before fit: %s (an earlier run's, from this starting point: %s)", kind, shown, cached[kind])
        if kind == "validation":  # the loss curve still starts at the untrained model's point
            for logger in trainer.loggers:
                logger.log_metrics(numbers, step=trainer.global_step)
        return numbers

    device = trainer.strategy.root_device
    val_start = before = None
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        if probe is not None and process_rank() == 0:
            before = measured("forgetting", probe.batches, lambda: probe.measure(module.model))
        if cfg.get("validate_before_fit"):
            batches = validation_batches(trainer, datamodule, cfg.validate_before_fit) if cache is not None else None
            val_start = measured(
                "validation", batches, lambda: validate_before_fit(trainer, module, datamodule, cfg.validate_before_fit)
            )
    return val_start, before, cached
