"""The run folder: refused when it already holds a run (unless resuming or overwriting), touched only after the
checks pass, and given its config, its log file and its results.json even when the run fails."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightning_llm.checkpoints import remove_stale_temporaries
from lightning_llm.conf import CONFIG_DIR
from lightning_llm.errors import ConfigError, user_error_in
from lightning_llm.log import DropNoise
from lightning_llm.recipe.context import hydra_info
from lightning_llm.recipe.results import write_json_atomic

#: What marks a folder as holding a run (anything else, e.g. an empty folder Hydra made, does not).
RUN_FILES = ("results.json", "provenance.json", "checkpoints", "csv", ".hydra", "train.log")
#: Everything a run writes in its folder (README "What a run writes"): what overwrite=true removes.
RUN_OUTPUTS = (*RUN_FILES, "report.md", "report.html", "samples.txt")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def holds_a_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def remove_if_empty(folder: Path) -> None:
    """A folder the failed start created (Hydra makes it before our checks) is removed if nothing is in it."""
    with contextlib.suppress(OSError):
        folder.rmdir()  # only an empty folder can be removed: nothing is ever lost here


def claim_folder(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds a run unless this run resumes it (resume=auto, ckpt_path) or overwrite=true,
    which removes the old run's outputs (its checkpoints, log and curves would otherwise mix with the new run's);
    other files in the folder stay."""
    if not holds_a_run(folder) or resume:
        return
    if not overwrite:
        raise ConfigError(
            f"the run folder {folder} already holds a run: continue it with resume=auto, choose another "
            "hydra.run.dir, or replace it with overwrite=true"
        )
    for name in RUN_OUTPUTS:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_composed_config(cfg: DictConfig, folder: Path) -> Path:
    """`.hydra/config.yaml` (the task config plus our Hydra settings, so a rerun from it writes under logs/),
    `overrides.yaml`; a resumed run keeps the first part's files and adds `.hydra/resume-<n>/`."""
    target = folder / ".hydra"
    if (target / "config.yaml").exists():
        n = 1 + sum(1 for p in target.glob("resume-*") if p.is_dir())
        target = target / f"resume-{n}"
    target.mkdir(parents=True, exist_ok=True)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    hydra_settings = OmegaConf.load(CONFIG_DIR / "hydra" / "default.yaml")
    defaults = ["_self_", {"override hydra/job_logging": "stdout"}]
    rerun = OmegaConf.merge({"defaults": defaults}, task, {"hydra": hydra_settings})
    OmegaConf.save(rerun, target / "config.yaml")
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    OmegaConf.save(OmegaConf.create(overrides), target / "overrides.yaml")
    return target


def log_to_file(folder: Path) -> logging.Handler:
    """Everything logged (ours, Lightning's) also goes to `<run>/train.log`, appended on a resume."""
    handler = logging.FileHandler(folder / "train.log", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(DropNoise())
    logging.getLogger().addHandler(handler)
    return handler


def prepare(cfg: DictConfig, folder: Path, resuming: bool) -> logging.Handler:
    """Claim the folder, then write its config, start its log file and clear crashed writes' temporary files."""
    claim_folder(folder, resuming, bool(cfg.get("overwrite")))
    folder.mkdir(parents=True, exist_ok=True)
    write_composed_config(cfg, folder)
    remove_stale_temporaries(folder / "checkpoints")
    return log_to_file(folder)


def record_failure(cfg: DictConfig, err: BaseException) -> None:
    """Write a failed trial's results.json (status, error) so the sweep summary reports it."""
    message = error_line(err)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / "results.json").exists():  # the recipe writes one itself once the checks have passed
        write_json_atomic(output_dir / "results.json", {"status": "failed", "error": message, **hydra_info()})
    print(f"trial failed ({output_dir}): {message}", file=sys.stderr)


def error_line(err: BaseException) -> str:
    """`Type: first line` of the user-facing error behind `err` (or of `err`)."""
    err = user_error_in(err) or err
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
