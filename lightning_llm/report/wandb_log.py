"""Eval results into the active Weights & Biases run (only when the process already imported wandb)."""

from __future__ import annotations

import sys
from typing import Any

COLUMNS = ["task", "metric", "value", "status"]


def eval_rows(evaluation: dict[str, Any]) -> list[list[Any]]:
    """(task, metric, value, status) per task metric; a task without metrics gives one row with its status."""
    rows = []
    for name, task in (evaluation.get("tasks") or {}).items():
        metrics = task.get("metrics") or {}
        status = task.get("status")
        rows += [[name, metric, value, status] for metric, value in metrics.items()] or [[name, None, None, status]]
    return rows


def summary_scalars(evaluation: dict[str, Any]) -> dict[str, float]:
    """The suite summary as `eval/summary/...` numbers: the average and each task's value and normalised score."""
    summary = evaluation.get("summary") or {}
    scalars = {"eval/summary/average": summary.get("average")}
    for task, score in (summary.get("scores") or {}).items():
        scalars.update({f"eval/summary/{task}/{k}": score.get(k) for k in ("value", "normalized")})
    return {k: float(v) for k, v in scalars.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_to_wandb(results: dict[str, Any]) -> bool:
    """Log a run's eval results as a `wandb.Table` and its suite summary as scalars to the active wandb run;
    returns whether anything was logged (False when wandb is not imported, no run is active, or no eval ran)."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None)
    evaluation = results.get("eval")
    if run is None or not evaluation:
        return False
    table = wandb.Table(columns=COLUMNS, data=eval_rows(evaluation))
    scalars = summary_scalars(evaluation)
    run.log({"eval/results": table, **scalars})
    run.summary.update(scalars)
    return True
