"""Reading and writing checkpoint files safely: nothing in a file runs code, a crash never leaves half a file.

Every load uses `torch.load(weights_only=True)`: tensors and plain data only (our checkpoints keep configs,
tokenizers and fine-tuning settings as plain data so they load that way); a pickle that asks for anything else
is refused in one line, not executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from lightning_llm.errors import ConfigError
from lightning_llm.files import TEMP_MARK, atomic_path
from lightning_llm.log import get_logger

log = get_logger(__name__)


def load_torch_file(path: str | Path, what: str | None = None) -> Any:
    """`torch.load(weights_only=True)` onto the CPU, memory-mapped when the format allows; one-line errors
    that name `what` (e.g. the config key and its value)."""
    path = Path(path)
    what = what or f"checkpoint {path}"
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise ConfigError(f"{what} does not exist") from err
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in str(err) or "weights_only" in str(err):
            reason = "it holds objects other than tensors and plain data (refused: loading it could run code)"
        else:
            reason = f"it is not a readable checkpoint ({reason.split('. ')[0]})"
        raise ConfigError(f"cannot read {what}: {reason}") from err


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary checkpoint files a crashed write left behind (they can fill a disk); return them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f".*{TEMP_MARK}*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d stale temporary checkpoint file(s) in %s", len(stale), folder)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint writes a crash cannot half-finish (a temporary file renamed over the target) and loads that
    never run code (weights_only). A failed write (a full disk) removes its temporary file and says which
    checkpoint is still the last good one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)
        except OSError as err:
            written = [p for p in path.parent.glob("*.ckpt") if p.is_file()]
            good = max(written, key=lambda p: p.stat().st_mtime) if written else None
            kept = f"the last good checkpoint {good} is kept" if good else "no earlier checkpoint exists"
            raise ConfigError(f"cannot write checkpoint {path}: {err.strerror or err}; {kept}") from err

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_training_checkpoint(path)


def read_training_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint a run can resume from (weights_only, memory-mapped), checked before any training work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} does not exist: give the path of a .ckpt file to resume")
    what = f"{key} ({path})" if "=" in key else f"{key}={str(path)!r}"
    checkpoint = load_torch_file(path, what)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise ConfigError(
            f"{key}={str(path)!r} is not a training checkpoint of this project (no state_dict/global_step)"
        )
    return checkpoint
