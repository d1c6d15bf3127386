"""The run folder: refused when it already holds a run (unless resuming or overwriting), touched only after the
checks pass, and given its config, its log file and its results.json even when the run fails."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightning_llm.checkpoints import remove_stale_temporaries
from lightning_llm.conf import CONFIG_DIR
from lightning_llm.errors import ConfigError, user_error_in
from lightning_llm.files import write_bytes_atomic, write_json_atomic
from lightning_llm.log import DropNoise
from lightning_llm.recipe.context import hydra_info

#: Files a run writes in its folder (README "What a run writes"): what overwrite=true, or a new run in the folder of
#: a failed start, removes.
RUN_OUTPUTS = ("results.json", "provenance.json", "checkpoints", "csv", ".hydra", "train.log", "report.md",
               "report.html", "samples.txt")  # fmt: skip
#: A run's record: put back as it was when a resume attempt fails before its checkpoint is restored.
RECORD = ("results.json", "provenance.json", "report.md", "report.html", "samples.txt", "csv/metrics.csv")
#: One run at a time in a folder: the lock a run holds (an OS lock, released when its process ends however it ends)
LOCK_FILE = ".run.lock"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def previous_results(folder: Path) -> dict[str, Any]:
    """The folder's results.json, or {} when it has none (or an unreadable one)."""
    try:
        data = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def holds_a_run(folder: Path) -> bool:
    """Whether the folder holds a run worth keeping: a checkpoint, curves, or a record of a run that got further
    than a failed start. A start that failed before training (its results.json says failed at step 0) is not one:
    the next start in the folder replaces its files."""
    if any((folder / "checkpoints").glob("*.ckpt")) or (folder / "csv").is_dir():
        return True
    record = previous_results(folder)
    if not record:
        return (folder / "results.json").exists()  # unreadable: keep it
    return not (record.get("status") == "failed" and not record.get("steps"))


def remove_if_empty(folder: Path) -> None:
    """A folder the failed start created (Hydra makes it before our checks) is removed if nothing is in it."""
    with contextlib.suppress(OSError):
        folder.rmdir()  # only an empty folder can be removed: nothing is ever lost here


def lock_folder(folder: Path) -> FileLock:
    """Hold the folder's run lock for this run (two runs, or two `resume=auto`, in one folder at once would write
    one curve twice and two best checkpoints)."""
    lock = FileLock(str(folder / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise ConfigError(
            f"the run folder {folder} is in use by another run that is still going: wait for it to end, or choose "
            "another hydra.run.dir"
        ) from err
    return lock


def claim_folder(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds a run unless this run resumes it (resume=auto, ckpt_path) or overwrite=true,
    which removes the old run's outputs (its checkpoints, log and curves would otherwise mix with the new run's);
    other files in the folder stay. A failed start's files are replaced without asking."""
    if resume:
        return
    if holds_a_run(folder) and not overwrite:
        can_resume = (folder / "checkpoints" / "last.ckpt").is_file()
        fix = "continue it with resume=auto, " if can_resume else "it has no checkpoint to resume; "
        raise ConfigError(
            f"the run folder {folder} already holds a run: {fix}choose another hydra.run.dir, or replace it with "
            "overwrite=true"
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


@dataclass
class RunRecord:
    """A resumed run's record as it was before this part: a resume that fails before its checkpoint is restored
    (a checkpoint that does not fit the config, say) puts it back byte for byte and removes the config part it
    added, so the record still describes the run (its lines stay in train.log). A resume that restored and then
    failed or diverged is a part of the run: its record stands."""

    folder: Path
    saved: dict[str, bytes]

    @classmethod
    def of(cls, folder: Path) -> RunRecord:
        return cls(folder, {name: (folder / name).read_bytes() for name in RECORD if (folder / name).is_file()})

    def restore(self, part: Path) -> None:
        """Put the record back; `part` is this attempt's config folder."""
        for name in RECORD:
            if name not in self.saved:
                (self.folder / name).unlink(missing_ok=True)
        for name, data in self.saved.items():
            write_bytes_atomic(self.folder / name, data)
        if part.name.startswith("resume-"):
            shutil.rmtree(part, ignore_errors=True)


@dataclass
class RunFolder:
    """What `prepare` set up: the folder's lock, this part's config folder (`.hydra/` or `.hydra/resume-<n>/`)
    and the log file's handler; `release` undoes the lock and the handler."""

    lock: FileLock
    config_dir: Path
    handler: logging.Handler

    def release(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        self.lock.release()


def prepare(cfg: DictConfig, folder: Path, resuming: bool) -> RunFolder:
    """Lock the folder, claim it, then write its config, start its log file and clear crashed writes' temporary
    files."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(folder)
    try:
        claim_folder(folder, resuming, bool(cfg.get("overwrite")))
    except BaseException:
        lock.release()
        raise
    config_dir = write_composed_config(cfg, folder)
    remove_stale_temporaries(folder / "checkpoints")
    return RunFolder(lock, config_dir, log_to_file(folder))


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
