"""What a run reports: one typed object that grows stage by stage and is written once, atomically."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lightning_llm.files import write_json_atomic


def earlier_parts(previous: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run's earlier parts took, from their results.json (summed over all of them): fit and wall
    seconds, steps reached. This part's own tokens/s, fit and wall seconds stand at the top level."""
    before = previous.get("resumed", {}).get("earlier", {})
    return {
        "fit_seconds": round(before.get("fit_seconds", 0.0) + (previous.get("fit_seconds") or 0.0), 2),
        "wall_seconds": round(before.get("wall_seconds", 0.0) + (previous.get("wall_seconds") or 0.0), 2),
        "steps": previous.get("steps"),
        "parts": before.get("parts", 0) + 1,
    }


@dataclass
class RunResults:
    """results.json: status, what was run, data and model facts, metrics, evaluation, timing, outputs."""

    status: str = "running"  # running | completed | partial | interrupted | diverged | failed
    choices: dict[str, Any] = field(default_factory=dict)  # the config group options
    overrides: list[str] = field(default_factory=list)
    seed: int | None = None
    output_dir: str | None = None
    threads: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    tokenizer: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    val_start: dict[str, float] | None = None  # validation before the first step
    metrics: dict[str, float] = field(default_factory=dict)  # train/ and val/ scalars at the end
    forgetting: dict[str, Any] | None = None
    start_point: dict[str, str] | None = None  # before-fit numbers an earlier run measured: kind -> its cache file
    eval: dict[str, Any] | None = None
    startup_seconds: float | None = None  # from the process start (train.py) to the first training step
    fit_seconds: float | None = None
    tokens_per_s: float | None = None
    steps: int | None = None
    tokens: int | None = None
    wall_seconds: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, str] | None = None
    replicas_in_sync: bool | None = None
    compute: dict[str, Any] | None = None  # FLOPs, MFU, energy, CO2, cost (ComputeMonitor), with definitions
    stability: dict[str, Any] | None = None  # loss spikes (LossSpikeMonitor)
    privacy: dict[str, Any] | None = None  # DP-SGD: epsilon spent, delta, noise, clipping, sampling (privacy=dp)
    estimate: dict[str, Any] | None = None  # estimate=true: memory per device, FLOPs, time, cost
    resumed: dict[str, Any] | None = None  # a resumed run: the step it continued from, its earlier parts' totals
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As results.json holds it: unset (None) entries left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def write(self, output_dir: Path) -> Path:
        path = Path(output_dir) / "results.json"
        write_json_atomic(path, self.to_dict())
        return path
