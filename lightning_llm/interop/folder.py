"""Reading a Hugging Face model folder: find it (local or hub), its config.json, and its weight files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from lightning_llm.errors import ConfigError
from lightning_llm.hub import hub_offline, hub_reachable

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What a model import needs from a hub repository (weights in one format: safetensors, else .bin).
HUB_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "tokenizer.model",
    "vocab.txt",
]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def resolve_folder(path: str | os.PathLike) -> Path:
    """The local folder behind `path`: the folder itself, or a hub id downloaded (or found in the hub cache)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    text = str(path)
    if folder.exists():
        raise ConfigError(f"{text} is a file: pass the folder that holds config.json and the weights")
    if not _HUB_ID.fullmatch(text) or text.startswith(".") or text.endswith("/"):
        raise ConfigError(f"model folder {text} does not exist")
    return _from_hub(text)


def _from_hub(repo_id: str) -> Path:
    """Download what an import needs from the Hugging Face Hub (or take it from the local hub cache)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise ConfigError(
            f"{repo_id!r} is not a local folder, and downloading it needs huggingface_hub: pip install huggingface_hub"
        ) from err

    def download(local_only: bool) -> Path:
        folder = Path(
            snapshot_download(repo_id, allow_patterns=[*HUB_FILES, "*.safetensors*"], local_files_only=local_only)
        )
        if not any((folder / name).is_file() for name in WEIGHT_FILES[:2]):
            patterns = [*HUB_FILES, "pytorch_model*.bin*"]
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=local_only))
        return folder

    try:
        return download(local_only=True)
    except Exception:  # not cached (huggingface_hub raises several types): go online if allowed
        pass
    if hub_offline(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        raise ConfigError(
            f"{repo_id!r} is not a local folder and not in the hub cache, and HF_HUB_OFFLINE=1: "
            "download it where the hub is reachable, or pass a local folder"
        )
    if not hub_reachable():
        raise ConfigError(
            f"{repo_id!r} is not a local folder, and the Hugging Face Hub is unreachable from here: "
            "pass a local folder with config.json and model.safetensors"
        )
    try:
        return download(local_only=False)
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"cannot download {repo_id!r} from the Hugging Face Hub: {type(err).__name__}: {first_line}"
        ) from err


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return config


class TensorSource:
    """The tensors of a checkpoint folder (safetensors or PyTorch .bin, single file or sharded), read on demand."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        name = next((n for n in WEIGHT_FILES if (folder / n).is_file()), None)
        if name is None:
            raise ConfigError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
        self.files: list[str] = []
        self._where: dict[str, str] = {}  # tensor name -> file
        self._open: dict[str, Any] = {}  # file -> safe_open handle or loaded state dict
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads((folder / name).read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as err:
                raise ConfigError(f"{folder / name} is not a valid shard index: {err}") from err
            self._where = dict(weight_map)
            self.files = sorted(set(weight_map.values()))
            missing = [f for f in self.files if not (folder / f).is_file()]
            if missing:
                raise ConfigError(f"{folder / name} names missing shard files: {', '.join(missing)}")
        else:
            self.files = [name]
            self._where = dict.fromkeys(self._handle(name).keys(), name)

    def _handle(self, file: str) -> Any:
        if file not in self._open:
            path = self.folder / file
            try:
                if file.endswith(".safetensors"):
                    self._open[file] = safe_open(str(path), framework="pt")
                else:
                    self._open[file] = _load_bin(path)
            except ConfigError:
                raise
            except Exception as err:
                raise ConfigError(f"cannot read {path}: {type(err).__name__}: {err}") from err
        return self._open[file]

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, key: str) -> torch.Tensor:
        handle = self._handle(self._where[key])
        return handle.get_tensor(key) if hasattr(handle, "get_tensor") else handle[key]


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ConfigError(f"{path} does not hold a state dict")
    return state
