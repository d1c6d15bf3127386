"""Read what a run or sweep folder holds (plain files only: results.json, metrics.csv, provenance, .hydra/)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_llm.errors import ConfigError

#: Files whose presence marks a folder as a run (a failed start may leave only .hydra/).
RUN_MARKERS = ("results.json", "provenance.json", ".hydra/config.yaml", "csv/metrics.csv")
#: Config keys that differ between any two runs without being a choice (ignored when comparing configs).
IGNORED_CONFIG_KEYS = ("hydra", "defaults", "paths.output_dir")

Series = list[tuple[float, float]]


@dataclass
class Run:
    """One run folder's files, each empty when missing."""

    path: Path
    results: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    columns: dict[str, Series] = field(default_factory=dict)  # metrics.csv: column -> [(step, value)]
    label: str = ""

    def series(self, column: str) -> Series:
        return self.columns.get(column, [])

    def val_loss_curve(self, metric: str = "val/loss") -> Series:
        """`metric` against steps, starting with the validation before fit (step 0) when recorded."""
        start = (self.results.get("val_start") or {}).get(metric)
        curve = self.series(metric)
        if start is not None and not any(step == 0 for step, _ in curve):
            curve = [(0.0, float(start)), *curve]
        return curve

    def tokens_at(self, steps: list[float]) -> list[float] | None:
        """Tokens seen at each step, interpolated from the `train/tokens` column (None without it)."""
        known = sorted(self.series("train/tokens"))
        if not known:
            return None
        import numpy as np

        xs, ys = [0.0, *(s for s, _ in known)], [0.0, *(t for _, t in known)]
        return [float(v) for v in np.interp(steps, xs, ys)]


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}): the run wrote it partly; rerun or remove it") from err
    return data if isinstance(data, dict) else {}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def read_metrics_csv(path: Path) -> dict[str, Series]:
    """Lightning's CSVLogger file as column -> [(step, value)], skipping empty and non-numeric cells."""
    columns: dict[str, Series] = {}
    if not path.is_file():
        return columns
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for name, cell in row.items():
                if name in ("step", "epoch") or not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if not math.isnan(step):
                    columns.setdefault(name, []).append((step, value))
    return columns


def is_run(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in RUN_MARKERS)


def job_folders(folder: Path) -> list[Path]:
    """A sweep's numbered job folders that hold a run, in job order."""
    jobs = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and is_run(p)] if folder.is_dir() else []
    return sorted(jobs, key=lambda p: int(p.name))


def is_sweep(folder: Path) -> bool:
    return (folder / "summary.csv").is_file() or bool(job_folders(folder))


def load_run(folder: Path, label: str | None = None) -> Run:
    """Everything a run folder holds that a report shows."""
    folder = Path(folder)
    results = _json(folder / "results.json")
    overrides = results.get("overrides")
    if overrides is None:
        overrides = _yaml(folder / ".hydra" / "overrides.yaml") or []
    config = _yaml(folder / ".hydra" / "config.yaml")
    return Run(
        path=folder,
        results=results,
        provenance=_json(folder / "provenance.json"),
        config=config if isinstance(config, dict) else {},
        overrides=[str(o) for o in overrides],
        columns=read_metrics_csv(folder / "csv" / "metrics.csv"),
        label=label or folder.name,
    )


def load_sweep(folder: Path) -> list[Run]:
    """The sweep's runs, labelled by job number."""
    return [load_run(job, label=job.name) for job in job_folders(Path(folder))]


def check_folder(folder: Path, verb: str = "report") -> str:
    """'run' or 'sweep', or a ConfigError naming the folder and the fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: pass a run folder (logs/runs/...) or a sweep folder to {verb}")
    if is_run(folder):
        return "run"
    if is_sweep(folder):
        return "sweep"
    raise ConfigError(
        f"{folder} is neither a run (no results.json, provenance.json or .hydra/config.yaml) nor a sweep (no "
        f"summary.csv or numbered job folders): pass a folder under logs/runs/ or logs/multiruns/ to {verb}"
    )


def parse_override(override: str) -> tuple[str, str] | None:
    """`key=value` (also `+key=`, `++key=`) as (key, value); deletions (`~key`) and other forms give None."""
    if override.startswith("~") or "=" not in override:
        return None
    key, value = override.split("=", 1)
    return key.lstrip("+"), value


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (lists stay values), without the keys no comparison should show."""
    flat: dict[str, Any] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            dotted = f"{prefix}{key}"
            if any(dotted == k or dotted.startswith(f"{k}.") for k in IGNORED_CONFIG_KEYS):
                continue
            if isinstance(value, dict) and value:
                flat.update(flatten(value, f"{dotted}."))
            else:
                flat[dotted] = value
    return flat
