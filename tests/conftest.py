"""Compose the real configs with Hydra's compose API, shrink them, and run what the CLI runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "conf"

# A model and data small enough that a few steps take a second or two on 2 CPU cores.
TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.block_size=32",
    "data=pydoc_topics",
    "data.batch_size=8",
    "tokenizer.vocab_size=512",
    "trainer.max_steps=100",
    "trainer.val_check_interval=25",
    "trainer.limit_val_batches=4",
    "trainer.enable_model_summary=false",
    "scheduler.warmup_steps=5",
    "optimizer.lr=1e-2",
    "~callbacks.rich_progress_bar",
    "num_threads=1",
    "callbacks.compute.track_energy=false",  # CodeCarbon takes ~1.5 s to start; tests/test_compute.py covers it
]


@pytest.fixture(scope="session", autouse=True)
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    os.environ["HF_HOME"] = str(home)
    return home


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The per-user cache (conf/paths) of every run that does not set paths.cache_dir: never the real one."""
    cache = tmp_path_factory.mktemp("user_cache")
    os.environ["LIGHTNING_LLM_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test session: the tokenizer and tokenized data are built once and shared."""
    return tmp_path_factory.mktemp("cache")


def compose_config(overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    """Compose conf/train.yaml with `overrides` as `python train.py` would, outputs under `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path, cache_dir: Path) -> Callable[..., DictConfig]:
    """`make_cfg(*overrides, tiny=True)`: a composed config, shrunk to TINY unless told otherwise."""

    def make(*overrides: str, tiny: bool = True, output_dir: Path | None = None) -> DictConfig:
        return compose_config([*(TINY if tiny else []), *overrides], output_dir or tmp_path / "run", cache_dir)

    return make


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    """Run `python train.py ARGS` in a subprocess (for process-boundary tests: exit codes, stderr)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def base_checkpoints(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """A tiny pretrained checkpoint per family (30 steps on the pydoc topics), for fine-tuning tests."""
    from lightning_llm.recipe import train

    out = {}
    for family, objective in {"gpt": "clm", "bert": "mlm", "t5": "span"}.items():
        run = tmp_path_factory.mktemp(f"base-{family}")
        overrides = [*TINY, f"model={family}", f"objective={objective}", "trainer.max_steps=30", "~callbacks.sample"]
        train(compose_config(overrides, run, cache_dir))
        out[family] = run / "checkpoints" / "last.ckpt"
    return out


def straight_and_resumed_losses(args: list[str], tmp_path: Path, cache_dir: Path) -> tuple[dict, dict]:
    """Train losses per step (as logged strings) of a 30-step run and of one stopped at 20 and resumed to 30."""
    from lightning_llm.recipe import train

    train(compose_config([*args, "trainer.max_steps=30"], tmp_path / "straight", cache_dir))
    train(compose_config([*args, "trainer.max_steps=20"], tmp_path / "resumed", cache_dir))
    train(compose_config([*args, "trainer.max_steps=30", "resume=auto"], tmp_path / "resumed", cache_dir))

    def losses(run: Path) -> dict[int, str]:
        rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
        return {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}

    return losses(tmp_path / "straight"), losses(tmp_path / "resumed")
