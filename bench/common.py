"""Shared pieces: composing the real config, timing statistics, result rows and the table."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "conf"


def run_in_fresh_process(module: str, *args: str) -> dict[str, Any]:
    """`python -m <module> <args>` in a fresh interpreter (its own peak memory): the JSON object its last stdout
    line prints; a failure raises with the end of its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose conf/train.yaml as `python train.py OVERRIDES` would (without Hydra's run folder)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def build_model(model_cfg: DictConfig, **overrides: Any) -> nn.Module:
    """The configured model class built from the keys of `model_cfg` that are ModelConfig fields.

    Keys that are not model shape (such as `pretrained`) are left out: the benchmarks always start fresh.
    """
    from lightning_llm.models import ModelConfig  # torch loads only when a model is built

    known = {f.name for f in fields(ModelConfig)}
    kwargs = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k in known}
    return get_class(model_cfg._target_)(**{**kwargs, **overrides})


Stamp = tuple[float, float, float]  # wall clock, CPU seconds busy on the whole machine, CPU seconds of this process
BUSY_CORES = 0.35  # a sample during which other processes used this many cores more than we leave free is "busy"
MIN_CLEAN = 5  # statistics use only the quiet samples when at least this many are quiet
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


_spare_cores = 0  # cores this process' threads leave free: others may use them without slowing it


def set_threads(threads: int) -> int:
    """Record how many threads the benchmark runs, so that `Sample.quiet` allows others the cores left free."""
    global _spare_cores
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _spare_cores = max(0, cores - threads)
    return _spare_cores


def busy_threshold() -> float:
    """Cores other processes may use, on average, during a quiet sample."""
    return _spare_cores + BUSY_CORES


def stamp() -> Stamp:
    """Now: the wall clock, the machine's busy CPU time (/proc/stat; NaN elsewhere) and this process' CPU time."""
    wall = time.perf_counter()
    own = sum(os.times()[:2])
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        busy = (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        busy = math.nan
    return wall, busy, own


@dataclass(frozen=True)
class Sample:
    """One timed step: its wall time and how many cores other processes used, on average, meanwhile."""

    seconds: float
    others: float

    @property
    def quiet(self) -> bool:
        return not self.others > busy_threshold()  # NaN (no /proc/stat) counts as quiet


def span(a: Stamp, b: Stamp) -> Sample:
    """The sample between two stamps."""
    wall = b[0] - a[0]
    others = ((b[1] - a[1]) - (b[2] - a[2])) / wall if wall > 0 else 0.0
    return Sample(wall, max(0.0, others) if others == others else others)


def select_times(samples: list[Sample], quiet_only: bool) -> list[float]:
    """The quiet samples' times (when asked and there are any), else all."""
    quiet = [s.seconds for s in samples if s.quiet]
    return quiet if quiet_only and quiet else [s.seconds for s in samples]


@dataclass
class Row:
    """One measured variant: its timed steps and how it compares to its group's reference."""

    group: str
    variant: str
    samples: list[Sample]
    tokens_per_step: int
    reference: bool = False
    note: str = ""
    paired: float | None = None  # median of per-step (or per-round) time ratios against the reference
    ratio: float | None = field(default=None, init=False)
    quiet_only: bool | None = field(default=None, init=False)  # decided for the whole group by `settle`

    @property
    def times(self) -> list[float]:
        """The step times the statistics use: the quiet ones if its group has enough of them, else all."""
        quiet_only = self.quiet >= MIN_CLEAN if self.quiet_only is None else self.quiet_only
        return select_times(self.samples, quiet_only)

    @property
    def quiet(self) -> int:
        return sum(s.quiet for s in self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> tuple[float, float]:
        """25th and 75th percentiles (the same value twice with fewer than two samples)."""
        if len(self.times) < 2:
            return self.median, self.median
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.median


def quiet_enough(rows: list[Row]) -> bool:
    """Whether every row has MIN_CLEAN quiet samples, so that all of them can use only those."""
    return all(r.quiet >= MIN_CLEAN for r in rows)


def settle(rows: list[Row]) -> None:
    """Per group: quiet samples only (when every row has enough) or all; then each row's median time divided by
    the median of its group's reference row."""
    for group in {r.group for r in rows}:
        members = [r for r in rows if r.group == group]
        for r in members:
            r.quiet_only = quiet_enough(members)
    refs = {r.group: r.median for r in rows if r.reference}
    for r in rows:
        r.ratio = r.median / refs[r.group] if r.group in refs else None


def paired_ratio(samples: list[Sample], reference: list[Sample]) -> float:
    """Median of the time ratios of paired samples (both quiet, when MIN_CLEAN such pairs exist): robust to load
    that changes between pairs, not within them."""
    pairs = list(zip(samples, reference, strict=True))
    quiet = [(s, r) for s, r in pairs if s.quiet and r.quiet]
    return statistics.median(s.seconds / r.seconds for s, r in (quiet if len(quiet) >= MIN_CLEAN else pairs))


def table(rows: list[Row]) -> str:
    """A markdown table (readable as plain text too)."""
    header = (
        "| benchmark | variant | quiet/steps | ms/step (median) | IQR (ms) | tokens/s | time / reference "
        "| paired ratio |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for r in rows:
        lo, hi = r.iqr
        ratio = "reference" if r.reference else (f"{r.ratio:.3f}x" if r.ratio is not None else "")
        paired = f"{r.paired:.3f}x" if r.paired is not None else ""
        variant = f"{r.variant} ({r.note})" if r.note else r.variant
        lines.append(
            f"| {r.group} | {variant} | {r.quiet}/{len(r.samples)} | {r.median * 1e3:.1f} "
            f"| {lo * 1e3:.1f}-{hi * 1e3:.1f} | {r.tokens_per_s:,.0f} | {ratio} | {paired} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    import lightning
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process",
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def load_average() -> str:
    """1/5/15-minute load average: a hint of how busy the shared CPU was."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@contextlib.contextmanager
def git_checkout(revision: str) -> Iterator[Path]:
    """An earlier version of this repository (`revision`) in a temporary git worktree, removed afterwards; run it
    with this environment to compare a whole run against the version it replaced."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkout"
        subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield folder
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)
