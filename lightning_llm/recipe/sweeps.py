"""Sweep support: a Hydra callback that writes a summary table when a multirun ends (conf/hydra)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lightning_llm.report import report_quietly, write_sweep_report


def sweep_rows(sweep_dir: Path, metric: str) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: job number, overrides, status, the optimized metric, the error."""
    rows = []
    for results_file in sorted(
        sweep_dir.glob("*/results.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    ):
        results = json.loads(results_file.read_text())
        rows.append(
            {
                "job": results_file.parent.name,
                "overrides": " ".join(results.get("overrides", [])),
                "status": results.get("status", "unknown"),
                metric: results.get("metrics", {}).get(metric),
                "error": results.get("error", ""),
            }
        )
    return rows


class SweepSummary(Callback):
    """On multirun end: `summary.csv` and `summary.md` in the sweep folder (overrides, metric, status).

    On multirun start it creates `paths.log_dir`, where a sweeper's database (Optuna's SQLite) lives.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.paths.log_dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        metric = config.get("optimized_metric") or "val/loss"
        rows = sweep_rows(sweep_dir, metric)
        if not rows:
            return
        with (sweep_dir / "summary.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        lines = [f"| job | overrides | status | {metric} | error |", "|---|---|---|---|---|"]
        lines += [f"| {r['job']} | {r['overrides']} | {r['status']} | {r[metric]} | {r['error']} |" for r in rows]
        (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
        report_quietly(write_sweep_report, sweep_dir, metric=metric)
        failed = sum(r["status"] != "completed" for r in rows)
        print(f"sweep: {len(rows)} jobs, {failed} failed; summary in {sweep_dir / 'summary.md'}, report.html")
