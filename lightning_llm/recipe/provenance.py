"""What a run folder records so any result can be reproduced from the folder alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "datasets",
    "sentencepiece",
    "wandb",
    "bitsandbytes",
    "transformers",
    "optuna",
    "lightning-llm",
)


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The commit and whether the working tree differs from it (None outside a git checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware() -> dict[str, Any]:
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "gpus": gpus,
        "python": sys.version.split()[0],
    }


def provenance(output_dir: Path, seed: int, overrides: list[str]) -> dict[str, Any]:
    """Git state, package versions, hardware, seed, the command and how to rerun it from `output_dir`."""
    return {
        "git": git_state(),
        "packages": package_versions(),
        "hardware": hardware(),
        "seed": seed,
        "command": " ".join(sys.argv),
        "overrides": overrides,
        "rerun": f"python train.py --config-path {(output_dir / '.hydra').resolve()} --config-name config",
    }
